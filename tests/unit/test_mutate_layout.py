"""Mutation, the layout of the result: where the sidecar mode puts a helper, the order of injected
containers, env and mounts for the pod's own containers only, copy-on-write (neither pod nor policy
is modified; untouched subtrees are shared), and pods of odd shapes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.engine.config import EngineConfig
from app.settings import Settings
from tests.unit.builders import compiled, pod
from tests.unit.mutate_support import mutate, names, sidecar, status_of

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
