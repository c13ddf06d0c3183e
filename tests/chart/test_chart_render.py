"""helm lint, helm template and strict Kubernetes schema validation of every rendered object."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils
from packaging.version import Version

from tests.chart.chart_support import (
    CHART,
    CRD_KINDS,
    FULLNAME,
    NAMESPACE,
    REPO,
    VALUE_SET_PARAMS,
    VALUE_SETS,
    Helm,
    find,
    is_hook,
    one,
    selector_matches,
    values_of,
)

pytestmark = pytest.mark.chart

OLDEST = Version("1.29")


def _minor(version: str) -> Version:
    return Version(kv_utils.major_minor(version))


# Every Kubernetes minor kubernetes-validate ships a schema for, from 1.29 (native sidecars) on.
KUBERNETES_VERSIONS = sorted(
    {kv_utils.major_minor(v) for v in kv_utils.all_versions() if _minor(v) >= OLDEST}, key=Version
)


def test_kubernetes_versions_cover_1_29_through_the_newest_shipped() -> None:
    minors = [Version(v).minor for v in KUBERNETES_VERSIONS]
    assert minors[0] == 29
    assert KUBERNETES_VERSIONS[-1] == kv_utils.major_minor(kubernetes_validate.latest_version())
    assert minors == list(range(29, minors[-1] + 1)), "a Kubernetes minor is missing from kubernetes-validate"


def test_helm_is_the_pinned_build(helm: Helm) -> None:
    """hack/helm/go.mod pins helm; the build stamps that version and a real KubeVersion (not v1.20)."""
    if os.environ.get("HELM_BIN"):
        pytest.skip("HELM_BIN overrides the pinned build")
    pinned = re.search(r"^require helm\.sh/helm/v3 (v\S+)$", (REPO / "hack/helm/go.mod").read_text(), re.M)
    assert pinned is not None
    assert helm.run("version", "--template", "{{ .Version }}").stdout.strip() == pinned.group(1)
    # Built without helm's -X flags, helm would assume Kubernetes 1.20 and refuse the chart
    # (kubeVersion >=1.29) in every helm template below.


@pytest.mark.parametrize(
    ("kube_version", "renders"),
    [
        pytest.param("1.28.9", False, id="1.28-refused"),
        pytest.param("1.29.0", True, id="1.29"),
        pytest.param("1.37.0", True, id="1.37"),
    ],
)
def test_chart_kube_version_constraint(helm: Helm, kube_version: str, renders: bool) -> None:
    result = helm.run(*helm.template_args(), "--kube-version", kube_version, check=False)
    assert (result.returncode == 0) is renders, result.stderr
    if not renders:
        assert "incompatible with Kubernetes" in result.stderr


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_helm_lint_strict(helm: Helm, value_set: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    path = VALUE_SETS[value_set]
    if path is not None:
        args += ["--values", str(path)]
    result = helm.run(*args)
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_rendered_objects_validate_strictly(helm: Helm, value_set: str, version: str) -> None:
    objects = helm.render(value_set)
    checked = Counter[str]()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue  # asserted field by field in test_cert_manager_objects / test_service_monitor
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kv_utils.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']} invalid for {version} at {path}: {error.message}"
            )
        except kv_utils.SchemaNotFoundError as error:
            pytest.fail(f"no schema, and not a known CRD kind: {error.message}")
        checked[obj["kind"]] += 1
    assert checked["Deployment"] == 1
    assert checked["MutatingWebhookConfiguration"] == 1
    assert checked["ValidatingWebhookConfiguration"] == 1


# What each value set renders: the optional objects appear exactly when their values ask for them.
EXPECTED_KINDS: dict[str, dict[str, int]] = {
    "defaults": {"Secret": 1, "PodDisruptionBudget": 1, "Role": 1, "RoleBinding": 1},
    "helm": {"Secret": 1, "ConfigMap": 2, "PodDisruptionBudget": 1, "Role": 1, "RoleBinding": 1},
    "certmanager": {
        "Issuer": 2,
        "Certificate": 2,
        "HorizontalPodAutoscaler": 1,
        "NetworkPolicy": 1,
        "ServiceMonitor": 1,
        "PodDisruptionBudget": 1,
        "Role": 1,
        "RoleBinding": 1,
    },
    "certmanager-issuer": {"Certificate": 1, "PodDisruptionBudget": 1, "Role": 1, "RoleBinding": 1},
    "secret": {"PodDisruptionBudget": 1, "Role": 3, "RoleBinding": 3},
}
ALWAYS = {
    "Deployment": 1,
    "Service": 1,
    "ServiceAccount": 1,
    "ClusterRole": 2,  # Namespaces (and pods for the audit); Events (events.level, default warnings)
    "ClusterRoleBinding": 2,
    "MutatingWebhookConfiguration": 1,
    "ValidatingWebhookConfiguration": 1,  # policy ConfigMaps (policyValidation.enabled, default true)
}


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_rendered_kinds(helm: Helm, value_set: str) -> None:
    assert set(EXPECTED_KINDS) == set(VALUE_SETS), "add the new ci/*-values.yaml to EXPECTED_KINDS"
    kinds = Counter(obj["kind"] for obj in helm.render(value_set) if not is_hook(obj))
    assert dict(kinds) == ALWAYS | EXPECTED_KINDS[value_set]


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_namespaced_objects_land_in_the_release_namespace(helm: Helm, value_set: str) -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
    policy_namespaces = [NAMESPACE, *values_of(value_set)["policies"]["watchNamespaces"]]
    for obj in helm.render(value_set):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, obj["metadata"]["name"]
        elif obj["kind"] in {"Role", "RoleBinding"}:
            assert namespace in policy_namespaces
        else:
            assert namespace == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_every_object_carries_the_standard_labels(helm: Helm, value_set: str) -> None:
    for obj in helm.render(value_set):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "podgraft"
        assert labels["app.kubernetes.io/instance"] == "pg"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "podgraft-0.1.0"


@pytest.mark.parametrize("value_set", ["certmanager", "certmanager-issuer"])
def test_cert_manager_objects(helm: Helm, value_set: str) -> None:
    """Issuer and Certificate are CRDs kubernetes-validate cannot check: their key fields, by hand."""
    objects = helm.render(value_set)
    fullname = one(objects, "Deployment")["metadata"]["name"]
    serving = one(objects, "Certificate", f"{fullname}-tls")
    spec = serving["spec"]
    service = one(objects, "Service")["metadata"]["name"]
    assert spec["dnsNames"] == [
        service,
        f"{service}.{NAMESPACE}",
        f"{service}.{NAMESPACE}.svc",
        f"{service}.{NAMESPACE}.svc.cluster.local",
    ]
    assert "server auth" in spec["usages"]
    assert spec["privateKey"]["rotationPolicy"] == "Always"
    assert spec["duration"] == "2160h"
    assert spec["renewBefore"] == "360h"
    # Every replica mounts the Secret the Certificate writes.
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": spec["secretName"], "defaultMode": 0o440}} in volumes
    # The cainjector fills the caBundle from that Certificate; the chart sets none itself.
    webhook = one(objects, "MutatingWebhookConfiguration")
    assert (
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{fullname}-tls"
    )
    assert "caBundle" not in webhook["webhooks"][0]["clientConfig"]
    assert not find(objects, "Secret")

    issuer_ref = spec["issuerRef"]
    if value_set == "certmanager-issuer":
        assert issuer_ref == {"name": "cluster-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
        assert not find(objects, "Issuer")
        return
    # The chart's own chain: self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
    selfsigned = one(objects, "Issuer", f"{fullname}-selfsigned")
    assert selfsigned["spec"] == {"selfSigned": {}}
    ca_cert = one(objects, "Certificate", f"{fullname}-ca")["spec"]
    assert ca_cert["isCA"] is True
    assert ca_cert["issuerRef"] == {
        "name": f"{fullname}-selfsigned",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    ca_issuer = one(objects, "Issuer", f"{fullname}-ca")
    assert ca_issuer["spec"] == {"ca": {"secretName": ca_cert["secretName"]}}
    assert issuer_ref == {"name": f"{fullname}-ca", "kind": "Issuer", "group": "cert-manager.io"}


def test_service_monitor(helm: Helm) -> None:
    """ServiceMonitor is a CRD: it must scrape the Service's https port with the serving CA."""
    objects = helm.render("certmanager")
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert selector_matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["scheme"] == "https"
    assert endpoint["path"] == "/metrics"
    assert endpoint["tlsConfig"] == {
        "serverName": f"{FULLNAME}.{NAMESPACE}.svc",
        "ca": {"secret": {"name": f"{FULLNAME}-tls", "key": "ca.crt"}},
    }


def test_rendering_is_stable_apart_from_generated_certificates(helm: Helm) -> None:
    def strip(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for obj in objects:
            if obj["kind"] == "Secret":
                continue
            for webhook in obj.get("webhooks", []):
                webhook["clientConfig"]["caBundle"] = "<generated>"
            out.append(obj)
        return out

    assert strip(helm.render(cached=False)) == strip(helm.render(cached=False))
