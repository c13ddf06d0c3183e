"""Mutation, conflicts: each policy is applied whole or not at all (an optional one skipped with a
warning, a required one denied, naming every item in the way), reserved annotations, items the pod
already has, and port clashes (localhost, and the node's ports under hostNetwork)."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine.policyset import CompiledPolicy
from tests.unit.builders import compiled, pod
from tests.unit.mutate_support import STATUS, mutate, names, sidecar, status_of

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
