"""Mutation: layout of injected containers, copy-on-write, conflicts as warnings, ephemeral rules."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from app.engine.config import EngineConfig
from app.engine.mutate import image_allowed, mutate_ephemeral, mutate_pod, status_value
from app.engine.policyset import CompiledPolicy
from app.settings import Settings
from tests.unit.builders import compiled, pod

STATUS = "podgraft.io/status"
NATIVE = EngineConfig(native_sidecars_supported=True)


def mutate(
    subject: dict[str, Any],
    *policies: CompiledPolicy,
    config: EngineConfig = NATIVE,
    previous: dict[str, str] | None = None,
    previous_containers: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], Any]:
    return mutate_pod(
        subject,
        [(p, p.spec) for p in policies],
        config=config,
        previous_status=previous or {},
        previous_containers=previous_containers,
    )


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


# --- conflicts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "policy_spec", "words"),
    [
        pytest.param(
            {"containers": [{"name": "proxy", "image": "mine"}]},
            {"sidecars": [sidecar()]},
            "a container named 'proxy' already exists; not injected",
            id="container-name",
        ),
        pytest.param(
            {
                "containers": [{"name": "app", "image": "x"}],
                "volumes": [{"name": "data", "configMap": {"name": "c"}}],
            },
            {"volumes": [{"name": "data", "emptyDir": {}}]},
            "the pod already has a different volume named 'data'; kept the pod's",
            id="volume-name",
        ),
        pytest.param(
            {
                "containers": [
                    {"name": "app", "image": "x", "volumeMounts": [{"name": "own", "mountPath": "/data"}]}
                ],
                "volumes": [{"name": "own", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
            },
            {
                "volumes": [{"name": "data", "emptyDir": {}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
            "container 'app' already mounts something at '/data'; not mounted",
            id="mount-path",
        ),
        pytest.param(
            {"containers": [{"name": "app", "image": "x", "env": [{"name": "LOG_DIR", "value": "/mine"}]}]},
            {"env": [{"name": "LOG_DIR", "value": "/var/log"}]},
            "container 'app' already sets env 'LOG_DIR'; kept its value",
            id="env-name",
        ),
        pytest.param(
            {"containers": [{"name": "app", "image": "x"}]},
            {"volumeMounts": [{"name": "nowhere", "mountPath": "/n"}]},
            "volumeMount 'nowhere' names no volume of the pod; not mounted",
            id="mount-without-volume",
        ),
        pytest.param(
            {"containers": [{"name": "app", "image": "x"}]},
            {"sidecars": [sidecar(volumeMounts=[{"name": "nowhere", "mountPath": "/n"}])]},
            "container 'proxy' mounts nowhere, which the pod does not have; not injected",
            id="helper-mounts-missing-volume",
        ),
    ],
)
def test_conflicts_are_warnings(spec: dict[str, Any], policy_spec: dict[str, Any], words: str) -> None:
    subject = pod(**spec)
    result, outcome = mutate(subject, compiled("pol", **policy_spec))
    assert any(w == f"podgraft: policy 'pol': {words}" for w in outcome.warnings), outcome.warnings
    assert outcome.denial is None
    # Nothing was duplicated.
    for key in ("containers", "initContainers", "volumes"):
        listed = names(result["spec"].get(key))
        assert len(listed) == len(set(listed)), key


def test_conflicting_metadata_keeps_the_pods_values() -> None:
    subject = pod(
        annotations={"example.com/owner": "team-a", "podgraft.io/inject": "pol"}, labels={"tier": "web"}
    )
    policy = compiled(
        "pol",
        annotations={"example.com/owner": "team-b", STATUS: "forged", "podgraft.io/inject": "other"},
        labels={"tier": "db"},
        env=[{"name": "X", "value": "1"}],
    )
    result, outcome = mutate(subject, policy)
    assert result["metadata"]["annotations"]["example.com/owner"] == "team-a"
    assert result["metadata"]["annotations"]["podgraft.io/inject"] == "pol"
    assert result["metadata"]["labels"] == {"tier": "web"}
    assert "podgraft: policy 'pol': the pod already has annotation 'example.com/owner'='team-a'; kept it" in (
        outcome.warnings
    )
    assert "podgraft: policy 'pol': the pod already has label 'tier'='web'; kept it" in outcome.warnings
    assert (
        f"podgraft: policy 'pol': annotation {STATUS!r} is reserved for Podgraft; not set" in outcome.warnings
    )
    assert status_of(result)["policies"] == [{"name": "pol", "hash": policy.content_hash}]


def test_identical_existing_items_are_no_conflict() -> None:
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
    assert outcome.warnings == ["podgraft: policy 'same': nothing left to inject after conflicts"]
    assert outcome.injected == []
    assert STATUS not in (result["metadata"].get("annotations") or {})
    assert result["spec"]["containers"] is subject["spec"]["containers"]


def test_a_policy_left_with_nothing_is_not_recorded() -> None:
    subject = pod(containers=[{"name": "app", "image": "x"}, {"name": "proxy", "image": "y"}])
    result, outcome = mutate(
        subject, compiled("mesh", sidecars=[sidecar()]), compiled("env", env=[{"name": "A", "value": "1"}])
    )
    assert [p.name for p in outcome.injected] == ["env"]
    assert "podgraft: policy 'mesh': nothing left to inject after conflicts" in outcome.warnings
    assert [e["name"] for e in status_of(result)["policies"]] == ["env"]


# --- ports ----------------------------------------------------------------------------------------


def _app_on(port: int, protocol: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"containerPort": port}
    if protocol:
        entry["protocol"] = protocol
    return pod(containers=[{"name": "app", "image": "x", "ports": [entry]}])


@pytest.mark.parametrize("mode", ["native", "classic"])
def test_port_clash_is_a_warning(mode: str) -> None:
    policy = compiled("mesh", sidecarMode=mode, sidecars=[sidecar(ports=[{"containerPort": 8080}])])
    result, outcome = mutate(_app_on(8080), policy)
    assert outcome.denial is None
    assert (
        "podgraft: policy 'mesh': container 'proxy' port 8080/TCP clashes with container 'app' "
        "(containers in a pod share localhost)"
    ) in outcome.warnings
    assert "proxy" in names(result["spec"].get("initContainers")) + names(result["spec"]["containers"])


def test_port_clash_of_a_required_policy_denies() -> None:
    policy = compiled("mesh", required=True, sidecars=[sidecar(ports=[{"containerPort": 8080}])])
    _, outcome = mutate(_app_on(8080), policy)
    assert outcome.denial == (
        "podgraft: required policy 'mesh': container 'proxy' port 8080/TCP clashes with container 'app' "
        "(containers in a pod share localhost)"
    )


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
    ],
)
def test_no_port_clash(app: dict[str, Any], policy: CompiledPolicy) -> None:
    _, outcome = mutate(app, policy)
    assert outcome.warnings == []
    assert outcome.denial is None


def test_two_injected_helpers_clash_with_each_other() -> None:
    first = compiled(
        "a", sidecarMode="native", sidecars=[sidecar("a-proxy", ports=[{"containerPort": 9000}])]
    )
    second = compiled(
        "b", containers=[{"name": "b-helper", "image": "x", "ports": [{"containerPort": 9000}]}]
    )
    _, outcome = mutate(pod(), first, second)
    assert any("'b-helper' port 9000/TCP clashes with container 'a-proxy'" in w for w in outcome.warnings)


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


def test_helpers_of_an_earlier_pass_are_not_app_containers() -> None:
    subject = pod(containers=[{"name": "app", "image": "x"}, {"name": "helper", "image": "y"}])
    result, _ = mutate(
        subject, compiled("env", env=[{"name": "A", "value": "1"}]), previous_containers=frozenset(["helper"])
    )
    assert "env" in result["spec"]["containers"][0]
    assert result["spec"]["containers"][1] is subject["spec"]["containers"][1]
    assert status_of(result)["containers"] == ["helper"]


# --- the status annotation ------------------------------------------------------------------------


def test_status_merge_keeps_earlier_entries() -> None:
    policy = compiled("new", env=[{"name": "A", "value": "1"}])
    result, _ = mutate(pod(), policy, previous={"zeta": "1111", "alpha": "2222", "new": "old-hash"})
    assert status_of(result)["policies"] == [
        {"name": "alpha", "hash": "2222"},
        {"name": "new", "hash": policy.content_hash},
        {"name": "zeta", "hash": "1111"},
    ]


def test_status_value_is_compact_sorted_json() -> None:
    policy = compiled("b", env=[{"name": "A", "value": "1"}])
    value = status_value({"a": "1"}, [policy], ["z", "y", "z"])
    assert value == (
        f'{{"policies":[{{"name":"a","hash":"1"}},{{"name":"b","hash":"{policy.content_hash}"}}],'
        '"containers":["y","z"]}'
    )


# --- odd pods -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param({"metadata": [], "spec": "x"}, id="wrong-types"),
        pytest.param({}, id="empty"),
        pytest.param({"metadata": {}, "spec": {"containers": "x", "initContainers": {}}}, id="odd-lists"),
        pytest.param({"metadata": {}, "spec": {"containers": [1, None, {"noname": 1}]}}, id="odd-containers"),
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
