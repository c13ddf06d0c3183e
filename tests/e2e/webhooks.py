"""Webhook configurations of the e2e tests: the chart's pointed at a URL (no Service here), test-only
ones scoped by labels, one in place for the length of a `with`, and a second mutating webhook over
TLS (`Labeller`) that adds a label, to make the apiserver reinvoke Podgraft."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from app.certs import issue_certificate
from hack.cluster.processes import LOOPBACK

from .kube import Kube


def with_url(webhook_configuration: Mapping[str, Any], url: str) -> dict[str, Any]:
    """The chart's configuration with each clientConfig.service swapped for `url` (no Service here)."""
    result = json.loads(json.dumps(webhook_configuration))
    for webhook in result["webhooks"]:
        ca_bundle = webhook["clientConfig"].get("caBundle")
        webhook["clientConfig"] = {"url": url, **({"caBundle": ca_bundle} if ca_bundle else {})}
    return dict(result)


def webhook_configuration(
    name: str,
    *,
    url: str,
    ca_bundle: str,
    failure_policy: str = "Fail",
    namespace_labels: Mapping[str, str] | None = None,
    object_labels: Mapping[str, str] | None = None,
    reinvocation: str = "Never",
    timeout_seconds: int = 5,
) -> dict[str, Any]:
    """A test-only MutatingWebhookConfiguration for Pod CREATE, scoped by labels."""
    webhook: dict[str, Any] = {
        "name": f"{name}.e2e.podgraft.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": failure_policy,
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": reinvocation,
        "timeoutSeconds": timeout_seconds,
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
    }
    if namespace_labels:
        webhook["namespaceSelector"] = {"matchLabels": dict(namespace_labels)}
    if object_labels:
        webhook["objectSelector"] = {"matchLabels": dict(object_labels)}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


# --- webhooks of the tests' own, over TLS -------------------------------------------------------------


Answer = Callable[[dict[str, Any]], dict[str, Any]]


def serve_reviews(
    answer: Answer, *, ca_cert: bytes, ca_key: bytes, workdir: Path, name: str
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """A webhook on loopback over TLS (a certificate of the CA given): `answer(request)` is the
    AdmissionResponse to each review's request; the uid is the caller's to echo."""
    cert, key = issue_certificate([LOOPBACK, "localhost"], ca_cert=ca_cert, ca_key=ca_key, days=2)
    (workdir / f"{name}.crt").write_bytes(cert)
    (workdir / f"{name}.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(workdir / f"{name}.crt", workdir / f"{name}.key")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            response = answer(review["request"])
            body = json.dumps(
                {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response}
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name=f"e2e-{name}", daemon=True)
    thread.start()
    return server, thread


@dataclass
class Labeller:
    """A tiny mutating webhook over TLS that adds one label (to make the apiserver reinvoke Podgraft)."""

    label: str
    server: ThreadingHTTPServer
    thread: threading.Thread
    calls: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.server.server_address[1]}/label"

    @classmethod
    def start(cls, *, ca_cert: bytes, ca_key: bytes, workdir: Path, label: str) -> Labeller:
        calls: list[str] = []

        def answer(request: dict[str, Any]) -> dict[str, Any]:
            obj = request["object"]
            calls.append(obj["metadata"].get("name") or obj["metadata"].get("generateName") or "?")
            labels = obj["metadata"].get("labels")
            response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
            if labels is None:
                ops = [{"op": "add", "path": "/metadata/labels", "value": {label: "true"}}]
            elif label not in labels:
                path = "/metadata/labels/" + label.replace("~", "~0").replace("/", "~1")
                ops = [{"op": "add", "path": path, "value": "true"}]
            else:
                ops = []
            if ops:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
            return response

        server, thread = serve_reviews(
            answer, ca_cert=ca_cert, ca_key=ca_key, workdir=workdir, name="labeller"
        )
        return cls(label, server, thread, calls)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.shutdown()
            self.server.server_close()


@contextlib.contextmanager
def temporary_webhook(kube: Kube, configuration: Mapping[str, Any]) -> Iterator[None]:
    kube.put_webhook(configuration)
    try:
        yield
    finally:
        with contextlib.suppress(ApiException):
            kube.admission.delete_mutating_webhook_configuration(configuration["metadata"]["name"])
