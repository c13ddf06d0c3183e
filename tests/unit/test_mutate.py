"""Mutation: layout of injected containers, copy-on-write, each policy whole or not at all, the
status annotation, ephemeral rules."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from app.engine.config import EngineConfig
from app.engine.mutate import image_allowed, mutate_ephemeral, mutate_pod
from app.engine.policyset import CompiledPolicy
from app.settings import Settings
from tests.unit.builders import compiled, pod

STATUS = "podgraft.io/status"
NATIVE = EngineConfig(native_sidecars_supported=True)


def mutate(
    subject: dict[str, Any],
    *policies: CompiledPolicy,
    config: EngineConfig = NATIVE,
    claims: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Any]:
    rendered = [(p, p.render(subject, "shop")) for p in policies]
    return mutate_pod(subject, rendered, config=config, claims=claims or {})


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def status_of(result: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(result["metadata"]["annotations"][STATUS])
    return data


def sidecar(name: str = "proxy", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "envoy:1", **extra}


# --- sidecar mode ---------------------------------------------------------------------------------


def _config_for(version: str, mode: str = "auto") -> EngineConfig:
    settings = Settings(kubernetes_version=version, sidecar_mode=mode)  # type: ignore[arg-type]
    return EngineConfig(
        sidecar_mode=settings.sidecar_mode, native_sidecars_supported=settings.native_sidecars_supported()
    )


@pytest.mark.parametrize(
    ("policy_mode", "config", "native"),
    [
        pytest.param("native", _config_for("1.28"), True, id="native-on-1.28"),
        pytest.param("classic", _config_for("1.30"), False, id="classic-on-1.30"),
        pytest.param("auto", _config_for("1.28"), False, id="auto-on-1.28-is-classic"),
        pytest.param("auto", _config_for("1.29"), True, id="auto-on-1.29-is-native"),
        pytest.param("auto", _config_for("v1.30.2"), True, id="auto-on-1.30-is-native"),
        pytest.param(None, _config_for("1.30", "classic"), False, id="unset-follows-config-classic"),
        pytest.param(None, _config_for("1.28", "native"), True, id="unset-follows-config-native"),
        pytest.param(None, _config_for("1.28"), False, id="unset-auto-on-1.28"),
    ],
)
def test_sidecar_mode(policy_mode: str | None, config: EngineConfig, native: bool) -> None:
    spec: dict[str, Any] = {"sidecars": [sidecar()]}
    if policy_mode:
        spec["sidecarMode"] = policy_mode
    result, outcome = mutate(pod(), compiled("mesh", **spec), config=config)
    if native:
        assert result["spec"]["initContainers"] == [{**sidecar(), "restartPolicy": "Always"}]
        assert names(result["spec"]["containers"]) == ["app"]
    else:
        assert "initContainers" not in result["spec"]
        assert result["spec"]["containers"][1] == sidecar()
    assert [p.name for p in outcome.injected] == ["mesh"]


# --- positions ------------------------------------------------------------------------------------


def test_layout_of_init_containers_and_containers() -> None:
    subject = pod(
        initContainers=[{"name": "own-init", "image": "busybox"}],
        containers=[{"name": "app", "image": "nginx"}],
    )
    policies = [
        compiled(
            "one",
            sidecarMode="native",
            sidecars=[sidecar("native-1")],
            initContainers=[{"name": "first-1", "image": "busybox"}],
        ),
        compiled(
            "two",
            sidecarMode="native",
            sidecars=[sidecar("native-2")],
            initContainers=[{"name": "first-2", "image": "busybox"}],
        ),
        compiled(
            "three", initContainerPosition="last", initContainers=[{"name": "last-1", "image": "busybox"}]
        ),
        compiled(
            "four",
            sidecarMode="classic",
            sidecars=[sidecar("classic-1")],
            containers=[{"name": "extra-1", "image": "busybox"}],
        ),
    ]
    result, outcome = mutate(subject, *policies)
    assert names(result["spec"]["initContainers"]) == [
        "native-1",
        "native-2",
        "first-1",
        "first-2",
        "own-init",
        "last-1",
    ]
    assert names(result["spec"]["containers"]) == ["app", "classic-1", "extra-1"]
    assert [p.name for p in outcome.injected] == ["one", "two", "three", "four"]
    assert outcome.warnings == []


# --- the original is never modified; untouched subtrees are shared --------------------------------


def _rich_pod() -> dict[str, Any]:
    return pod(
        annotations={"a": "1"},
        labels={"app": "web"},
        initContainers=[{"name": "own-init", "image": "busybox"}],
        containers=[
            {
                "name": "app",
                "image": "nginx",
                "ports": [{"containerPort": 8080}],
                "env": [{"name": "KEEP", "value": "1"}],
                "volumeMounts": [{"name": "own", "mountPath": "/own"}],
                "resources": {"limits": {"memory": "64Mi"}},
            },
            {"name": "second", "image": "nginx", "resources": {"requests": {"cpu": "1m"}}},
        ],
        volumes=[{"name": "own", "emptyDir": {}}],
        tolerations=[{"key": "k", "operator": "Exists"}],
        securityContext={"runAsNonRoot": True},
        imagePullSecrets=[{"name": "creds"}],
    )


EVERYTHING = compiled(
    "everything",
    sidecarMode="native",
    sidecars=[sidecar(volumeMounts=[{"name": "shared", "mountPath": "/shared"}])],
    initContainers=[{"name": "init", "image": "busybox"}],
    containers=[{"name": "extra", "image": "busybox"}],
    volumes=[{"name": "shared", "emptyDir": {}}],
    volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
    env=[{"name": "ADDED", "value": "2"}],
    annotations={"example.com/added": "yes"},
    labels={"added": "yes"},
    imagePullSecrets=[{"name": "more-creds"}],
)


def test_the_original_pod_is_never_modified() -> None:
    subject = _rich_pod()
    before = copy.deepcopy(subject)
    result, _ = mutate(subject, EVERYTHING)
    assert subject == before
    # And the result really changed everything the policy asks for.
    assert names(result["spec"]["initContainers"]) == ["proxy", "init", "own-init"]
    assert names(result["spec"]["containers"]) == ["app", "second", "extra"]
    assert names(result["spec"]["volumes"]) == ["own", "shared"]
    assert names(result["spec"]["imagePullSecrets"]) == ["creds", "more-creds"]
    assert result["metadata"]["labels"] == {"app": "web", "added": "yes"}
    for container in result["spec"]["containers"][:2]:
        assert {"name": "ADDED", "value": "2"} in container["env"]
        assert {"name": "shared", "mountPath": "/shared"} in container["volumeMounts"]


def test_the_policy_is_never_modified() -> None:
    policy_before = copy.deepcopy(dict(EVERYTHING.spec))
    first, _ = mutate(_rich_pod(), EVERYTHING)
    mutate(first, EVERYTHING)  # a second pass over the result: every item now conflicts
    assert dict(EVERYTHING.spec) == policy_before


def test_untouched_subtrees_are_shared() -> None:
    subject = _rich_pod()
    result, _ = mutate(subject, EVERYTHING)
    spec, original = result["spec"], subject["spec"]
    assert spec["tolerations"] is original["tolerations"]
    assert spec["securityContext"] is original["securityContext"]
    assert spec["containers"][0]["ports"] is original["containers"][0]["ports"]
    assert spec["containers"][0]["resources"] is original["containers"][0]["resources"]
    assert spec["containers"][1]["resources"] is original["containers"][1]["resources"]
    assert spec["initContainers"][2] is original["initContainers"][0]
    assert spec["volumes"][0] is original["volumes"][0]
    # Changed containers and lists are fresh copies.
    assert spec["containers"] is not original["containers"]
    assert spec["containers"][0] is not original["containers"][0]
    assert spec["containers"][0]["env"] is not original["containers"][0]["env"]


def test_a_metadata_only_policy_leaves_the_spec_lists_shared() -> None:
    subject = _rich_pod()
    result, _ = mutate(subject, compiled("meta", annotations={"example.com/x": "1"}))
    for key in ("containers", "initContainers", "volumes", "tolerations", "imagePullSecrets"):
        assert result["spec"][key] is subject["spec"][key], key
    assert result["metadata"]["labels"] is subject["metadata"]["labels"]


# --- conflicts: a policy is applied whole or not at all ------------------------------------------

NEITHER = "neither defines (spec.volumes) nor takes from the pod (spec.podVolumes)"
CONFLICTS = [
    pytest.param(
        {"containers": [{"name": "proxy", "image": "mine"}]},
        {"sidecars": [sidecar()]},
        "the pod already has a container named 'proxy'",
        id="container-name",
    ),
    pytest.param(
        {
            "containers": [{"name": "app", "image": "x"}],
            "volumes": [{"name": "data", "configMap": {"name": "c"}}],
        },
        {"volumes": [{"name": "data", "emptyDir": {}}], "env": [{"name": "A", "value": "1"}]},
        "the pod already has a different volume named 'data'",
        id="volume-name",
    ),
    pytest.param(
        {
            "containers": [
                {"name": "app", "image": "x", "volumeMounts": [{"name": "own", "mountPath": "/data"}]}
            ],
            "volumes": [{"name": "own", "emptyDir": {}}],
        },
        {
            "volumes": [{"name": "data", "emptyDir": {}}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        },
        "container 'app' already mounts something else at '/data'",
        id="mount-path",
    ),
    pytest.param(
        {"containers": [{"name": "app", "image": "x", "env": [{"name": "LOG_DIR", "value": "/mine"}]}]},
        {"env": [{"name": "LOG_DIR", "value": "/var/log"}], "labels": {"logs": "shipped"}},
        "container 'app' already sets env 'LOG_DIR' differently",
        id="env-name",
    ),
    pytest.param(
        {"containers": [{"name": "app", "image": "x"}], "volumes": [{"name": "nowhere", "emptyDir": {}}]},
        {"volumeMounts": [{"name": "{{ 'nowhere' }}", "mountPath": "/n"}]},  # templated: known only at render
        f"volumeMount 'nowhere' names a volume the policy {NEITHER}",
        id="mount-of-a-pod-volume",
    ),
    pytest.param(
        {"containers": [{"name": "app", "image": "x"}]},
        {"sidecars": [sidecar(volumeMounts=[{"name": "{{ 'nowhere' }}", "mountPath": "/n"}])]},
        f"container 'proxy' mounts volume 'nowhere', which the policy {NEITHER}",
        id="helper-mounts-an-undeclared-volume",
    ),
    pytest.param(
        {"containers": [{"name": "app", "image": "x"}]},
        {"podVolumes": ["data"], "sidecars": [sidecar(volumeMounts=[{"name": "data", "mountPath": "/d"}])]},
        "the pod has no volume 'data' (spec.podVolumes)",
        id="declared-pod-volume-missing",
    ),
    pytest.param(
        {
            "containers": [{"name": "app", "image": "x"}],
            "ephemeralContainers": [{"name": "proxy", "image": "y"}],
        },
        {"sidecars": [sidecar()]},
        "the pod already has an ephemeral container named 'proxy'",
        id="ephemeral-container-name",
    ),
]


@pytest.mark.parametrize(("spec", "policy_spec", "words"), CONFLICTS)
def test_a_conflict_skips_an_optional_policy_whole(
    spec: dict[str, Any], policy_spec: dict[str, Any], words: str
) -> None:
    subject = pod(**spec)
    result, outcome = mutate(subject, compiled("pol", **policy_spec))
    assert outcome.warnings == [f"podgraft: policy 'pol' not injected: {words}"]
    assert outcome.denial is None
    assert outcome.injected == []
    assert result == subject, "nothing of the policy, not even the status annotation"
    assert [r.state for r in outcome.results] == ["conflict"]


@pytest.mark.parametrize(("spec", "policy_spec", "words"), CONFLICTS)
def test_a_conflict_of_a_required_policy_denies(
    spec: dict[str, Any], policy_spec: dict[str, Any], words: str
) -> None:
    _, outcome = mutate(pod(**spec), compiled("pol", required=True, **policy_spec))
    assert outcome.denial == f"podgraft: required policy 'pol' cannot be applied: {words}"
    assert outcome.warnings == []


def test_a_denial_names_every_conflict() -> None:
    subject = pod(
        labels={"tier": "web"},
        containers=[
            {"name": "app", "image": "x", "env": [{"name": "A", "value": "mine"}]},
            {"name": "proxy", "image": "y"},
        ],
    )
    policy = compiled(
        "pol", required=True, sidecars=[sidecar()], env=[{"name": "A", "value": "1"}], labels={"tier": "db"}
    )
    _, outcome = mutate(subject, policy)
    assert outcome.denial == (
        "podgraft: required policy 'pol' cannot be applied: the pod already has a container named 'proxy'; "
        "container 'app' already sets env 'A' differently; the pod already has label 'tier'='web'"
    )


def test_reserved_annotations_are_never_set() -> None:
    subject = pod(annotations={"podgraft.io/inject": "pol"})
    policy = compiled(
        "pol", annotations={STATUS: "forged", "podgraft.io/inject": "other", "example.com/a": "1"}
    )
    result, outcome = mutate(subject, policy)
    assert result["metadata"]["annotations"]["podgraft.io/inject"] == "pol"
    assert result["metadata"]["annotations"]["example.com/a"] == "1"
    assert outcome.warnings == [
        f"podgraft: policy 'pol': annotation {STATUS!r} is reserved for Podgraft; not set",
        "podgraft: policy 'pol': annotation 'podgraft.io/inject' is reserved for Podgraft; not set",
    ]
    assert status_of(result)["policies"] == [{"name": "pol", "hash": policy.content_hash}]


def test_items_the_pod_already_has_make_the_policy_current() -> None:
    subject = pod(
        containers=[
            {
                "name": "app",
                "image": "x",
                "env": [{"name": "X", "value": "1"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        volumes=[{"name": "data", "emptyDir": {}}],
        imagePullSecrets=[{"name": "creds"}],
    )
    policy = compiled(
        "same",
        volumes=[{"name": "data", "emptyDir": {}}],
        volumeMounts=[{"name": "data", "mountPath": "/data"}],
        env=[{"name": "X", "value": "1"}],
        imagePullSecrets=[{"name": "creds"}],
    )
    result, outcome = mutate(subject, policy)
    assert outcome.warnings == []
    assert outcome.injected == []
    assert [r.state for r in outcome.results] == ["current"]
    assert result["spec"] is not subject["spec"]
    assert result["spec"]["containers"] is subject["spec"]["containers"]
    assert status_of(result)["policies"] == [{"name": "same", "hash": policy.content_hash}]


def test_a_policy_with_a_conflict_is_not_recorded_and_the_others_are() -> None:
    subject = pod(containers=[{"name": "app", "image": "x"}, {"name": "proxy", "image": "y"}])
    result, outcome = mutate(
        subject, compiled("mesh", sidecars=[sidecar()]), compiled("env", env=[{"name": "A", "value": "1"}])
    )
    assert [p.name for p in outcome.injected] == ["env"]
    assert outcome.warnings == [
        "podgraft: policy 'mesh' not injected: the pod already has a container named 'proxy'"
    ]
    assert [e["name"] for e in status_of(result)["policies"]] == ["env"]


def test_two_policies_may_share_identical_items() -> None:
    shared = {"volumes": [{"name": "data", "emptyDir": {}}], "env": [{"name": "A", "value": "1"}]}
    result, outcome = mutate(pod(), compiled("one", **shared), compiled("two", **shared))
    assert outcome.warnings == []
    assert [r.state for r in outcome.results] == ["injected", "current"]
    assert names(result["spec"]["volumes"]) == ["data"]
    assert [e["name"] for e in status_of(result)["policies"]] == ["one", "two"]


# --- ports ----------------------------------------------------------------------------------------


def _app_on(port: int, protocol: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"containerPort": port}
    if protocol:
        entry["protocol"] = protocol
    return pod(containers=[{"name": "app", "image": "x", "ports": [entry]}])


LOCALHOST_CLASH = (
    "container 'proxy' port 8080/TCP clashes with container 'app' (containers in a pod share localhost)"
)


@pytest.mark.parametrize("mode", ["native", "classic"])
def test_a_port_clash_skips_an_optional_policy(mode: str) -> None:
    policy = compiled("mesh", sidecarMode=mode, sidecars=[sidecar(ports=[{"containerPort": 8080}])])
    subject = _app_on(8080)
    result, outcome = mutate(subject, policy)
    assert outcome.denial is None
    assert outcome.warnings == [f"podgraft: policy 'mesh' not injected: {LOCALHOST_CLASH}"]
    assert result == subject


def test_port_clash_of_a_required_policy_denies() -> None:
    policy = compiled("mesh", required=True, sidecars=[sidecar(ports=[{"containerPort": 8080}])])
    _, outcome = mutate(_app_on(8080), policy)
    assert outcome.denial == f"podgraft: required policy 'mesh' cannot be applied: {LOCALHOST_CLASH}"


@pytest.mark.parametrize(
    ("app", "policy"),
    [
        pytest.param(
            _app_on(8080, "UDP"),
            compiled("mesh", sidecars=[sidecar(ports=[{"containerPort": 8080}])]),
            id="other-protocol",
        ),
        pytest.param(
            _app_on(8080),
            compiled(
                "wait", initContainers=[{"name": "wait", "image": "x", "ports": [{"containerPort": 8080}]}]
            ),
            id="init-container-runs-before",
        ),
        pytest.param(
            _app_on(8080),
            compiled("mesh", sidecars=[sidecar(ports=[{"containerPort": 15000}])]),
            id="other-port",
        ),
        pytest.param(
            pod(
                containers=[{"name": "app", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
            ),
            compiled("mesh", sidecars=[sidecar(ports=[{"containerPort": 8080}])]),
            id="a-host-port-is-not-a-pod-port",
        ),
    ],
)
def test_no_port_clash(app: dict[str, Any], policy: CompiledPolicy) -> None:
    _, outcome = mutate(app, policy)
    assert outcome.warnings == []
    assert outcome.denial is None
    assert outcome.injected == [policy]


def test_two_injected_helpers_clash_with_each_other() -> None:
    first = compiled(
        "a", sidecarMode="native", sidecars=[sidecar("a-proxy", ports=[{"containerPort": 9000}])]
    )
    second = compiled(
        "b", containers=[{"name": "b-helper", "image": "x", "ports": [{"containerPort": 9000}]}]
    )
    _, outcome = mutate(pod(), first, second)
    assert outcome.warnings == [
        "podgraft: policy 'b' not injected: container 'b-helper' port 9000/TCP clashes with container "
        "'a-proxy' (containers in a pod share localhost)"
    ]


def test_host_network_ports_are_the_nodes() -> None:
    subject = pod(
        containers=[{"name": "app", "image": "x", "ports": [{"containerPort": 9000}]}], hostNetwork=True
    )
    clash = compiled("a", sidecars=[sidecar(ports=[{"containerPort": 9000}])])
    _, outcome = mutate(subject, clash)
    assert outcome.warnings == [
        "podgraft: policy 'a' not injected: container 'proxy' port 9000/TCP clashes with container 'app' on "
        "the node (the pod uses hostNetwork)"
    ]
    helper = compiled("b", sidecars=[sidecar(ports=[{"containerPort": 15000}, {"containerPort": 15001}])])
    result, outcome = mutate(subject, helper)
    assert outcome.warnings == [
        "podgraft: policy 'b': container 'proxy' listens on the node's ports 15000/TCP, "
        "15001/TCP (the pod uses "
        "hostNetwork): another pod on the node that uses them will clash"
    ]
    assert names(result["spec"]["initContainers"]) == ["proxy"]


# --- env and mounts go to the pod's own containers only -------------------------------------------


def test_env_and_mounts_skip_helpers() -> None:
    helper = compiled("helper", sidecarMode="classic", sidecars=[sidecar("helper")])
    env = compiled(
        "env",
        env=[{"name": "A", "value": "1"}],
        volumes=[{"name": "v", "emptyDir": {}}],
        volumeMounts=[{"name": "v", "mountPath": "/v"}],
    )
    result, _ = mutate(pod(), helper, env)
    app, injected = result["spec"]["containers"]
    assert app["env"] == [{"name": "A", "value": "1"}]
    assert app["volumeMounts"] == [{"name": "v", "mountPath": "/v"}]
    assert "env" not in injected
    assert status_of(result)["containers"] == ["helper"]


def test_a_helper_already_in_the_pod_is_not_an_app_container() -> None:
    helper = compiled("helper", sidecarMode="classic", sidecars=[sidecar("helper")])
    subject = pod(containers=[{"name": "app", "image": "x"}, sidecar("helper")])
    result, outcome = mutate(subject, helper, compiled("env", env=[{"name": "A", "value": "1"}]))
    assert "env" in result["spec"]["containers"][0]
    assert result["spec"]["containers"][1] is subject["spec"]["containers"][1]
    assert [r.state for r in outcome.results] == ["current", "injected"]
    assert status_of(result)["containers"] == ["helper"]


def test_a_container_named_like_a_helper_but_different_is_an_app_container() -> None:
    helper = compiled("helper", sidecarMode="classic", sidecars=[sidecar("helper")])
    mine = {"name": "helper", "image": "mine:1"}
    result, outcome = mutate(
        pod(containers=[{"name": "app", "image": "x"}, mine]),
        helper,
        compiled("env", env=[{"name": "A", "value": "1"}]),
    )
    assert [r.state for r in outcome.results] == ["conflict", "injected"]
    assert [c.get("env") for c in result["spec"]["containers"]] == [[{"name": "A", "value": "1"}]] * 2


# --- the status annotation ------------------------------------------------------------------------


def test_the_status_lists_exactly_the_policies_present() -> None:
    policy = compiled("new", env=[{"name": "A", "value": "1"}])
    subject = pod(
        annotations={STATUS: '{"policies":[{"name":"zeta","hash":"1111"},{"name":"new","hash":"old"}]}'}
    )
    result, outcome = mutate(subject, policy, claims={"zeta": "1111", "new": "old"})
    assert status_of(result) == {"policies": [{"name": "new", "hash": policy.content_hash}]}
    assert [r.state for r in outcome.results] == ["updated"]


def test_a_status_that_claims_a_policy_which_is_not_applied_is_removed() -> None:
    mesh = compiled("mesh", sidecars=[sidecar()])
    subject = pod(
        annotations={STATUS: '{"policies":[{"name":"mesh","hash":"x"}]}', "a": "1"},
        containers=[{"name": "app", "image": "x", "ports": [{"containerPort": 9}]}],
        ephemeralContainers=[{"name": "proxy", "image": "y"}],
    )
    result, outcome = mutate(subject, mesh, claims={"mesh": "x"})
    assert result["metadata"]["annotations"] == {"a": "1"}
    assert [r.state for r in outcome.results] == ["conflict"]


def test_a_current_pod_keeps_its_status_object() -> None:
    policy = compiled("env", env=[{"name": "A", "value": "1"}])
    first, _ = mutate(pod(), policy)
    again, outcome = mutate(first, policy, claims={"env": policy.content_hash})
    assert again["metadata"]["annotations"] is first["metadata"]["annotations"]
    assert [r.state for r in outcome.results] == ["current"]


# --- a pod that carries another version -----------------------------------------------------------


def test_a_claimed_policy_replaces_its_older_items_in_place() -> None:
    old = compiled(
        "pol",
        sidecarMode="native",
        sidecars=[sidecar(image="envoy:1")],
        volumes=[{"name": "data", "emptyDir": {}}],
        env=[{"name": "A", "value": "old"}],
        labels={"version": "1"},
    )
    new = compiled(
        "pol",
        sidecarMode="native",
        sidecars=[sidecar(image="envoy:2")],
        volumes=[{"name": "data", "emptyDir": {"medium": "Memory"}}],
        env=[{"name": "A", "value": "new"}],
        labels={"version": "2"},
    )
    own_init = {"name": "own-init", "image": "busybox"}
    subject = pod(initContainers=[own_init], containers=[{"name": "app", "image": "x"}])
    injected, _ = mutate(subject, old)
    fresh, _ = mutate(subject, new)
    updated, outcome = mutate(injected, new, claims={"pol": old.content_hash})
    assert [r.state for r in outcome.results] == ["updated"]
    assert updated == fresh
    _, outcome = mutate(injected, new)
    assert [r.state for r in outcome.results] == ["conflict"]
    assert len(outcome.warnings) == 4


def test_a_claimed_classic_sidecar_moves_when_the_mode_becomes_native() -> None:
    spec = {"sidecars": [sidecar()], "env": [{"name": "A", "value": "1"}]}
    classic = compiled("pol", sidecarMode="classic", **spec)
    native = compiled("pol", sidecarMode="native", **spec)
    injected, _ = mutate(pod(), classic)
    assert names(injected["spec"]["containers"]) == ["app", "proxy"]
    updated, _ = mutate(injected, native, claims={"pol": classic.content_hash})
    assert names(updated["spec"]["containers"]) == ["app"]
    assert updated["spec"]["initContainers"] == [{**sidecar(), "restartPolicy": "Always"}]
    assert updated["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]


def test_a_claim_never_takes_an_item_another_policy_holds() -> None:
    first = compiled("first", volumes=[{"name": "data", "emptyDir": {}}])
    second = compiled("second", volumes=[{"name": "data", "emptyDir": {"medium": "Memory"}}])
    result, outcome = mutate(pod(), first, second, claims={"second": "old"})
    assert result["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert outcome.warnings == [
        "podgraft: policy 'second' not injected: the pod already has a different volume named 'data'"
    ]


# --- odd pods -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param({"metadata": [], "spec": "x"}, id="wrong-types"),
        pytest.param({}, id="empty"),
        pytest.param({"metadata": {}, "spec": {"containers": "x", "initContainers": {}}}, id="odd-lists"),
        pytest.param({"metadata": {}, "spec": {"containers": [1, None, {"noname": 1}]}}, id="odd-containers"),
        pytest.param(
            {
                "metadata": {"labels": {"added": 1}},
                "spec": {"containers": [{"name": ["x"], "env": "y", "ports": [{"containerPort": "80"}]}]},
            },
            id="odd-items",
        ),
    ],
)
def test_odd_pods_never_raise(subject: dict[str, Any]) -> None:
    before = copy.deepcopy(subject)
    result, outcome = mutate(subject, EVERYTHING)
    assert subject == before
    assert outcome.denial is None
    assert "proxy" in names(result["spec"]["initContainers"])


# --- ephemeral containers -------------------------------------------------------------------------

RULES = compiled(
    "debug",
    ephemeral={
        "volumeMounts": [{"name": "logs", "mountPath": "/debug/logs", "readOnly": True}],
        "env": [{"name": "DEBUG", "value": "1"}],
        "allowedImages": ["busybox:1.*", "registry.example.com/debug/*"],
    },
)


def _debugged(*images: str, old: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    existing = [{"name": f"debugger-{i}", "image": "busybox:1.36"} for i in range(old)]
    old_pod = pod(containers=[{"name": "app", "image": "x"}], volumes=[{"name": "logs", "emptyDir": {}}])
    old_pod["spec"]["ephemeralContainers"] = existing
    new_pod = copy.deepcopy(old_pod)
    new_pod["spec"]["ephemeralContainers"] += [
        {"name": f"new-{i}", "image": image, "env": [{"name": "DEBUG", "value": "mine"}]}
        for i, image in enumerate(images)
    ]
    return old_pod, new_pod


def test_ephemeral_rules_apply_to_new_containers_only() -> None:
    old_pod, new_pod = _debugged("busybox:1.36", "registry.example.com/debug/tools:2")
    before = copy.deepcopy(new_pod)
    rules = RULES.model.spec.ephemeral.model_dump(by_alias=True, exclude_none=True)
    result, outcome = mutate_ephemeral(new_pod, old_pod, [(RULES, rules)])
    assert new_pod == before
    assert outcome.denial is None
    earlier, *added = result["spec"]["ephemeralContainers"]
    assert earlier is new_pod["spec"]["ephemeralContainers"][0]
    for container in added:
        assert container["volumeMounts"] == [{"name": "logs", "mountPath": "/debug/logs", "readOnly": True}]
        assert container["env"] == [{"name": "DEBUG", "value": "mine"}], "the container's own env wins"
    assert result["spec"]["containers"] is new_pod["spec"]["containers"]


def test_ephemeral_disallowed_image_is_denied() -> None:
    old_pod, new_pod = _debugged("nicolaka/netshoot:latest")
    rules = RULES.model.spec.ephemeral.model_dump(by_alias=True, exclude_none=True)
    _, outcome = mutate_ephemeral(new_pod, old_pod, [(RULES, rules)])
    assert outcome.denial == (
        "podgraft: policy 'debug' does not allow image 'nicolaka/netshoot:latest' for ephemeral container "
        "'new-0'; allowed: busybox:1.*, registry.example.com/debug/*"
    )


def test_ephemeral_mount_of_a_missing_volume_is_a_warning() -> None:
    old_pod, new_pod = _debugged("busybox:1.36")
    del new_pod["spec"]["volumes"]
    rules = RULES.model.spec.ephemeral.model_dump(by_alias=True, exclude_none=True)
    result, outcome = mutate_ephemeral(new_pod, old_pod, [(RULES, rules)])
    assert outcome.warnings == [
        "podgraft: policy 'debug': volumeMount 'logs' names no volume of the pod; not mounted into 'new-0'"
    ]
    assert "volumeMounts" not in result["spec"]["ephemeralContainers"][1]


def test_ephemeral_old_pod_of_odd_shape() -> None:
    _, new_pod = _debugged("busybox:1.36", old=0)
    rules = RULES.model.spec.ephemeral.model_dump(by_alias=True, exclude_none=True)
    result, outcome = mutate_ephemeral(new_pod, {"spec": "not-a-spec"}, [(RULES, rules)])
    assert outcome.denial is None
    assert result["spec"]["ephemeralContainers"][0]["volumeMounts"][0]["name"] == "logs"


@pytest.mark.parametrize(
    ("image", "patterns", "allowed"),
    [
        pytest.param("anything", [], True, id="no-patterns"),
        pytest.param("busybox:1.36", ["busybox:1.*"], True, id="glob"),
        pytest.param("busybox:2.0", ["busybox:1.*"], False, id="glob-other-major"),
        pytest.param(
            "registry.example.com/debug/a/b", ["registry.example.com/debug/*"], True, id="star-crosses-slash"
        ),
        pytest.param("BUSYBOX:1.36", ["busybox:1.*"], False, id="case-sensitive"),
        pytest.param("busybox:1.36", ["busybox:1.3?"], True, id="question-mark"),
    ],
)
def test_image_allowed(image: str, patterns: list[str], allowed: bool) -> None:
    assert image_allowed(image, patterns) is allowed


def test_a_policy_with_only_ephemeral_rules_injects_nothing_at_creation_and_is_not_recorded() -> None:
    result, outcome = mutate(pod(), RULES)
    assert result == pod()
    assert outcome.warnings == []
    assert [r.state for r in outcome.results] == ["nothing"]
    assert (
        outcome.results[0].detail()
        == "nothing to inject at creation (its ephemeral rules apply to kubectl debug)"
    )
