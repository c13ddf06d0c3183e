"""Issue 10, scenarios 2, 4 and 5: a native sidecar serves the pod's init containers, Jobs with
injected sidecars complete, and an injected init container holds the app until a Service answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.kube import INJECT, container, eventually, injected, names

from .conftest import Cluster, statuses
from .workloads import PROXY_PORT, app_container, deployment, job, pod_spec, service

WORK = {"name": "work", "mountPath": "/work"}


def _conditions(body: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in body.get("status", {}).get("conditions") or []}


def test_native_sidecar_runs_before_the_first_init_container_and_the_app_starts_after_both(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("order")
    fetch = {  # no retry: it succeeds at its first run only if the sidecar already answers on localhost
        "name": "fetch",
        "image": cluster.image,
        "command": [
            "sh",
            "-c",
            f"wget -q -O /work/from-proxy http://127.0.0.1:{PROXY_PORT}/ && cat /work/from-proxy",
        ],
        "volumeMounts": [WORK],
    }
    app = {
        "name": "app",
        "image": cluster.image,
        "command": ["sh", "-c", "cat /work/from-proxy && exec sleep 2147483647"],
        "volumeMounts": [WORK],
    }
    spec = pod_spec([app], initContainers=[fetch], volumes=[{"name": "work", "emptyDir": {}}])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ordered", "labels": {"app": "ordered"}, "annotations": {INJECT: "local-proxy"}},
        "spec": spec,
    }
    cluster.kube.create_pod(ns, pod)
    (running,) = cluster.wait_pods(ns, "ordered", count=1)

    assert injected(running) == ["local-proxy"]
    assert names(running["spec"]["initContainers"]) == ["proxy", "fetch"]
    assert container(running, "proxy", kind="initContainers")["restartPolicy"] == "Always"
    inits = statuses(running, "initContainerStatuses")
    assert inits["fetch"]["restartCount"] == 0, "the init container failed at least once"
    assert inits["fetch"]["state"]["terminated"]["exitCode"] == 0
    assert cluster.logs(ns, "ordered", "fetch").strip() == "proxy-ready"
    assert cluster.logs(ns, "ordered", "app").strip() == "proxy-ready"  # read what the init container wrote
    # the kubelet's own record of the order (second resolution, so ties are allowed)
    proxy_started = inits["proxy"]["state"]["running"]["startedAt"]
    fetch = inits["fetch"]["state"]["terminated"]
    app_started = statuses(running)["app"]["state"]["running"]["startedAt"]
    assert proxy_started <= fetch["startedAt"] <= fetch["finishedAt"] <= app_started


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param("job-native", id="sidecarMode-native"),
        pytest.param("job-auto", id="classic-style-policy-under-sidecarMode-auto"),
    ],
)
def test_job_with_an_injected_sidecar_completes_and_the_sidecar_is_native(
    cluster: Cluster, policy: str
) -> None:
    ns = cluster.namespace("job")
    cluster.create(ns, job("batch", image=cluster.image, inject=policy))

    def complete() -> dict[str, Any]:
        body = cluster.batch.read_namespaced_job("batch", ns, _preload_content=False)
        status = json.loads(body.data)
        assert _conditions(status).get("Complete") == "True", status.get("status")
        return dict(status)

    done = eventually(complete, timeout=120, interval=0.5, what="the Job completes")
    assert done["status"]["succeeded"] == 1
    (pod,) = cluster.pods(ns, "batch")
    assert injected(pod) == [policy]
    assert names(pod["spec"]["containers"]) == ["work"]
    assert container(pod, "helper", kind="initContainers")["restartPolicy"] == "Always"
    assert pod["status"]["phase"] == "Succeeded"
    assert statuses(pod)["work"]["state"]["terminated"]["exitCode"] == 0
    assert "terminated" in statuses(pod, "initContainerStatuses")["helper"]["state"]


def test_a_classic_sidecar_keeps_a_job_pod_running_after_its_work_is_done(cluster: Cluster) -> None:
    """What `sidecarMode: auto` avoids on Kubernetes >= 1.29, and what it gives on older clusters."""
    ns = cluster.namespace("job-classic")
    cluster.create(ns, job("batch", image=cluster.image, inject="job-classic"))

    def work_done_helper_running() -> dict[str, Any]:
        pod = cluster.one_pod(ns, "batch")
        current = statuses(pod)
        assert current.get("work", {}).get("state", {}).get("terminated", {}).get("exitCode") == 0, current
        assert "running" in current["helper"]["state"], current["helper"]
        return pod

    pod = eventually(work_done_helper_running, timeout=120, interval=0.5, what="work done, helper running")
    assert names(pod["spec"]["containers"]) == ["work", "helper"]
    assert pod["status"]["phase"] == "Running"
    status = cluster.batch.read_namespaced_job("batch", ns).status
    assert not status.succeeded
    assert "Complete" not in {c.type for c in status.conditions or []}
    cluster.batch.delete_namespaced_job("batch", ns, propagation_policy="Background")


def test_injected_init_container_holds_the_app_until_the_service_answers(cluster: Cluster) -> None:
    ns = cluster.namespace("deps")
    cluster.create(ns, service("backend"))  # first: the kubelet passes BACKEND_SERVICE_HOST/_PORT to pods
    own = {"name": "own-init", "image": cluster.image, "command": ["sh", "-c", "echo own init ran"]}
    spec = pod_spec([app_container(cluster.image)], initContainers=[own])
    cluster.create(ns, deployment("frontend", replicas=1, spec=spec, inject="wait-for-service"))

    def blocked() -> dict[str, Any]:
        pod = cluster.one_pod(ns, "frontend")
        inits = statuses(pod, "initContainerStatuses")
        assert "running" in inits.get("wait-for-service", {}).get("state", {}), inits
        assert "waiting for backend" in cluster.logs(ns, pod["metadata"]["name"], "wait-for-service")
        return pod

    pod = eventually(blocked, timeout=120, interval=0.5, what="the injected init container waits")
    assert names(pod["spec"]["initContainers"]) == ["wait-for-service", "own-init"]  # policy position: first
    assert "waiting" in statuses(pod, "initContainerStatuses")["own-init"]["state"]
    assert "waiting" in statuses(pod)["app"]["state"]
    assert _conditions(pod).get("Ready") == "False"

    cluster.create(
        ns, deployment("backend", replicas=1, spec=pod_spec([app_container(cluster.image)]), inject=None)
    )
    (ready,) = cluster.wait_pods(ns, "frontend", count=1)
    name = ready["metadata"]["name"]
    assert cluster.logs(ns, name, "wait-for-service").strip().endswith("backend answered")
    assert statuses(ready, "initContainerStatuses")["own-init"]["state"]["terminated"]["exitCode"] == 0
    assert cluster.logs(ns, name, "own-init").strip() == "own init ran"
