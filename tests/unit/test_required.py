"""Issue 12, "required means required": a pod cannot evade, half-apply or steer a policy.

One group of tests per bug of the issue, through `inject_pod` (the pure core of both the webhook and
`podgraft inject`) with the example policies: `mesh-proxy` (required, native sidecar, env, label)
and `log-shipper` (optional, `auto` sidecar, its own volume, mounts, env, annotation).
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from app.engine.config import EngineConfig
from app.engine.inject import InjectionResult, inject_pod
from app.engine.policyset import CompiledPolicy, PolicySet, compile_policy
from app.policy.model import PolicyError, parse_policy
from tests.conftest import EXAMPLE_POLICIES, policies_from_dir
from tests.unit.builders import compiled, pod, policy_set

INJECT = "podgraft.io/inject"
STATUS = "podgraft.io/status"
EXAMPLES = policies_from_dir(EXAMPLE_POLICIES)
MESH = EXAMPLES.by_name["mesh-proxy"]
SHIPPER = EXAMPLES.by_name["log-shipper"]
NATIVE = EngineConfig(native_sidecars_supported=True)
OLD_CLUSTER = EngineConfig(native_sidecars_supported=False)
APP = {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}


def run(
    subject: dict[str, Any],
    policies: PolicySet = EXAMPLES,
    config: EngineConfig = NATIVE,
    *,
    explain: bool = False,
) -> InjectionResult:
    return inject_pod(
        subject, namespace="shop", namespace_labels=None, policies=policies, config=config, explain=explain
    )


def patched(subject: dict[str, Any], result: InjectionResult) -> dict[str, Any]:
    assert result.denial is None, result.denial
    mutated: dict[str, Any] = jsonpatch.apply_patch(subject, result.patch)
    return mutated


def names(items: list[dict[str, Any]] | None) -> list[str]:
    return [item["name"] for item in items or []]


def status(*policies: tuple[str, str], containers: tuple[str, ...] = ()) -> str:
    data: dict[str, Any] = {"policies": [{"name": n, "hash": h} for n, h in policies]}
    if containers:
        data["containers"] = list(containers)
    return orjson.dumps(data).decode()


def variant(policy: CompiledPolicy, **parameters: str) -> CompiledPolicy:
    """The same policy (same name) with other parameters: another version of it."""
    document = yaml.safe_load((EXAMPLE_POLICIES / f"{policy.name}.yaml").read_text())
    document["spec"]["parameters"].update(parameters)
    return compile_policy(parse_policy(document), source="old.yaml")


def app_env(result_pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in result_pod["spec"]["containers"][0].get("env", [])}


# --- 1. a forged status annotation proves nothing -------------------------------------------------


def test_a_forged_status_with_the_live_hash_does_not_skip_a_required_policy() -> None:
    forged = status(("mesh-proxy", MESH.content_hash), containers=("mesh-proxy",))
    subject = pod(annotations={INJECT: "mesh-proxy", STATUS: forged}, labels={"app": "web"}, containers=[APP])
    result = run(subject)
    injected = patched(subject, result)
    assert names(injected["spec"].get("initContainers")) == ["mesh-proxy"]
    assert app_env(injected) == {"HTTP_PROXY": "http://127.0.0.1:15001"}
    assert injected["metadata"]["labels"]["mesh.example.com/proxied"] == "true"
    assert result.injected == ("mesh-proxy",)
    assert run(injected).patch == [], "once really injected, the pod is left alone"


def test_a_forged_container_list_does_not_keep_env_out_of_the_app() -> None:
    forged = status(("mesh-proxy", "0000000000000000"), containers=("app",))
    subject = pod(annotations={INJECT: "mesh-proxy", STATUS: forged}, containers=[APP])
    injected = patched(subject, run(subject))
    assert app_env(injected) == {"HTTP_PROXY": "http://127.0.0.1:15001"}


def test_a_forged_status_with_a_fake_proxy_gets_the_real_one() -> None:
    fake = {
        "name": "mesh-proxy",
        "image": "busybox:1.36",
        "command": ["sleep", "infinity"],
        "restartPolicy": "Always",
    }
    forged = status(("mesh-proxy", MESH.content_hash))
    subject = pod(annotations={INJECT: "mesh-proxy", STATUS: forged}, containers=[APP], initContainers=[fake])
    injected = patched(subject, run(subject))
    (proxy,) = injected["spec"]["initContainers"]
    assert proxy["image"] == "envoyproxy/envoy:v1.31.2"
    assert "command" not in proxy


# --- 2. a required policy is applied whole or denies; an optional one whole or not at all ---------


@pytest.mark.parametrize(
    ("spec", "metadata", "item"),
    [
        pytest.param(
            {"containers": [APP, {"name": "mesh-proxy", "image": "mine:1"}]},
            {},
            "the pod already has a container named 'mesh-proxy'",
            id="container-name",
        ),
        pytest.param(
            {"containers": [{**APP, "env": [{"name": "HTTP_PROXY", "value": "http://evil:3128"}]}]},
            {},
            "container 'app' already sets env 'HTTP_PROXY' differently",
            id="env",
        ),
        pytest.param(
            {"containers": [APP]},
            {"labels": {"mesh.example.com/proxied": "false"}},
            "the pod already has label 'mesh.example.com/proxied'='false'",
            id="label",
        ),
        pytest.param(
            {"containers": [{**APP, "ports": [{"containerPort": 15000}]}]},
            {},
            "container 'mesh-proxy' port 15000/TCP clashes with container 'app'",
            id="port",
        ),
    ],
)
def test_every_conflict_of_a_required_policy_denies_naming_policy_and_item(
    spec: dict[str, Any], metadata: dict[str, Any], item: str
) -> None:
    subject = pod(annotations={INJECT: "mesh-proxy"}, **metadata, **spec)
    result = run(subject)
    assert result.denial is not None
    assert result.denial.startswith("podgraft: required policy 'mesh-proxy' cannot be applied: ")
    assert item in result.denial
    assert result.patch == []


def test_an_optional_policy_with_a_conflict_leaves_no_stray_items() -> None:
    subject = pod(
        annotations={INJECT: "log-shipper"},
        containers=[APP, {"name": "log-shipper", "image": "mine:1"}],
    )
    result = run(subject)
    assert result.denial is None
    assert result.patch == [], "no env, volume, mount, annotation or status from a policy that was skipped"
    assert result.injected == ()
    assert result.warnings == (
        "podgraft: policy 'log-shipper' not injected: the pod already has a container named 'log-shipper'",
    )
    (decision,) = [d for d in result.decisions if d.policy == "log-shipper"]
    assert not decision.applied


def test_an_optional_conflict_does_not_stop_the_other_policies() -> None:
    subject = pod(
        annotations={INJECT: "log-shipper,mesh-proxy"},
        containers=[APP, {"name": "log-shipper", "image": "mine:1"}],
    )
    result = run(subject)
    injected = patched(subject, result)
    assert result.injected == ("mesh-proxy",)
    assert app_env(injected) == {"HTTP_PROXY": "http://127.0.0.1:15001"}
    recorded = orjson.loads(injected["metadata"]["annotations"][STATUS])
    assert [p["name"] for p in recorded["policies"]] == ["mesh-proxy"]


# --- 3. a policy's helpers mount only the policy's volumes, or the pod's it declares -------------


def test_a_same_named_pod_volume_is_never_adopted() -> None:
    host_etc = {"name": "app-logs", "hostPath": {"path": "/etc"}}
    subject = pod(annotations={INJECT: "log-shipper"}, containers=[APP], volumes=[host_etc])
    result = run(subject)
    assert result.patch == [], "the sidecar must not mount the host's /etc"
    assert result.warnings == (
        "podgraft: policy 'log-shipper' not injected: the pod already has a different volume "
        "named 'app-logs'",
    )
    required = compiled(
        "shipper",
        required=True,
        volumes=[{"name": "app-logs", "emptyDir": {}}],
        sidecars=[
            {
                "name": "shipper",
                "image": "fluent/fluent-bit:3.1.9",
                "volumeMounts": [{"name": "app-logs", "mountPath": "/logs"}],
            }
        ],
    )
    denied = run(
        pod(annotations={INJECT: "shipper"}, containers=[APP], volumes=[host_etc]), policy_set(required)
    )
    assert denied.denial == (
        "podgraft: required policy 'shipper' cannot be applied: the pod already has a different "
        "volume named 'app-logs'"
    )


POD_DATA = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
BACKUP = {
    "name": "backup",
    "image": "restic/restic:0.17.3",
    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
}


def test_a_helper_mounts_a_pod_volume_only_when_the_policy_declares_it() -> None:
    with pytest.raises(
        PolicyError, match=r"sidecars\[0\]\.volumeMounts\[0\] mounts volume 'data', which is neither"
    ):
        compiled("backup", sidecars=[BACKUP])  # refused when loaded: it could never work on any pod
    templated = {**BACKUP, "volumeMounts": [{"name": "{{ 'data' }}", "mountPath": "/data"}]}
    subject = pod(annotations={INJECT: "backup"}, containers=[APP], volumes=[POD_DATA])
    result = run(subject, policy_set(compiled("backup", sidecars=[templated])))
    assert result.patch == []
    assert result.warnings == (
        "podgraft: policy 'backup' not injected: container 'backup' mounts volume 'data', which the policy "
        "neither defines (spec.volumes) nor takes from the pod (spec.podVolumes)",
    )
    declared = policy_set(compiled("backup", podVolumes=["data"], sidecars=[BACKUP]))
    injected = patched(subject, run(subject, declared))
    assert names(injected["spec"]["initContainers"]) == ["backup"]
    assert injected["spec"]["volumes"] == [POD_DATA], "the pod's volume, as the pod defines it"


def test_a_declared_pod_volume_the_pod_lacks_is_a_conflict() -> None:
    declared = policy_set(compiled("backup", required=True, podVolumes=["data"], sidecars=[BACKUP]))
    result = run(pod(annotations={INJECT: "backup"}, containers=[APP]), declared)
    assert result.denial == (
        "podgraft: required policy 'backup' cannot be applied: the pod has no volume 'data' (spec.podVolumes)"
    )


# --- 4. classic sidecars in Jobs and CronJobs ---------------------------------------------------


def job_pod(restart: str = "Never") -> dict[str, Any]:
    return pod(annotations={INJECT: "log-shipper"}, containers=[APP], restartPolicy=restart)


@pytest.mark.parametrize("restart", ["Never", "OnFailure"])
def test_a_job_pod_gets_native_sidecars_under_auto(restart: str) -> None:
    injected = patched(job_pod(restart), run(job_pod(restart)))
    (shipper,) = injected["spec"]["initContainers"]
    assert shipper["restartPolicy"] == "Always"


def test_a_job_pod_on_a_cluster_without_native_sidecars_is_warned_and_not_given_a_classic_one() -> None:
    result = run(job_pod("OnFailure"), config=OLD_CLUSTER)
    assert result.patch == []
    (warning,) = result.warnings
    assert warning.startswith("podgraft: policy 'log-shipper' not injected: sidecar 'log-shipper' ")
    assert "restartPolicy OnFailure" in warning
    assert warning.endswith("; sidecarMode auto: no native sidecars before Kubernetes 1.29")


def test_a_required_sidecar_that_cannot_be_native_in_a_job_pod_denies() -> None:
    required = policy_set(compiled("proxy", required=True, sidecars=[{"name": "proxy", "image": "envoy:1"}]))
    result = run(
        pod(annotations={INJECT: "proxy"}, containers=[APP], restartPolicy="Never"), required, OLD_CLUSTER
    )
    assert result.denial == (
        "podgraft: required policy 'proxy' cannot be applied: sidecar 'proxy' would be a classic container, "
        "which keeps this pod (restartPolicy Never) from completing; default sidecarMode auto: no native "
        "sidecars before Kubernetes 1.29"
    )


def test_an_explicitly_classic_sidecar_in_a_job_pod_is_injected_with_a_warning() -> None:
    classic = policy_set(
        compiled("proxy", sidecarMode="classic", sidecars=[{"name": "proxy", "image": "envoy:1"}])
    )
    subject = pod(annotations={INJECT: "proxy"}, containers=[APP], restartPolicy="OnFailure")
    result = run(subject, classic)
    assert names(patched(subject, result)["spec"]["containers"]) == ["app", "proxy"]
    assert result.warnings == (
        "podgraft: policy 'proxy': sidecar 'proxy' is a classic container (sidecarMode classic): unless it "
        "exits by itself, it keeps this pod (restartPolicy OnFailure) from completing",
    )


def test_the_decision_says_which_sidecar_mode_and_why() -> None:
    native = run(job_pod(), explain=True)
    (decision,) = [d for d in native.decisions if d.policy == "log-shipper"]
    assert decision.reason == (
        "requested by podgraft.io/inject; injected: log-shipper (native sidecar; sidecarMode "
        "auto: the cluster "
        "has native sidecars)"
    )
    classic = run(
        pod(annotations={INJECT: "log-shipper"}, containers=[APP]), config=OLD_CLUSTER, explain=True
    )
    (decision,) = [d for d in classic.decisions if d.policy == "log-shipper"]
    assert decision.reason.endswith(
        "injected: log-shipper (classic sidecar; sidecarMode auto: no native sidecars before Kubernetes 1.29)"
    )


# --- 5. ports of hostNetwork pods are the node's ----------------------------------------------------

EXPORTER = compiled(
    "exporter",
    sidecars=[
        {"name": "exporter", "image": "prom/statsd-exporter:v0.27.1", "ports": [{"containerPort": 8080}]}
    ],
)


def test_a_host_network_port_clash_of_an_optional_policy_is_not_injected() -> None:
    subject = pod(annotations={INJECT: "exporter"}, containers=[APP], hostNetwork=True)
    result = run(subject, policy_set(EXPORTER))
    assert result.patch == []
    assert result.warnings == (
        "podgraft: policy 'exporter' not injected: container 'exporter' port 8080/TCP clashes with container "
        "'app' on the node (the pod uses hostNetwork)",
    )


def test_a_host_port_clash_is_a_node_clash_without_host_network() -> None:
    on_host = {**APP, "ports": [{"containerPort": 8080, "hostPort": 9100}]}
    helper = compiled(
        "node-agent",
        containers=[
            {"name": "agent", "image": "agent:1", "ports": [{"containerPort": 9000, "hostPort": 9100}]}
        ],
    )
    result = run(pod(annotations={INJECT: "node-agent"}, containers=[on_host]), policy_set(helper))
    assert result.patch == []
    assert result.warnings == (
        "podgraft: policy 'node-agent' not injected: container 'agent' hostPort 9100/TCP clashes with "
        "container 'app' on the node",
    )


def test_helper_ports_in_a_host_network_pod_are_named_as_node_ports() -> None:
    subject = pod(
        annotations={INJECT: "exporter"},
        containers=[{"name": "app", "image": "nginx:1.27"}],
        hostNetwork=True,
    )
    result = run(subject, policy_set(EXPORTER))
    assert result.injected == ("exporter",)
    assert result.warnings == (
        "podgraft: policy 'exporter': container 'exporter' listens on the node's port 8080/TCP (the pod uses "
        "hostNetwork): another pod on the node that uses it will clash",
    )


# --- 6. a pod re-created from a copy of an older version ----------------------------------------


def test_a_pod_copied_with_an_older_version_is_updated_with_one_clear_warning() -> None:
    old = variant(SHIPPER, image="fluent/fluent-bit:3.0.7")
    assert old.content_hash != SHIPPER.content_hash
    subject = pod(annotations={INJECT: "log-shipper"}, containers=[APP])
    copied = patched(subject, run(subject, policy_set(old)))
    assert copied["spec"]["initContainers"][0]["image"] == "fluent/fluent-bit:3.0.7"

    result = run(copied)
    assert result.warnings == (
        f"podgraft: policy 'log-shipper': the pod carries version {old.content_hash}, the live one is "
        f"{SHIPPER.content_hash}; updated to the live one",
    )
    updated = patched(copied, result)
    (shipper,) = updated["spec"]["initContainers"]
    assert shipper["image"] == "fluent/fluent-bit:3.1.9"
    recorded = orjson.loads(updated["metadata"]["annotations"][STATUS])
    assert recorded["policies"] == [{"name": "log-shipper", "hash": SHIPPER.content_hash}]
    assert updated == patched(subject, run(subject)), "the same pod as a fresh injection of the live version"
    assert run(updated).patch == []


def test_a_status_the_pod_brings_is_never_left_to_lie() -> None:
    forged = status(("mesh-proxy", MESH.content_hash), containers=("mesh-proxy",))
    subject = pod(annotations={STATUS: forged, "a": "1"}, containers=[APP])
    cleaned = patched(subject, run(subject))
    assert cleaned["metadata"]["annotations"] == {"a": "1"}, "no policy applies to it: nothing is injected"
    opted_out = pod(annotations={STATUS: forged, INJECT: "false"}, containers=[APP])
    assert run(opted_out).patch == [], "a pod that opts out is not touched at all"
