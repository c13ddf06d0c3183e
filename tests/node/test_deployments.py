"""Issue 10, scenarios 1, 3 and 7: pods made by the real ReplicaSet controller are injected and run;
the injected log shipper reads what the app writes; a policy rollout reaches only new pods."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.kube import INJECT, STATUS, container, env_of, eventually, injected, names

from .conftest import Cluster
from .workloads import app_container, deployment, pod_spec, policy


def _admissions(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """The webhook pods' JSON log lines (`kubectl logs`) for Pod admissions in `namespace`."""
    lines = cluster.podgraft_logs()
    return [line for line in lines if line.get("msg") == "admission" and line.get("namespace") == namespace]


def _hash(pod: dict[str, Any], name: str) -> str:
    status = json.loads(pod["metadata"]["annotations"][STATUS])
    return str(next(p["hash"] for p in status["policies"] if p["name"] == name))


def test_deployment_pods_from_the_replicaset_controller_are_injected_and_ready_and_so_is_a_scale_up(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("deploy")
    cluster.create(
        ns, deployment("web", replicas=3, spec=pod_spec([app_container(cluster.image)]), inject="log-shipper")
    )
    pods = cluster.wait_pods(ns, "web", count=3)
    for pod in pods:
        assert pod["metadata"]["generateName"].startswith("web-")
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert injected(pod) == ["log-shipper"]
        assert names(pod["spec"]["initContainers"]) == ["log-shipper"]
        assert env_of(container(pod, "app"))["LOG_FILE"] == "/var/log/app/app.log"
    # what reached Podgraft: pods with no name yet, only the generateName prefix
    admissions = _admissions(cluster, ns)
    assert len(admissions) >= 3
    assert all(a["pod"].startswith("web-") and a["pod"].endswith("-*") for a in admissions), admissions
    assert all(a["injected"] == ["log-shipper"] for a in admissions), admissions

    cluster.kubectl.run("scale", f"--namespace={ns}", "deployment/web", "--replicas=5")
    scaled = cluster.wait_pods(ns, "web", count=5)
    assert all(injected(pod) == ["log-shipper"] for pod in scaled)
    assert {p["metadata"]["name"] for p in pods} < {p["metadata"]["name"] for p in scaled}


def test_injected_log_shipper_reads_the_line_the_app_wrote_into_the_shared_volume(cluster: Cluster) -> None:
    ns = cluster.namespace("shared")
    name = cluster.logging_app(ns, "writer")

    def shipped() -> str:
        text = cluster.logs(ns, name, "log-shipper")
        assert f"app {name} version none" in text, text
        return text

    eventually(shipped, timeout=60, what="the log shipper's output (kubectl logs -c log-shipper)")


def test_policy_rollout_gives_restarted_pods_the_new_version_and_leaves_old_pods_alone(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("rollout")
    configmap = "rollout-policy"

    def publish(version: str) -> None:
        versioned = policy("versioned", env=[{"name": "VERSION", "value": version}])
        cluster.kube.put_configmap(cluster.policy_namespace, configmap, {"versioned.yaml": versioned})

    spec = pod_spec([app_container(cluster.image)])

    def served_hash() -> str:
        probe = cluster.kube.create_pod(ns, _probe(spec), dry_run=True).body
        assert injected(probe) == ["versioned"], probe["metadata"]
        return _hash(probe, "versioned")

    publish("v1")
    old_hash = eventually(served_hash, timeout=30, what="Podgraft serves the policy")
    cluster.create(ns, deployment("api", replicas=2, spec=spec, inject="versioned"))
    old = cluster.wait_pods(ns, "api", count=2)
    assert {_hash(p, "versioned") for p in old} == {old_hash}

    publish("v2")

    def edited() -> str:
        served = served_hash()
        assert served != old_hash, "still the first version"
        return served

    new_hash = eventually(edited, timeout=30, what="Podgraft serves the edited policy")
    for pod in old:  # a policy edit does not touch running pods
        assert _hash(cluster.kube.read_pod(ns, pod["metadata"]["name"]), "versioned") == old_hash

    cluster.kubectl.run("rollout", "restart", f"--namespace={ns}", "deployment/api")
    cluster.kubectl.run("rollout", "status", f"--namespace={ns}", "deployment/api", "--timeout=180s")
    new = cluster.wait_pods(ns, "api", count=2)
    assert not {p["metadata"]["name"] for p in new} & {p["metadata"]["name"] for p in old}
    assert {_hash(p, "versioned") for p in new} == {new_hash}
    for pod in new:  # the running app sees the new version
        name = pod["metadata"]["name"]
        assert cluster.logs(ns, name, "app").strip() == f"app {name} version v2"


def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    """A dry-run pod asking for the `versioned` policy: shows what Podgraft would inject now."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "probe-",
            "labels": {"app": "probe"},
            "annotations": {INJECT: "versioned"},
        },
        "spec": spec,
    }
