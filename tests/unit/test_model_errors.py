"""The InjectionPolicy schema, what it rejects: every rejection names the field by its path in the
document, each problem once; and what `policy validate` must find at load (near-miss field names,
schema errors before "Field required", documents that are not policies, mounts of undeclared volumes)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app.policy.model import KIND, PolicyError, parse_policy
from tests.unit.builders import BUSYBOX, policy_doc

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
