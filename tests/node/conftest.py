"""Session fixture of the node tier: a real one-node cluster (`hack.cluster.LocalCluster`: etcd and a
kube-apiserver with ServiceAccount admission and token issuance on, controller-manager, scheduler,
containerd, kubelet, kube-proxy), Podgraft's own image built from the Dockerfile and imported into
the node, and the chart installed with `helm install` (its defaults except the image, one policy
in `policies.definitions` and `events.level: all`, which test_events.py needs for `Injected`):
Podgraft runs in the cluster, two replicas behind its Service, which is how the apiserver calls it;
its pods reach the apiserver with their projected token and the chart's RBAC only. One cluster and
one release for the whole tier; every test works in namespaces of its own, and a test that changes
the release (a value, the replicas, the webhook configuration) puts it back as it found it.
Everything is stopped, and the host cleaned, whatever happens. `node_cluster` is the same for a
script (tests/node/capture_rollout.py)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from hack.cluster.cluster import LocalCluster
from hack.cluster.host import exclusive_node
from hack.cluster.node import Images, prepare_images
from hack.cluster.release import Release, helm_binary, image_values
from tests.e2e.kube import INJECT, INJECTION_LABEL, PODGRAFT_NAMESPACE, Kube, eventually, injected, pod

from .load import FIGURES
from .workloads import Kubectl, app_container, deployment, node_policies, pod_spec

REQUIRE_NODE = "PODGRAFT_REQUIRE_NODE"  # set by .ci/run: a run that cannot run this tier fails
READY_TIMEOUT = 120.0  # a bound for pods to start on a loaded 2-core machine, not a measurement
WEBHOOK_SELECTOR = "app.kubernetes.io/instance=podgraft,app.kubernetes.io/component=webhook"
# The policy shipped in the chart's values (templates/policies.yaml): stamps the app containers.
CHART_POLICY = "chart-stamp"
# Every outcome becomes an Event, the Normal `Injected` too (the chart's default is `warnings`).
EVENTS_ALL = {"events": {"level": "all"}}
TIMINGS: dict[str, Any] = {}


def chart_policies(stamp: str) -> dict[str, Any]:
    return {"policies": {"definitions": {CHART_POLICY: {"env": [{"name": "CHART_STAMP", "value": stamp}]}}}}


@dataclass
class Cluster:
    """What the node tests get: the cluster, the admin client, the real kubectl, and the release."""

    local: LocalCluster
    kube: Kube
    images: Images
    kubectl: Kubectl
    release: Release
    policy_namespace: str = PODGRAFT_NAMESPACE  # the release namespace: watched for policy ConfigMaps
    install_values: dict[str, Any] = field(default_factory=dict)

    @property
    def core(self) -> client.CoreV1Api:
        return self.kube.core

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.kube.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.kube.api)

    @property
    def image(self) -> str:
        return self.images.busybox

    def namespace(self, prefix: str, *, opted_in: bool = True, **labels: str) -> str:
        """A fresh namespace that opts in to injection (unless not `opted_in`), with `labels` besides;
        returned once its `default` ServiceAccount exists (the ServiceAccount admission plugin
        refuses pods before)."""
        name = self.kube.namespace(prefix, {INJECTION_LABEL: "enabled", **labels} if opted_in else labels)
        eventually(
            lambda: self.core.read_namespaced_service_account("default", name),
            timeout=30,
            what=f"ServiceAccount {name}/default",
        )
        return name

    def pods(self, namespace: str, app: str) -> list[dict[str, Any]]:
        """The pods labelled app=`app`, as the raw JSON the apiserver stored."""
        return self.select_pods(namespace, f"app={app}")

    def select_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False)
        return list(json.loads(response.data)["items"])

    def one_pod(self, namespace: str, app: str) -> dict[str, Any]:
        pods = self.pods(namespace, app)
        assert len(pods) == 1, f"{len(pods)} pods of {namespace}/{app}, want 1"
        return pods[0]

    def wait_pods(
        self, namespace: str, app: str, *, count: int, check: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Wait until exactly `count` live pods of `app` exist and `check` (default: Ready) passes on each."""
        return self.wait_selected(namespace, f"app={app}", count=count, check=check)

    def wait_selected(
        self,
        namespace: str,
        selector: str,
        *,
        count: int,
        check: Callable[[dict[str, Any]], None] | None = None,
        timeout: float = READY_TIMEOUT,
    ) -> list[dict[str, Any]]:
        def settled() -> list[dict[str, Any]]:
            pods = [
                p for p in self.select_pods(namespace, selector) if not p["metadata"].get("deletionTimestamp")
            ]
            assert len(pods) == count, f"{len(pods)} pods of {selector}, want {count}"
            for item in pods:
                (check or assert_ready)(item)
            return pods

        return eventually(
            settled, timeout=timeout, interval=0.5, what=f"{count} pods of {namespace}/{selector}"
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

    # --- Podgraft, as installed by the chart ------------------------------------------------------

    def webhook_pods(self) -> list[dict[str, Any]]:
        return self.select_pods(self.release.namespace, WEBHOOK_SELECTOR)

    def wait_webhook(self, count: int = 2, timeout: float = READY_TIMEOUT) -> list[dict[str, Any]]:
        """Wait until exactly `count` webhook pods are live and Ready."""
        return self.wait_selected(self.release.namespace, WEBHOOK_SELECTOR, count=count, timeout=timeout)

    def podgraft_logs(self) -> list[dict[str, Any]]:
        """Every JSON log line of the webhook pods there are now (`kubectl logs`, container podgraft)."""
        return [line for lines in self.replica_logs().values() for line in lines]

    def replica_logs(self) -> dict[str, list[dict[str, Any]]]:
        """The JSON log lines of each webhook pod there is now, by pod name."""
        found: dict[str, list[dict[str, Any]]] = {}
        for item in self.webhook_pods():
            name = item["metadata"]["name"]
            with contextlib.suppress(client.exceptions.ApiException):
                text = self.logs(self.release.namespace, name, "podgraft")
                found[name] = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return found

    def webhook_replicas(self) -> int:
        """The replicas the release's Deployment asks for now."""
        deployment = self.apps.read_namespaced_deployment(self.release.fullname, self.release.namespace)
        return int(deployment.spec.replicas)

    def scale_webhook(self, replicas: int) -> None:
        self.kubectl.run(
            "scale",
            f"--namespace={self.release.namespace}",
            f"deployment/{self.release.fullname}",
            f"--replicas={replicas}",
        )

    def failure_policy(self) -> str:
        """The failurePolicy of the release's webhook, as registered in the cluster."""
        (webhook,) = self.kube.webhook_configuration(self.release.fullname)["webhooks"]
        return str(webhook["failurePolicy"])

    def set_failure_policy(self, failure_policy: str) -> None:
        """Patch the release's webhook configuration in the cluster to `failure_policy`."""
        name = self.release.fullname
        webhooks = self.kube.webhook_configuration(name)["webhooks"]
        patch = [
            {"op": "replace", "path": f"/webhooks/{i}/failurePolicy", "value": failure_policy}
            for i in range(len(webhooks))
        ]
        self.kube.admission.patch_mutating_webhook_configuration(
            name, patch, _content_type="application/json-patch+json"
        )

    @contextlib.contextmanager
    def podgraft_down(self, failure_policy: str) -> Iterator[None]:
        """Podgraft stopped (its Deployment scaled to zero: the Service has no endpoint, and no pod
        is left, not even one still serving through its drain) under `failure_policy`, for the
        length of the `with`; then the failurePolicy and the replicas it had, all Ready again."""
        before = self.failure_policy()
        replicas = self.webhook_replicas()
        self.set_failure_policy(failure_policy)
        try:
            self.scale_webhook(0)

            def gone() -> None:
                assert self.webhook_pods() == [], "webhook pods left (terminating)"

            eventually(gone, timeout=READY_TIMEOUT, interval=0.5, what="no webhook pod left")
            yield
        finally:
            try:
                self.set_failure_policy(before)
            finally:
                self.scale_webhook(replicas)
                self.wait_webhook(count=replicas)

    def served(self, namespace: str, policy: str = CHART_POLICY) -> dict[str, Any]:
        """A dry-run pod asking for `policy`, as Podgraft admits it now (raises while it cannot)."""
        body = self.kube.create_pod(
            namespace, pod(generate_name="probe-", annotations={INJECT: policy}), dry_run=True
        ).body
        assert injected(body) == [policy], body["metadata"]
        return body


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


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    message = "the node tier runs containerd and a kubelet: it needs root"
    if os.environ.get(REQUIRE_NODE):
        pytest.fail(f"{message} ({REQUIRE_NODE} is set: this run must not skip it)", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def node_cluster(workdir: Path, timings: dict[str, Any], holder: str = "the node tier") -> Iterator[Cluster]:
    """The tier's cluster with the release installed and called by the apiserver, for the length of
    the `with` (the node lock held); `timings` gets the figures of the summary line."""
    started = time.monotonic()
    images = prepare_images()
    helm = helm_binary()
    timings["images"] = time.monotonic() - started
    with exclusive_node(holder), contextlib.ExitStack() as stack:
        local = LocalCluster.start(workdir, images=images)
        stack.callback(local.stop)
        timings.update(
            kubelet=local.node.kubelet_version,
            runtime=local.node.runtime_version,
            build=local.plane.binaries.build_seconds,
            cluster=local.start_seconds,
        )
        kube = Kube(local.plane.admin_kubeconfig)
        stack.callback(kube.close)
        kube.core.create_namespace({"metadata": {"name": PODGRAFT_NAMESPACE}})
        kube.put_configmap(PODGRAFT_NAMESPACE, "node-policies", node_policies(images.busybox))
        release = Release(helm, local.plane.admin_kubeconfig, workdir / "helm")
        values = image_values(images.podgraft) | chart_policies("v1") | EVENTS_ALL
        installing = time.monotonic()
        release.install(values)
        timings["install"] = time.monotonic() - installing
        env = Cluster(
            local,
            kube,
            images,
            Kubectl(local.plane.binaries["kubectl"], local.plane.admin_kubeconfig),
            release,
            install_values=values,
        )
        warmup = env.namespace("warmup")
        eventually(lambda: env.served(warmup), timeout=60, what="the apiserver calls Podgraft")
        timings["total"] = time.monotonic() - started
        yield env


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _require_root()
    with node_cluster(tmp_path_factory.mktemp("node"), TIMINGS) as env:
        yield env


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for figures in FIGURES:
        terminalreporter.write_line(f"node load: {json.dumps(figures)}")
    if "total" in TIMINGS:
        terminalreporter.write_line(
            "node: kubelet {kubelet}, runtime {runtime}; images (setup.sh, image/build.sh) {images:.1f}s, "
            "build/cache check {build:.1f}s, cluster up in {cluster:.1f}s, helm install (2 replicas Ready) "
            "{install:.1f}s, session setup {total:.1f}s".format(**TIMINGS)
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing node test shows the end of every component's log, and the webhook pods' logs."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, Cluster):
        for process in cluster.local.processes:
            report.sections.append((f"{process.name} log (tail)", process.tail(40)))
        with contextlib.suppress(Exception):
            for webhook in cluster.webhook_pods():
                name = webhook["metadata"]["name"]
                text = cluster.logs(cluster.release.namespace, name, "podgraft")
                report.sections.append((f"{name} log (tail)", "\n".join(text.splitlines()[-30:])))
