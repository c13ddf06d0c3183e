"""Session fixture of the e2e tier: a real etcd + kube-apiserver, Podgraft in configmaps mode, and the
Helm chart's webhook configuration pointing at it.

Order: Podgraft's certificates -> `helm template` (webhook + RBAC) -> control plane, with a static
token for the chart's ServiceAccount -> namespaces, the chart's RBAC, policy ConfigMaps -> Podgraft
(`python -m app.cli serve --policy-source configmaps`) until /readyz -> the webhook configuration,
with `clientConfig.url` instead of the Service -> one pod injected through the API (the apiserver
has picked the configuration up). Everything is torn down in reverse order, whatever happens.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.certs import Bundle, generate_bundle, service_hostnames, write_bundle

from .controlplane import REPO, ControlPlane
from .harness import (
    INJECT,
    INJECTION_LABEL,
    PODGRAFT_NAMESPACE,
    ChartObjects,
    Kube,
    Podgraft,
    eventually,
    injected,
    pod,
    render_chart,
    with_url,
)

POLICY_NAMESPACE = "podgraft-policies"  # a second watched namespace, besides Podgraft's own

E2E_POLICIES = {
    "team-a-only.yaml": """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: team-a-only}
spec:
  namespaceSelector: {matchLabels: {team: a}}
  env: [{name: TEAM, value: a}]
""",
    "needs-image.yaml": """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: needs-image}
spec:
  required: true
  initContainers:
    - name: setup
      image: "{{ pod.annotations['e2e.podgraft.io/setup-image'] }}"
""",
    "classic-helper.yaml": """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: classic-helper}
spec:
  sidecarMode: classic
  volumes: [{name: scratch, emptyDir: {}}]
  volumeMounts: [{name: scratch, mountPath: /scratch}]
  sidecars:
    - name: helper
      image: busybox:1.36
      command: [sh, -c, "sleep infinity"]
      volumeMounts: [{name: scratch, mountPath: /scratch}]
""",
}

TIMINGS: dict[str, Any] = {}


@dataclass
class E2E:
    """What the tests get: the admin client, Podgraft, and the names and files behind them."""

    kube: Kube
    podgraft: Podgraft
    plane: ControlPlane
    chart: ChartObjects
    bundle: Bundle
    workdir: Path
    webhook_name: str
    podgraft_kubeconfig: Path
    policy_namespace: str = POLICY_NAMESPACE

    def opted_in(self, prefix: str = "on", **labels: str) -> str:
        return self.kube.namespace(prefix, {INJECTION_LABEL: "enabled", **labels})


# Installed as the chart renders them from `policies.definitions` (templates/policies.yaml).
CHART_POLICIES = {
    "chart-defaults": {"env": [{"name": "FROM_CHART", "value": "{{ pod.namespace }}"}]},
}


def example_policies() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((REPO / "examples" / "policies").glob("*.yaml"))}


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("e2e")
    bundle = generate_bundle(service_hostnames(f"pg-{PODGRAFT_NAMESPACE}", PODGRAFT_NAMESPACE), days=2)
    write_bundle(bundle, workdir / "podgraft-certs")
    chart = render_chart(
        ca_bundle=bundle.ca_bundle(), watch_namespaces=[POLICY_NAMESPACE], policies=CHART_POLICIES
    )
    token = secrets.token_urlsafe(24)
    sa_namespace = chart.service_account[0]
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"]

    with contextlib.ExitStack() as stack:
        plane = ControlPlane.start(workdir / "controlplane", extra_users=[(chart.user(), token, groups)])
        stack.callback(plane.stop)
        TIMINGS.update(
            kubernetes=plane.version, build=plane.binaries.build_seconds, controlplane=plane.start_seconds
        )
        kube = Kube(plane.admin_kubeconfig)
        stack.callback(kube.close)
        for namespace in (PODGRAFT_NAMESPACE, POLICY_NAMESPACE):
            kube.core.create_namespace({"metadata": {"name": namespace}})
        kube.create_objects(chart.rbac)
        kube.create_objects(chart.policies)  # policies shipped in the chart's values
        kube.put_configmap(PODGRAFT_NAMESPACE, "podgraft-examples", example_policies())
        kube.put_configmap(PODGRAFT_NAMESPACE, "e2e-policies", E2E_POLICIES)

        podgraft_started = time.monotonic()
        podgraft_kubeconfig = plane.kubeconfig_for(chart.user(), token, "podgraft.kubeconfig")
        podgraft = Podgraft.start(
            workdir=workdir,
            kubeconfig=podgraft_kubeconfig,
            certs=workdir / "podgraft-certs",
            namespace=PODGRAFT_NAMESPACE,
            policy_namespaces=[PODGRAFT_NAMESPACE, POLICY_NAMESPACE],
        )
        stack.callback(podgraft.stop)
        TIMINGS["podgraft"] = time.monotonic() - podgraft_started

        webhook = with_url(chart.webhook, podgraft.url)
        kube.put_webhook(webhook)
        env = E2E(
            kube, podgraft, plane, chart, bundle, workdir, webhook["metadata"]["name"], podgraft_kubeconfig
        )
        warmup = env.opted_in("warmup")

        def first_injection() -> None:
            body = kube.create_pod(
                warmup, pod(name="warmup", annotations={INJECT: "wait-for-db"}), dry_run=True
            )
            assert injected(body.body) == ["wait-for-db"], body.body["metadata"]

        eventually(first_injection, timeout=30, what="the apiserver calls Podgraft")
        TIMINGS["setup"] = time.monotonic() - started
        yield env


@pytest.fixture
def kube(e2e: E2E) -> Kube:
    return e2e.kube


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.write_line(
            "e2e: kube-apiserver {kubernetes}; build/cache check {build:.1f}s, control plane up in "
            "{controlplane:.1f}s, podgraft ready in {podgraft:.1f}s, session setup {setup:.1f}s".format(
                **{"podgraft": 0.0, "setup": 0.0, **TIMINGS}
            )
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing e2e test shows the end of Podgraft's and the apiserver's logs."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    env = getattr(item, "funcargs", {}).get("e2e")
    if report.failed and isinstance(env, E2E):
        for process in [env.podgraft.process, *env.plane.processes]:
            report.sections.append((f"{process.name} log (tail)", process.tail(60)))
