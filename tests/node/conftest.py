"""Session fixture of the node tier: the e2e stack (etcd, kube-apiserver, Podgraft in configmaps mode
behind the chart's webhook configuration) plus a real node (`node.Node`): controllers, scheduler,
containerd, kubelet and kube-proxy. One cluster for the whole tier; every test works in namespaces
of its own. Everything is stopped, and the node's state removed, whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from hack.cluster.host import exclusive_node
from hack.cluster.node import NODE_BINARIES, Images, Node, prepare_images
from tests.e2e.kube import INJECTION_LABEL, eventually
from tests.e2e.stack import E2E, start_stack

from .workloads import Kubectl, app_container, deployment, node_policies, pod_spec

POLICY_NAMESPACE = "node-policies"
READY_TIMEOUT = 120.0  # a bound for pods to start on a loaded 2-core machine, not a measurement
TIMINGS: dict[str, Any] = {}


@dataclass
class Cluster:
    """What the node tests get: the e2e stack, the node, the real kubectl and typed API clients."""

    env: E2E
    node: Node
    images: Images
    kubectl: Kubectl

    @property
    def core(self) -> client.CoreV1Api:
        return self.env.kube.core

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.env.kube.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.env.kube.api)

    @property
    def image(self) -> str:
        return self.images.busybox

    def namespace(self, prefix: str, **labels: str) -> str:
        """A fresh namespace that opts in to injection, with `labels` besides."""
        return self.env.kube.namespace(prefix, {INJECTION_LABEL: "enabled", **labels})

    def pods(self, namespace: str, app: str) -> list[dict[str, Any]]:
        """The pods labelled app=`app`, as the raw JSON the apiserver stored."""
        response = self.core.list_namespaced_pod(
            namespace, label_selector=f"app={app}", _preload_content=False
        )
        return list(json.loads(response.data)["items"])

    def one_pod(self, namespace: str, app: str) -> dict[str, Any]:
        pods = self.pods(namespace, app)
        assert len(pods) == 1, f"{len(pods)} pods of {namespace}/{app}, want 1"
        return pods[0]

    def wait_pods(
        self, namespace: str, app: str, *, count: int, check: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Wait until exactly `count` live pods of `app` exist and `check` (default: Ready) passes on each."""

        def settled() -> list[dict[str, Any]]:
            pods = [p for p in self.pods(namespace, app) if not p["metadata"].get("deletionTimestamp")]
            assert len(pods) == count, f"{len(pods)} pods of {app}, want {count}"
            for item in pods:
                (check or assert_ready)(item)
            return pods

        return eventually(
            settled, timeout=READY_TIMEOUT, interval=0.5, what=f"{count} pods of {namespace}/{app}"
        )

    def logging_app(self, namespace: str, app: str) -> str:
        """A one-replica Deployment with the log-shipper policy; the name of its Ready pod."""
        spec = pod_spec([app_container(self.image)])
        self.create(namespace, deployment(app, replicas=1, spec=spec, inject="log-shipper"))
        (pod,) = self.wait_pods(namespace, app, count=1)
        return str(pod["metadata"]["name"])

    def logs(self, namespace: str, pod: str, container: str) -> str:
        return str(self.core.read_namespaced_pod_log(pod, namespace, container=container))

    def create(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        """Create a Deployment, Job or Service from its manifest through the typed clients."""
        body = dict(manifest)
        kind = body["kind"]
        if kind == "Deployment":
            self.apps.create_namespaced_deployment(namespace, body)
        elif kind == "Job":
            self.batch.create_namespaced_job(namespace, body)
        elif kind == "Service":
            self.core.create_namespaced_service(namespace, body)
        else:
            raise ValueError(f"the node harness does not create {kind}")


def statuses(pod: Mapping[str, Any], kind: str = "containerStatuses") -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in pod.get("status", {}).get(kind) or []}


def assert_ready(pod: Mapping[str, Any]) -> None:
    """The pod is Ready and every container and native sidecar is running and ready."""
    conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions") or []}
    assert conditions.get("Ready") == "True", f"{pod['metadata']['name']} not Ready: {conditions}"
    for kind in ("containerStatuses", "initContainerStatuses"):
        for name, status in statuses(pod, kind).items():
            if kind == "initContainerStatuses" and "terminated" in status["state"]:
                continue  # a run-to-completion init container that finished
            assert "running" in status["state"], f"{kind} {name}: {status['state']}"
            assert status["ready"], f"{kind} {name} is not ready"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("the node tier runs containerd and a kubelet: it needs root")
    started = time.monotonic()
    images = prepare_images()
    TIMINGS["images"] = time.monotonic() - started
    workdir = tmp_path_factory.mktemp("node")
    with exclusive_node(), contextlib.ExitStack() as stack:
        env = start_stack(
            stack,
            workdir,
            policies=node_policies(images.busybox),
            chart_policies={},
            policy_namespace=POLICY_NAMESPACE,
            warmup_policy="log-shipper",
            timings=TIMINGS,
            binaries=NODE_BINARIES,
        )
        node = Node.start(env.plane, images, workdir=workdir)
        stack.callback(node.stop)
        TIMINGS.update(node=node.start_seconds, total=time.monotonic() - started)
        yield Cluster(env, node, images, Kubectl(env.plane.binaries["kubectl"], env.plane.admin_kubeconfig))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if "node" in TIMINGS:
        terminalreporter.write_line(
            "node: kubelet {kubernetes}; hack/node/setup.sh {images:.1f}s, build/cache check "
            "{build:.1f}s, control plane {controlplane:.1f}s, podgraft {podgraft:.1f}s, node Ready in "
            "{node:.1f}s, session setup {total:.1f}s".format(**TIMINGS)
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing node test shows the end of every component's log."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, Cluster):
        for process in [cluster.env.podgraft.process, *cluster.env.plane.processes, *cluster.node.processes]:
            report.sections.append((f"{process.name} log (tail)", process.tail(40)))
