"""The InjectionPolicy schema: every rejection names the field by its path in the document."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.policy.model import KIND, InjectionPolicy, PolicyError, check_label_key, parse_policy
from tests.unit.builders import BUSYBOX, compiled, policy_doc

C = BUSYBOX


def _with(document: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {**document, **top}


@pytest.mark.parametrize(
    ("document", "path", "words"),
    [
        pytest.param(
            policy_doc(sidecars=[C], bogus=1), "spec.bogus", "unknown field", id="unknown-field-in-spec"
        ),
        pytest.param(
            policy_doc(sidecars=[{**C, "imagee": "busybox"}]),
            "spec.sidecars[0].imagee",
            "unknown field",
            id="unknown-field-in-container",
        ),
        pytest.param(
            _with(policy_doc(), status={}), "status", "unknown field", id="unknown-field-at-top-level"
        ),
        pytest.param(
            _with(policy_doc(), metadata={"name": "p", "namespace": "x"}),
            "metadata.namespace",
            "unknown field",
            id="unknown-field-in-metadata",
        ),
        pytest.param(
            policy_doc(ephemeral={"allowedImage": ["busybox"]}),
            "spec.ephemeral.allowedImage",
            "unknown field",
            id="unknown-field-in-ephemeral",
        ),
        pytest.param(
            policy_doc(sidecars=[C], namespaceSelector={"matchLabel": {"a": "b"}}),
            "spec.namespaceSelector.matchLabel",
            "unknown field",
            id="unknown-field-in-selector",
        ),
        pytest.param(
            policy_doc(sidecars=[{"name": "helper"}]), "spec.sidecars[0].image", "required", id="no-image"
        ),
        pytest.param(
            policy_doc(containers=[{"name": "helper", "image": ""}]),
            "spec.containers[0].image",
            "at least 1",
            id="empty-image",
        ),
        pytest.param(
            policy_doc(sidecars=[{"name": "helper", "image": 5}]),
            "spec.sidecars[0].image",
            "string",
            id="image-not-a-string",
        ),
        pytest.param(policy_doc("Bad_Name"), "metadata.name", "DNS-1123", id="bad-policy-name"),
        pytest.param(
            policy_doc(initContainers=[{"name": "Init!", "image": "busybox"}]),
            "spec.initContainers[0].name",
            "DNS-1123",
            id="bad-container-name",
        ),
        pytest.param(
            policy_doc(volumes=[{"name": "Data_1", "emptyDir": {}}]),
            "spec.volumes[0].name",
            "DNS-1123",
            id="bad-volume-name",
        ),
        pytest.param(
            policy_doc(
                sidecars=[C], match={"labels": {"matchExpressions": [{"key": "a", "operator": "In"}]}}
            ),
            "spec.match.labels.matchExpressions[0]",
            "needs at least one value",
            id="in-without-values",
        ),
        pytest.param(
            policy_doc(
                sidecars=[C],
                match={"labels": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
            ),
            "spec.match.labels.matchExpressions[0]",
            "takes no values",
            id="exists-with-values",
        ),
        pytest.param(
            policy_doc(
                sidecars=[C], match={"labels": {"matchExpressions": [{"key": "a", "operator": "Has"}]}}
            ),
            "spec.match.labels.matchExpressions[0].operator",
            "'In', 'NotIn', 'Exists' or 'DoesNotExist'",
            id="unknown-operator",
        ),
        pytest.param(
            policy_doc(volumes=[{"name": "data"}]),
            "spec.volumes[0]",
            "exactly one source",
            id="volume-without-source",
        ),
        pytest.param(
            policy_doc(volumes=[{"name": "data", "emptyDir": {}, "configMap": {"name": "x"}}]),
            "spec.volumes[0]",
            "exactly one source",
            id="volume-with-two-sources",
        ),
        pytest.param(
            policy_doc(sidecars=[{**C, "restartPolicy": "Always"}]),
            "spec",
            "sidecar 'helper': leave restartPolicy out",
            id="restart-policy-on-sidecar",
        ),
        pytest.param(
            policy_doc(initContainers=[{**C, "restartPolicy": "Always"}]),
            "spec",
            "put it under spec.sidecars",
            id="restart-policy-on-init-container",
        ),
        pytest.param(
            policy_doc(sidecars=[C], containers=[C]),
            "spec",
            "container names must be unique within a policy: helper",
            id="duplicate-container-names",
        ),
        pytest.param(
            policy_doc(volumes=[{"name": "d", "emptyDir": {}}, {"name": "d", "emptyDir": {}}]),
            "spec",
            "volume names must be unique",
            id="duplicate-volume-names",
        ),
        pytest.param(
            policy_doc(match={"annotations": {"a": "b"}}, required=True),
            "spec",
            "injects nothing",
            id="injects-nothing",
        ),
        pytest.param(
            _with(policy_doc(), apiVersion="podgraft.io/v1"),
            "apiVersion",
            "podgraft.io/v1alpha1",
            id="wrong-api-version",
        ),
        pytest.param(_with(policy_doc(), kind="Pod"), "kind", "InjectionPolicy", id="wrong-kind"),
        pytest.param(
            policy_doc(labels={"team": "not valid!"}),
            "spec.labels",
            "not a valid label value",
            id="label-value-invalid",
        ),
        pytest.param(
            policy_doc(labels={"team": "x" * 64}),
            "spec.labels",
            "not a valid label value",
            id="label-value-too-long",
        ),
        pytest.param(policy_doc(labels={"-team": "a"}), "spec.labels", "key '-team'", id="label-key-invalid"),
        pytest.param(
            policy_doc(annotations={"a/b/c": "x"}),
            "spec.annotations",
            "prefix",
            id="annotation-key-prefix-invalid",
        ),
        pytest.param(policy_doc(labels={"team": 1}), "spec.labels.team", "string", id="label-value-number"),
        pytest.param(
            policy_doc(env=[{"name": "1 bad", "value": "x"}]),
            "spec.env[0].name",
            "env name",
            id="bad-env-name",
        ),
        pytest.param(
            policy_doc(volumeMounts=[{"name": "data", "mountPath": "relative"}]),
            "spec.volumeMounts[0].mountPath",
            "absolute",
            id="relative-mount-path",
        ),
        pytest.param(
            policy_doc(sidecars=[{**C, "ports": [{"containerPort": 70000}]}]),
            "spec.sidecars[0].ports[0].containerPort",
            "65535",
            id="port-out-of-range",
        ),
        pytest.param(
            policy_doc(sidecars=[C], sidecarMode="sometimes"),
            "spec.sidecarMode",
            "native",
            id="bad-sidecar-mode",
        ),
        pytest.param(
            policy_doc(initContainers=[C], initContainerPosition="middle"),
            "spec.initContainerPosition",
            "first",
            id="bad-init-position",
        ),
        pytest.param(
            policy_doc(sidecars=[C], podVolumes=["Data"]), "spec.podVolumes", "DNS-1123", id="pod-volume-name"
        ),
        pytest.param(
            policy_doc(sidecars=[C], podVolumes=["data", "data"]),
            "spec.podVolumes",
            "unique",
            id="pod-volume-twice",
        ),
        pytest.param(
            policy_doc(sidecars=[C], podVolumes="data"),
            "spec.podVolumes",
            "list",
            id="pod-volumes-not-a-list",
        ),
        pytest.param(
            policy_doc(sidecars=[C], volumes=[{"name": "data", "emptyDir": {}}], podVolumes=["data"]),
            "spec",
            "volume data is both the policy's own (spec.volumes) and the pod's (spec.podVolumes)",
            id="pod-volume-also-own",
        ),
    ],
)
def test_rejection_names_the_field(document: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    message = str(caught.value)
    assert f"{path}: " in message, message
    assert words in message, message
    name = document["metadata"]["name"]
    assert message.startswith(f"policy {name!r}: "), message


def test_every_problem_is_reported_on_its_own_line_part() -> None:
    document = policy_doc(sidecars=[{"name": "helper"}], bogus=True)
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    parts = str(caught.value).removeprefix("policy 'p': ").split("; ")
    assert sorted(parts) == ["spec.bogus: unknown field", "spec.sidecars[0].image: Field required"]


@pytest.mark.parametrize(
    ("document", "words"),
    [
        pytest.param([1, 2], "got a list", id="list"),
        pytest.param("text", "got a string", id="string"),
        pytest.param(None, "got null", id="null"),
    ],
)
def test_non_mapping_document_is_refused(document: object, words: str) -> None:
    with pytest.raises(PolicyError, match=words):
        parse_policy(document)


def test_missing_metadata_names_the_field_without_a_policy_name() -> None:
    document = policy_doc()
    del document["metadata"]
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    assert str(caught.value) == "metadata: Field required"


def test_labels_shorthand_equals_match_labels() -> None:
    short = parse_policy(policy_doc(sidecars=[C], match={"labels": {"app": "web"}}))
    full = parse_policy(policy_doc(sidecars=[C], match={"labels": {"matchLabels": {"app": "web"}}}))
    assert short.spec.match == full.spec.match
    assert short.spec.match is not None
    assert short.spec.match.labels.match_labels == {"app": "web"}
    assert short.spec.match.labels.match_expressions == []


def test_templated_label_value_is_checked_after_rendering_not_at_load() -> None:
    policy = parse_policy(policy_doc(labels={"app": "{{ pod.labels.app }}"}))
    assert policy.spec.labels == {"app": "{{ pod.labels.app }}"}


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"initContainers": [C]}, id="init-container"),
        pytest.param({"volumes": [{"name": "data", "emptyDir": {}}]}, id="volume"),
        pytest.param({"env": [{"name": "X", "value": "1"}]}, id="env"),
        pytest.param({"annotations": {"example.com/a": "1"}}, id="annotation"),
        pytest.param({"labels": {"a": "1"}}, id="label"),
        pytest.param({"imagePullSecrets": [{"name": "creds"}]}, id="pull-secret"),
        pytest.param({"ephemeral": {"allowedImages": ["busybox:*"]}}, id="ephemeral-only"),
    ],
)
def test_one_injection_is_enough(spec: dict[str, Any]) -> None:
    policy = parse_policy(policy_doc(**spec))
    assert isinstance(policy, InjectionPolicy)
    assert policy.metadata.name == "p"


def test_defaults_and_aliases() -> None:
    policy = parse_policy(
        policy_doc(
            initContainers=[{**C, "volumeMounts": [{"name": "d", "mountPath": "/d", "readOnly": True}]}],
            volumes=[{"name": "d", "emptyDir": {"medium": "Memory"}}],
        )
    )
    assert policy.spec.required is False
    assert policy.spec.init_container_position == "first"
    assert policy.spec.sidecar_mode is None
    dumped = policy.spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["initContainers"][0]["volumeMounts"] == [{"name": "d", "mountPath": "/d", "readOnly": True}]
    # Volumes are open objects: their source survives unchanged for the apiserver to validate.
    assert dumped["volumes"] == [{"name": "d", "emptyDir": {"medium": "Memory"}}]


def test_policy_is_frozen() -> None:
    policy = parse_policy(policy_doc())
    with pytest.raises(ValueError, match="frozen"):
        policy.metadata.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        pytest.param("app", True, id="plain"),
        pytest.param("example.com/app", True, id="prefixed"),
        pytest.param("a.b-c_d", True, id="punctuation-inside"),
        pytest.param("x" * 63, True, id="63-chars"),
        pytest.param("x" * 64, False, id="64-chars"),
        pytest.param("Example.com/app", False, id="upper-case-prefix"),
        pytest.param("example.com/", False, id="empty-name"),
        pytest.param("-app", False, id="leading-dash"),
        pytest.param("a/b/c", False, id="two-slashes"),
    ],
)
def test_check_label_key(key: str, ok: bool) -> None:
    if ok:
        assert check_label_key(key) == key
    else:
        with pytest.raises(ValueError, match=re.escape(repr(key))):
            check_label_key(key)


def test_pod_volumes_are_optional_and_do_not_change_the_hash_of_policies_without_them() -> None:
    plain = compiled("p", sidecars=[C])
    assert parse_policy(policy_doc(sidecars=[C])).spec.pod_volumes == []
    assert plain.content_hash == compiled("p", sidecars=[C], podVolumes=[]).content_hash
    assert plain.content_hash != compiled("p", sidecars=[C], podVolumes=["data"]).content_hash


# --- what validate must find at load ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        pytest.param(
            {"sidecars": [{"name": "s", "imag": "busybox"}]},
            "spec.sidecars[0].imag: unknown field; did you mean 'image'?",
            id="container-field",
        ),
        pytest.param(
            {"env": [{"name": "A", "valeu": "1"}]},
            "spec.env[0].valeu: unknown field; did you mean 'value'?",
            id="env-field",
        ),
        pytest.param(
            {"env": [{"name": "A", "value": "1"}], "initContainerPositon": "last"},
            "did you mean 'initContainerPosition'?",
            id="spec-field",
        ),
        pytest.param(
            {"env": [{"name": "A", "value": "1"}], "zzz": 1}, "spec.zzz: unknown field", id="no-near-miss"
        ),
    ],
)
def test_an_unknown_field_close_to_a_known_one_says_did_you_mean(spec: dict[str, Any], words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy_doc(**spec))
    message = str(caught.value)
    assert words in message
    if "zzz" in words:
        assert "did you mean" not in message
    assert "Field required" not in message, "the misspelt field is not reported missing as well"


def test_schema_errors_come_before_field_required_noise() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(
            policy_doc(sidecars=[{"name": "s"}], initContainerPosition="middle", env=[{"value": "1"}])
        )
    parts = str(caught.value).removeprefix("policy 'p': ").split("; ")
    kinds = ["required" in part for part in parts]
    assert kinds == sorted(kinds), parts
    assert parts[0].startswith("spec.initContainerPosition")


@pytest.mark.parametrize(
    ("document", "words"),
    [
        pytest.param(
            {},
            "apiVersion and kind missing: a policy document starts with apiVersion: podgraft.io/v1alpha1",
            id="empty",
        ),
        pytest.param(
            {"kind": KIND, "metadata": {"name": "x"}, "spec": {}},
            "policy 'x': apiVersion missing",
            id="no-api-version",
        ),
    ],
)
def test_a_document_that_is_not_a_policy_says_so(document: dict[str, Any], words: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(words)):
        parse_policy(document)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        pytest.param(
            {
                "sidecars": [
                    {"name": "s", "image": "b", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}
                ]
            },
            "sidecars[0].volumeMounts[0]",
            id="helper",
        ),
        pytest.param(
            {"volumeMounts": [{"name": "data", "mountPath": "/d"}]}, "volumeMounts[0]", id="app-containers"
        ),
        pytest.param(
            {
                "initContainers": [
                    {"name": "i", "image": "b", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}
                ]
            },
            "initContainers[0].volumeMounts[0]",
            id="init",
        ),
    ],
)
def test_a_mount_of_a_volume_the_policy_neither_defines_nor_takes_from_the_pod_is_refused_at_load(
    spec: dict[str, Any], where: str
) -> None:
    with pytest.raises(
        PolicyError, match=re.escape(f"{where} mounts volume 'data', which is neither the policy's")
    ):
        parse_policy(policy_doc(**spec))
    parse_policy(policy_doc(**spec, podVolumes=["data"]))
    parse_policy(policy_doc(**spec, volumes=[{"name": "data", "emptyDir": {}}]))
