"""The webhook server's Deployment, Service, PDB, HPA and NetworkPolicy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.chart_support import (
    NAMESPACE,
    VALUE_SET_PARAMS,
    Helm,
    env_of,
    find,
    one,
    selector_matches,
    values_of,
)

pytestmark = pytest.mark.chart


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")["spec"]["template"]


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod(objects)["spec"]["containers"]
    return container


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_pod_security_is_restricted(helm: Helm, value_set: str) -> None:
    spec = _pod(helm.render(value_set))["spec"]
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert isinstance(pod_security["runAsUser"], int)
    assert pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork")
    assert not spec.get("hostPID")
    assert not spec.get("hostIPC")
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert isinstance(security["runAsUser"], int)
        assert security["runAsUser"] > 0
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["privileged"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "ports" not in container or all("hostPort" not in port for port in container["ports"])


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_container_runs_podgraft_serve_with_resources(helm: Helm, value_set: str) -> None:
    container = _container(helm.render(value_set))
    assert "command" not in container, "the image's ENTRYPOINT is podgraft"
    assert container["args"] == ["serve"]
    assert container["ports"] == [
        {"name": "https", "containerPort": values_of(value_set)["config"]["port"], "protocol": "TCP"}
    ]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_image_reference(helm: Helm) -> None:
    assert _container(helm.render())["image"] == "podgraft/podgraft:0.1.0"
    assert _container(helm.render("secret"))["image"] == (
        "registry.example.com/platform/podgraft@sha256:" + "0" * 64
    )


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_probes(helm: Helm, value_set: str) -> None:
    container = _container(helm.render(value_set))
    if values_of(value_set)["tls"]["clientCASecret"]:
        # mTLS: the kubelet has no client certificate, so the probes can only check the socket.
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["tcpSocket"] == {"port": "https"}
        return
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
        assert container[probe]["periodSeconds"] >= 1
    assert container["readinessProbe"]["periodSeconds"] < container["livenessProbe"]["periodSeconds"]


# The env contract of `podgraft serve` in a cluster (app/settings.py).
BASE_ENV = {
    "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
    "PODGRAFT_HOST": "0.0.0.0",
    "PODGRAFT_PORT": "8443",
    "PODGRAFT_TLS_CERT_FILE": "/etc/podgraft/tls/tls.crt",
    "PODGRAFT_TLS_KEY_FILE": "/etc/podgraft/tls/tls.key",
    "PODGRAFT_POLICY_SOURCE": "configmaps",
    "PODGRAFT_POLICY_NAMESPACES": NAMESPACE,
    "PODGRAFT_SIDECAR_MODE": "auto",
    "PODGRAFT_LOG_LEVEL": "info",
    "PODGRAFT_DRAIN_SECONDS": "5",
    "PODGRAFT_MAX_CONCURRENCY": "64",
    "PODGRAFT_NAMESPACE_LABEL": "podgraft.io/injection",
    "PODGRAFT_INJECT_ANNOTATION": "podgraft.io/inject",
    "PODGRAFT_POLICY_LABEL": "podgraft.io/policy",
    "PODGRAFT_EVENTS": "warnings",
}
EXPECTED_ENV = {
    "defaults": BASE_ENV,
    "helm": BASE_ENV,
    "certmanager": BASE_ENV,
    "certmanager-issuer": BASE_ENV,
    "secret": BASE_ENV
    | {
        "PODGRAFT_TLS_CLIENT_CA_FILE": "/etc/podgraft/client-ca/ca.crt",
        "PODGRAFT_POLICY_NAMESPACES": f"{NAMESPACE},platform-policies,team-policies",
        "PODGRAFT_SIDECAR_MODE": "native",
        "PODGRAFT_KUBERNETES_VERSION": "1.31",
        "PODGRAFT_LOG_LEVEL": "debug",
        "PODGRAFT_DRAIN_SECONDS": "10",
        "PODGRAFT_EXCLUDED_NAMESPACES": "monitoring",
        "PODGRAFT_MAX_BODY_BYTES": "4194304",
    },
}


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_server_environment(helm: Helm, value_set: str) -> None:
    container = _container(helm.render(value_set))
    names = [item["name"] for item in container["env"]]
    assert len(names) == len(set(names)), "duplicate env var"
    assert env_of(container) == EXPECTED_ENV[value_set]


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_tls_files_come_from_a_whole_secret_mount(helm: Helm, value_set: str) -> None:
    """The server reloads rotated certificates; that needs a Secret volume mounted whole (a subPath
    mount never sees the kubelet's updates)."""
    objects = helm.render(value_set)
    container = _container(objects)
    env = env_of(container)
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in _pod(objects)["spec"]["volumes"]}
    assert all("subPath" not in mount for mount in mounts.values())
    tls_dir = mounts["tls"]["mountPath"]
    assert mounts["tls"]["readOnly"] is True
    assert env["PODGRAFT_TLS_CERT_FILE"] == f"{tls_dir}/tls.crt"
    assert env["PODGRAFT_TLS_KEY_FILE"] == f"{tls_dir}/tls.key"
    fullname = one(objects, "Deployment")["metadata"]["name"]
    secret_name = values_of(value_set)["tls"]["secret"]["name"] or f"{fullname}-tls"
    assert volumes["tls"]["secret"]["secretName"] == secret_name
    if "PODGRAFT_TLS_CLIENT_CA_FILE" in env:
        assert env["PODGRAFT_TLS_CLIENT_CA_FILE"] == mounts["client-ca"]["mountPath"] + "/ca.crt"
        assert volumes["client-ca"]["secret"]["secretName"] == "apiserver-client-ca"
    # readOnlyRootFilesystem: the only writable place is a small emptyDir at /tmp.
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert "emptyDir" in volumes["tmp"]


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_termination_grace_outlasts_the_drain(helm: Helm, value_set: str) -> None:
    objects = helm.render(value_set)
    grace = _pod(objects)["spec"]["terminationGracePeriodSeconds"]
    drain = float(env_of(_container(objects))["PODGRAFT_DRAIN_SECONDS"])
    assert grace > drain


