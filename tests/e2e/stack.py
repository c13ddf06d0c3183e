"""The whole e2e stack, in order: Podgraft's certificates, the chart rendered, the control plane (with a
token for the chart's ServiceAccount), namespaces, the chart's RBAC and policy ConfigMaps, Podgraft in
configmaps mode, its webhook configuration, and one pod injected through the API. `E2E` is what the
tests get; the node tier starts the same stack beside its node."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from app.certs import Bundle, generate_bundle, service_hostnames, write_bundle
from hack.cluster.controlplane import CONTROL_PLANE, ControlPlane

from .chart import ChartObjects, render_chart
from .kube import INJECT, INJECTION_LABEL, PODGRAFT_NAMESPACE, Kube, eventually, injected, pod
from .server import Podgraft
from .webhooks import with_url


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
    policy_namespace: str

    def opted_in(self, prefix: str = "on", **labels: str) -> str:
        return self.kube.namespace(prefix, {INJECTION_LABEL: "enabled", **labels})


def start_stack(
    stack: contextlib.ExitStack,
    workdir: Path,
    *,
    policies: Mapping[str, str],
    chart_policies: Mapping[str, Any],
    policy_namespace: str,
    warmup_policy: str,
    timings: dict[str, Any],
    binaries: Sequence[str] = CONTROL_PLANE,
    service_accounts: bool = False,
) -> E2E:
    """Podgraft's certificates -> `helm template` (webhook + RBAC) -> control plane, with a static
    token for the chart's ServiceAccount -> namespaces, the chart's RBAC and policy ConfigMaps ->
    Podgraft in configmaps mode until /readyz -> the webhook configuration with `clientConfig.url`
    -> one pod injected through the API. `stack` tears all of it down in reverse order.

    `policies` are policy files put in one ConfigMap in Podgraft's namespace; `warmup_policy` is one
    of them that injects into any pod that asks for it."""
    started = time.monotonic()
    bundle = generate_bundle(service_hostnames(f"pg-{PODGRAFT_NAMESPACE}", PODGRAFT_NAMESPACE), days=2)
    write_bundle(bundle, workdir / "podgraft-certs")
    chart = render_chart(
        ca_bundle=bundle.ca_bundle(), watch_namespaces=[policy_namespace], policies=chart_policies
    )
    token = secrets.token_urlsafe(24)
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{chart.service_account[0]}"]
    plane = ControlPlane.start(
        workdir / "controlplane",
        extra_users=[(chart.user(), token, groups)],
        binaries=binaries,
        service_accounts=service_accounts,
    )
    stack.callback(plane.stop)
    timings.update(
        kubernetes=plane.version, build=plane.binaries.build_seconds, controlplane=plane.start_seconds
    )
    kube = Kube(plane.admin_kubeconfig)
    stack.callback(kube.close)
    for namespace in (PODGRAFT_NAMESPACE, policy_namespace):
        kube.core.create_namespace({"metadata": {"name": namespace}})
    kube.create_objects(chart.rbac)
    kube.create_objects(chart.policies)  # policies shipped in the chart's values
    kube.put_configmap(PODGRAFT_NAMESPACE, "podgraft-policies", policies)

    podgraft_started = time.monotonic()
    podgraft_kubeconfig = plane.kubeconfig_for(chart.user(), token, "podgraft.kubeconfig")
    podgraft = Podgraft.start(
        workdir=workdir,
        kubeconfig=podgraft_kubeconfig,
        certs=workdir / "podgraft-certs",
        namespace=PODGRAFT_NAMESPACE,
        policy_namespaces=[PODGRAFT_NAMESPACE, policy_namespace],
    )
    stack.callback(podgraft.stop)
    timings["podgraft"] = time.monotonic() - podgraft_started

    webhook = with_url(chart.webhook, podgraft.url)
    kube.put_webhook(webhook)
    env = E2E(
        kube,
        podgraft,
        plane,
        chart,
        bundle,
        workdir,
        webhook["metadata"]["name"],
        podgraft_kubeconfig,
        policy_namespace,
    )
    warmup = env.opted_in("warmup")
    if service_accounts:  # the plugin refuses pods of a namespace without its ServiceAccount
        with contextlib.suppress(ApiException):  # a controller-manager may have made it already
            kube.core.create_namespaced_service_account(warmup, {"metadata": {"name": "default"}})

    def first_injection() -> None:
        body = kube.create_pod(warmup, pod(name="warmup", annotations={INJECT: warmup_policy}), dry_run=True)
        assert injected(body.body) == [warmup_policy], body.body["metadata"]

    eventually(first_injection, timeout=30, what="the apiserver calls Podgraft")
    timings["setup"] = time.monotonic() - started
    return env
