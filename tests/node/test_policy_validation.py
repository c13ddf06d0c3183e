"""Issue 17, §2 on the installed chart: the apiserver reaches the release's `/validate-policies` through
its Service, trusting the chart-generated CA (tls.mode=helm), so `kubectl apply` of a broken policy
ConfigMap is refused by the Podgraft pods themselves, and a fixed one goes live."""

from __future__ import annotations

from typing import Any

from tests.e2e.kube import INJECT, POLICY_LABEL, eventually, injected, pod
from tests.e2e.test_policy_validation import BROKEN_DATA, FIXED_DATA

from .conftest import Cluster


def _configmap(data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "log-forwarder", "labels": {POLICY_LABEL: "true"}},
        "data": data,
    }


def test_the_installed_chart_refuses_a_broken_policy_at_apply_time(cluster: Cluster) -> None:
    cluster.wait_webhook(count=2)
    namespace = cluster.release.namespace
    webhook = cluster.kube.admission.read_validating_webhook_configuration(cluster.release.fullname)
    (config,) = webhook.webhooks
    assert config.client_config.service.path == "/validate-policies"
    assert config.client_config.ca_bundle  # the chart-generated CA

    refused = cluster.kubectl.run(
        "apply", f"--namespace={namespace}", "-f", "-", manifest=_configmap(BROKEN_DATA), check=False
    )
    assert refused.returncode == 1
    assert 'admission webhook "policies.podgraft.io" denied the request: podgraft: 3 errors' in refused.stderr
    assert "spec.sidecars[0].volumeMounts[0].mountPropagation: 'hostToContainer'" in refused.stderr
    assert "Warning: podgraft: key log-archiver.yaml" in refused.stderr

    applied = cluster.kubectl.apply(namespace, _configmap(FIXED_DATA))
    assert applied.stdout.strip() == "configmap/log-forwarder created"
    assert applied.stderr == ""
    try:
        ns = cluster.namespace("validated")

        def in_force() -> None:
            body = cluster.kube.create_pod(
                ns, pod(name="probe", annotations={INJECT: "log-forwarder"}), dry_run=True
            ).body
            assert injected(body) == ["log-forwarder"], body["metadata"]

        eventually(in_force, timeout=30, what="the fixed policy is loaded")
    finally:
        cluster.kubectl.run("delete", f"--namespace={namespace}", "configmap/log-forwarder")
