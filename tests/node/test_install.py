"""Issue 16, §2: the chart installed with `helm install` (defaults except the image, one policy in
`policies.definitions` and `events.level: all`) on a cluster that runs as a real one: two replicas
Ready on the one node behind the Service the apiserver calls, with their PodDisruptionBudget,
probes, hardened pod and RBAC; Podgraft's pods reach the apiserver in-cluster with their projected
token; an opted-in namespace's Deployment (ServiceAccount token mounted, as by default) comes up
injected and Ready; the chart's policy is in force; `kubectl logs` shows JSON."""

from __future__ import annotations

import base64
import json
from typing import Any

from kubernetes import client

from tests.e2e.kube import STATUS, container, env_of, injected, names, podgraft_audit

from .conftest import CHART_POLICY, WEBHOOK_SELECTOR, Cluster
from .workloads import app_container, deployment, pod_spec


def _audit(cluster: Cluster, namespace: str) -> tuple[int, dict[str, Any]]:
    """`podgraft audit` as an admin runs it against the cluster; (exit code, JSON)."""
    return podgraft_audit(cluster.local.plane.admin_kubeconfig, f"--namespace={namespace}")


def states(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(pod, policy) -> state, from `podgraft audit -o json`."""
    return {
        (pod["pod"], entry["policy"]): entry["state"]
        for pod in report["pods"]
        for entry in pod.get("policies") or []
    }


def test_two_replicas_ready_on_one_node_with_pdb_probes_and_a_hardened_pod(cluster: Cluster) -> None:
    pods = cluster.wait_webhook(count=2)
    assert {p["spec"]["nodeName"] for p in pods} == {"podgraft-node"}
    name, namespace = cluster.release.fullname, cluster.release.namespace
    policy = client.PolicyV1Api(cluster.kube.api)
    response = policy.read_namespaced_pod_disruption_budget(name, namespace, _preload_content=False)
    pdb = json.loads(response.data)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["status"]["currentHealthy"] == 2
    assert pdb["status"]["disruptionsAllowed"] == 1
    for pod in pods:
        spec = pod["spec"]
        (server,) = spec["containers"]
        probes = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, path in probes.items():
            assert server[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert server["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["metadata"]["labels"]["podgraft.io/injection"] == "disabled"  # its own webhook skips it


def test_podgraft_reaches_the_apiserver_in_cluster_with_its_projected_token(cluster: Cluster) -> None:
    """No kubeconfig, no admin: the chart's ServiceAccount, its projected token, the kubernetes
    Service; its readiness needs the ConfigMap and Namespace watches that its RBAC allows."""
    endpoints = cluster.core.read_namespaced_endpoints("kubernetes", "default")
    (subset,) = endpoints.subsets
    assert [a.ip for a in subset.addresses] == ["10.244.77.1"]
    for pod in cluster.wait_webhook(count=2):
        spec = pod["spec"]
        assert spec["serviceAccountName"] == cluster.release.fullname
        projected = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
        assert len(projected) == 1
        sources = projected[0]["projected"]["sources"]
        assert any("serviceAccountToken" in source for source in sources)
        (server,) = spec["containers"]
        assert not any("kubeconfig" in arg for arg in server.get("args") or [])
        readiness = json.loads(
            cluster.core.connect_get_namespaced_pod_proxy_with_path(
                f"https:{pod['metadata']['name']}:8443",
                cluster.release.namespace,
                "readyz",
                _preload_content=False,
            ).data
        )
        assert readiness["ready"] is True, readiness


def test_the_apiserver_calls_podgraft_through_its_service_only(cluster: Cluster) -> None:
    configuration = cluster.kube.webhook_configuration(cluster.release.fullname)
    secret = cluster.core.read_namespaced_secret(f"{cluster.release.fullname}-tls", cluster.release.namespace)
    for webhook in configuration["webhooks"]:
        client_config = webhook["clientConfig"]
        assert "url" not in client_config
        assert client_config["service"] == {
            "name": cluster.release.fullname,
            "namespace": cluster.release.namespace,
            "path": "/mutate",
            "port": 443,
        }
        assert client_config["caBundle"] == secret.data["ca.crt"]  # the chart-generated CA
        assert base64.b64decode(client_config["caBundle"]).startswith(b"-----BEGIN CERTIFICATE-----")
        assert webhook["failurePolicy"] == "Fail"
    service = cluster.core.read_namespaced_service(cluster.release.fullname, cluster.release.namespace)
    assert service.spec.cluster_ip.startswith("10.0.0.")
    slices = client.DiscoveryV1Api(cluster.kube.api).list_namespaced_endpoint_slice(
        cluster.release.namespace,
        label_selector=f"kubernetes.io/service-name={cluster.release.fullname}",
        _preload_content=False,
    )
    endpoints = [e for s in json.loads(slices.data)["items"] for e in s.get("endpoints") or []]
    assert sorted(e["targetRef"]["name"] for e in endpoints if e["conditions"]["ready"]) == sorted(
        p["metadata"]["name"] for p in cluster.webhook_pods()
    )


def test_an_opted_in_deployment_with_its_token_mounted_comes_up_injected_ready_and_current(
    cluster: Cluster,
) -> None:
    """The ServiceAccount plugin runs again after Podgraft's patch and mounts the API token into the
    injected sidecar too; Podgraft, reinvoked, must leave that alone, and the audit call it current."""
    ns = cluster.namespace("installed")
    spec = pod_spec([app_container(cluster.image)], automountServiceAccountToken=True)
    cluster.create(ns, deployment("web", replicas=2, spec=spec, inject=f"log-shipper,{CHART_POLICY}"))
    pods = cluster.wait_pods(ns, "web", count=2)
    for pod in pods:
        assert sorted(injected(pod)) == sorted(["log-shipper", CHART_POLICY])
        assert names(pod["spec"]["initContainers"]) == ["log-shipper"]
        assert env_of(container(pod, "app"))["CHART_STAMP"] == "v1"  # policies.definitions in force
        for item in (container(pod, "app"), container(pod, "log-shipper", kind="initContainers")):
            mounts = [m["mountPath"] for m in item["volumeMounts"]]
            assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts, item["name"]
        assert json.loads(pod["metadata"]["annotations"][STATUS])["policies"]
    code, report = _audit(cluster, ns)
    assert code == 0, report
    assert set(states(report).values()) == {"current"}, states(report)
    assert len(states(report)) == 4


def test_kubectl_logs_of_the_webhook_pods_are_json(cluster: Cluster) -> None:
    result = cluster.kubectl.run(
        "logs", f"--namespace={cluster.release.namespace}", f"--selector={WEBHOOK_SELECTOR}", "--tail=-1"
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line, uvicorn's included
    assert all({"level", "msg"} <= set(record) for record in records), records[:3]
    assert any(record["msg"] == "admission" for record in records)
