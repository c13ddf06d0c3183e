"""tls.mode=helm: the generated CA and serving certificate, and their reuse across upgrades.

`helm template` has no cluster, so `lookup` finds nothing there. To run the reuse branch for real,
these tests give helm a stand-in API server (plain HTTP on 127.0.0.1) that serves exactly what the
chart looks up: the discovery document of core/v1 and the serving Secret, as a real cluster would
hold it after the previous install. `helm template --dry-run=server --is-upgrade` then renders the
upgrade a `helm upgrade` would apply.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.chart.chart_support import FULLNAME, NAMESPACE, Helm, one

pytestmark = pytest.mark.chart

SECRET = f"{FULLNAME}-tls"
DNS_NAMES = [
    FULLNAME,
    f"{FULLNAME}.{NAMESPACE}",
    f"{FULLNAME}.{NAMESPACE}.svc",
    f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
]
CORE_V1 = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "v1",
    "resources": [
        {
            "name": "secrets",
            "singularName": "secret",
            "namespaced": True,
            "kind": "Secret",
            "verbs": ["get", "list"],
        }
    ],
}


class FakeCluster:
    """The two read-only endpoints `lookup "v1" "Secret"` needs, and a log of what was asked."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[str] = []
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                cluster.requests.append(path)
                parts = path.strip("/").split("/")
                if path == "/api/v1":
                    self._reply(200, CORE_V1)
                elif len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "secrets":
                    secret = cluster.secrets.get((parts[3], parts[5]))
                    if secret is None:
                        self._reply(
                            404,
                            {
                                "kind": "Status",
                                "apiVersion": "v1",
                                "status": "Failure",
                                "reason": "NotFound",
                                "code": 404,
                            },
                        )
                    else:
                        self._reply(200, secret)
                else:
                    self._reply(
                        404,
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "reason": "NotFound",
                            "code": 404,
                        },
                    )

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def kubeconfig(self, path: Path) -> Path:
        host, port = self.server.server_address[:2]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://{host!s}:{port}"}}],
            "users": [{"name": "fake", "user": {"token": "not-a-secret"}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

    def store(self, secret: dict[str, Any]) -> None:
        """Keep a rendered Secret the way the API server returns it."""
        meta = secret["metadata"]
        self.secrets[(meta["namespace"], meta["name"])] = {
            **secret,
            "metadata": {**meta, "uid": "1", "resourceVersion": "1"},
        }


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def _render_against(
    helm: Helm, cluster: FakeCluster, tmp_path: Path, *, upgrade: bool
) -> list[dict[str, Any]]:
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
    extra = ["--dry-run=server", *(["--is-upgrade"] if upgrade else [])]
    return helm.render(extra_args=extra, env={"KUBECONFIG": str(kubeconfig)}, cached=False)


def _material(objects: list[dict[str, Any]]) -> tuple[dict[str, str], str]:
    secret = one(objects, "Secret", SECRET)
    (webhook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    return secret["data"], webhook["clientConfig"]["caBundle"]


def _pem(data: dict[str, str], key: str) -> bytes:
    return base64.b64decode(data[key])


@pytest.mark.parametrize("value_set", [pytest.param(None, id="defaults"), pytest.param("helm", id="helm")])
def test_generated_certificate_chain(helm: Helm, value_set: str | None) -> None:
    objects = helm.render(value_set, cached=False)
    secret = one(objects, "Secret", SECRET)
    data, ca_bundle = _material(objects)
    assert secret["type"] == "kubernetes.io/tls"
    assert ca_bundle == data["ca.crt"]
    ca = x509.load_pem_x509_certificate(_pem(data, "ca.crt"))
    cert = x509.load_pem_x509_certificate(_pem(data, "tls.crt"))
    key = serialization.load_pem_private_key(_pem(data, "tls.key"), password=None)

    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == key.public_key()
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == DNS_NAMES
    assert secret["metadata"]["annotations"]["podgraft.io/dns-names"] == ",".join(DNS_NAMES)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.SERVER_AUTH in usages
    days = 825 if value_set == "helm" else 3650
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(lifetime - timedelta(days=days)) < timedelta(days=1)


def test_without_a_cluster_every_render_generates_new_material(helm: Helm) -> None:
    first, _ = _material(helm.render(cached=False))
    second, _ = _material(helm.render(cached=False))
    assert first["ca.crt"] != second["ca.crt"]
    assert first["tls.key"] != second["tls.key"]


def test_upgrade_keeps_the_certificate(helm: Helm, cluster: FakeCluster, tmp_path: Path) -> None:
    installed = _render_against(helm, cluster, tmp_path, upgrade=False)
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}" in cluster.requests, "the chart did not look up"
    cluster.store(one(installed, "Secret", SECRET))
    before, _ = _material(installed)

    upgraded = _render_against(helm, cluster, tmp_path, upgrade=True)
    after, ca_bundle = _material(upgraded)
    assert after == before, "helm upgrade would rotate the certificate needlessly"
    assert ca_bundle == before["ca.crt"]


def _drop_ca(secret: dict[str, Any]) -> None:
    del secret["data"]["ca.crt"]


def _other_names(secret: dict[str, Any]) -> None:
    secret["metadata"]["annotations"]["podgraft.io/dns-names"] = "old-name.podgraft.svc"


def _no_annotation(secret: dict[str, Any]) -> None:
    del secret["metadata"]["annotations"]


def _no_data(secret: dict[str, Any]) -> None:
    del secret["data"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(_drop_ca, id="ca-crt-missing"),
        pytest.param(_other_names, id="issued-for-other-dns-names"),
        pytest.param(_no_annotation, id="not-made-by-the-chart"),
        pytest.param(_no_data, id="empty-secret"),
    ],
)
def test_upgrade_regenerates_an_unusable_secret(
    helm: Helm, cluster: FakeCluster, tmp_path: Path, damage: Any
) -> None:
    existing = one(helm.render(cached=False), "Secret", SECRET)
    before = dict(existing["data"])
    damage(existing)
    cluster.store(existing)

    after, ca_bundle = _material(_render_against(helm, cluster, tmp_path, upgrade=True))
    assert after["ca.crt"] != before["ca.crt"]
    assert after["tls.crt"] != before["tls.crt"]
    assert ca_bundle == after["ca.crt"]
    cert = x509.load_pem_x509_certificate(_pem(after, "tls.crt"))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(_pem(after, "ca.crt")))


def test_lookup_reads_only_the_serving_secret(helm: Helm, cluster: FakeCluster, tmp_path: Path) -> None:
    """The chart looks up one object and nothing else in the cluster (no list of Secrets)."""
    _render_against(helm, cluster, tmp_path, upgrade=False)
    lookups = [path for path in cluster.requests if path != "/api/v1"]
    assert lookups == [f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}"]