@pytest.mark.parametrize(
    ("grace", "drain"),
    [pytest.param(5, 5, id="equal"), pytest.param(5, 30, id="shorter")],
)
def test_grace_period_not_longer_than_drain_fails(helm: Helm, grace: int, drain: int) -> None:
    error = helm.render_error(sets=[f"terminationGracePeriodSeconds={grace}", f"config.drainSeconds={drain}"])
    assert "must be longer than config.drainSeconds" in error


def test_default_availability(helm: Helm) -> None:
    """2 replicas spread over nodes, a PDB keeping one, and rollouts that never drop below the count."""
    objects = helm.render()
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selector_matches(term["podAffinityTerm"]["labelSelector"], pod["metadata"]["labels"])
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert not find(objects, "HorizontalPodAutoscaler")


def test_hard_anti_affinity_and_spread(helm: Helm) -> None:
    pod = _pod(helm.render("certmanager"))
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert selector_matches(term["labelSelector"], pod["metadata"]["labels"])
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert selector_matches(spread["labelSelector"], pod["metadata"]["labels"])
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"


def test_single_replica_gets_no_pdb(helm: Helm) -> None:
    """minAvailable 1 of 1 would block every node drain."""
    objects = helm.render(sets=["replicaCount=1"])
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    assert not find(objects, "PodDisruptionBudget")


def test_autoscaling(helm: Helm) -> None:
    objects = helm.render("certmanager")
    deployment = one(objects, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_autoscaling_bounds_are_checked(helm: Helm) -> None:
    error = helm.render_error(
        sets=["autoscaling.enabled=true", "autoscaling.minReplicas=4", "autoscaling.maxReplicas=3"]
    )
    assert "minReplicas must not be greater than autoscaling.maxReplicas" in error


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_service_routes_to_the_server(helm: Helm, value_set: str) -> None:
    objects = helm.render(value_set)
    service = one(objects, "Service")
    pod = _pod(objects)
    assert service["spec"]["type"] == "ClusterIP"
    assert selector_matches({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in _container(objects)["ports"]}
    client = one(objects, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["service"]
    assert client == {
        "name": service["metadata"]["name"],
        "namespace": NAMESPACE,
        "path": "/mutate",
        "port": port["port"],
    }
    assert pod["spec"]["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]


def test_network_policy(helm: Helm) -> None:
    objects = helm.render("certmanager")
    policy = one(objects, "NetworkPolicy")["spec"]
    assert selector_matches(policy["podSelector"], _pod(objects)["metadata"]["labels"])
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"port": 8443, "protocol": "TCP"}]
    assert ingress["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    dns, apiserver = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert {p["port"] for p in apiserver["ports"]} == {443, 6443}
    assert apiserver["to"] == [{"ipBlock": {"cidr": "192.0.2.10/32"}}]


def test_network_policy_default_ingress_is_port_only(helm: Helm) -> None:
    """The API server often runs on the host network; with no peers given only the port is restricted."""
    policy = one(helm.render(sets=["networkPolicy.enabled=true"]), "NetworkPolicy")["spec"]
    assert policy["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    assert "to" not in policy["egress"][1]
