"""The Kubernetes API as the e2e and node tests see it: an admin client (`Kube`) that returns every
object as the raw JSON the API server stored, with the admission warnings it relayed; the names
Podgraft's objects carry; a minimal Pod and readers of what was injected; `eventually`, and API
errors the tests expect."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

PODGRAFT_NAMESPACE = "podgraft"
INJECTION_LABEL = "podgraft.io/injection"
POLICY_LABEL = "podgraft.io/policy"
INJECT = "podgraft.io/inject"
STATUS = "podgraft.io/status"


def eventually(check: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.2, what: str = "") -> T:
    """Call `check` until it returns without raising (AssertionError or API errors); return its value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, ApiException) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not true within {timeout:g}s: {what or check.__name__}: {exc}"
                ) from exc
        time.sleep(interval)


# --- the API, as the tests see it -----------------------------------------------------------------

_WARNING = re.compile(r'^\d{3} \S+ "(?P<text>(?:[^"\\]|\\.)*)"')


def parse_warnings(values: Sequence[str]) -> list[str]:
    """The texts of `Warning: 299 - "..."` headers (the apiserver relays admission warnings so)."""
    texts = []
    for value in values:
        match = _WARNING.match(value)
        texts.append(re.sub(r"\\(.)", r"\1", match.group("text")) if match else value)
    return texts


@dataclass
class Response:
    body: dict[str, Any]
    warnings: list[str]


class Kube:
    """An admin client; every object is returned as the raw JSON the API server stored."""

    def __init__(self, kubeconfig: Path) -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api)
        self.admission = client.AdmissionregistrationV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self._names = itertools.count(1)

    @staticmethod
    def _raw(response: Any) -> Response:
        body = json.loads(response.data) if response.data else {}
        return Response(body, parse_warnings(response.headers.getlist("Warning")))

    # namespaces
    def namespace(self, prefix: str, labels: Mapping[str, str] | None = None) -> str:
        """A fresh namespace (never deleted: there is no namespace controller to finish it)."""
        name = f"{prefix}-{next(self._names)}"
        self.core.create_namespace({"metadata": {"name": name, "labels": dict(labels or {})}})
        return name

    def label_namespace(self, name: str, labels: Mapping[str, str | None]) -> None:
        self.core.patch_namespace(
            name,
            {"metadata": {"labels": dict(labels)}},
            _content_type="application/merge-patch+json",
        )

    # pods
    def create_pod(self, namespace: str, pod: Mapping[str, Any], *, dry_run: bool = False) -> Response:
        kwargs = {"dry_run": "All"} if dry_run else {}
        return self._raw(
            self.core.create_namespaced_pod(namespace, dict(pod), _preload_content=False, **kwargs)
        )

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self._raw(self.core.read_namespaced_pod(name, namespace, _preload_content=False)).body

    def add_ephemeral_container(self, namespace: str, name: str, container: Mapping[str, Any]) -> Response:
        """What `kubectl debug` does: a strategic merge patch of the ephemeralcontainers subresource."""
        return self._raw(
            self.core.patch_namespaced_pod_ephemeralcontainers(
                name,
                namespace,
                {"spec": {"ephemeralContainers": [dict(container)]}},
                _content_type="application/strategic-merge-patch+json",
                _preload_content=False,
            )
        )

    # configmaps and events
    def put_configmap(
        self, namespace: str, name: str, data: Mapping[str, str], *, labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        body = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(labels or {POLICY_LABEL: "true"}),
            },
            "data": dict(data),
        }
        try:
            response = self.core.create_namespaced_config_map(namespace, body, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
            response = self.core.replace_namespaced_config_map(name, namespace, body, _preload_content=False)
        return self._raw(response).body

    def delete_configmap(self, namespace: str, name: str) -> None:
        self.core.delete_namespaced_config_map(name, namespace)

    def events_for(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        body = self._raw(
            self.core.list_namespaced_event(namespace, field_selector=selector, _preload_content=False)
        ).body
        return list(body.get("items") or [])

    # objects from manifests
    def create_objects(self, documents: Sequence[Mapping[str, Any]]) -> None:
        """Create the chart's RBAC objects (the only kinds the tests need from manifests)."""
        for doc in documents:
            kind, meta = doc["kind"], doc["metadata"]
            if kind == "Role":
                self.rbac.create_namespaced_role(meta["namespace"], dict(doc))
            elif kind == "RoleBinding":
                self.rbac.create_namespaced_role_binding(meta["namespace"], dict(doc))
            elif kind == "ClusterRole":
                self.rbac.create_cluster_role(dict(doc))
            elif kind == "ClusterRoleBinding":
                self.rbac.create_cluster_role_binding(dict(doc))
            elif kind == "MutatingWebhookConfiguration":
                self.put_webhook(doc)
            elif kind == "ConfigMap":
                self.core.create_namespaced_config_map(meta["namespace"], dict(doc))
            else:
                raise ValueError(f"the e2e harness does not create {kind}")

    def webhook_configuration(self, name: str) -> dict[str, Any]:
        return self._raw(
            self.admission.read_mutating_webhook_configuration(name, _preload_content=False)
        ).body

    def put_webhook(self, webhook: Mapping[str, Any]) -> None:
        name = webhook["metadata"]["name"]
        try:
            self.admission.create_mutating_webhook_configuration(dict(webhook))
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = self.admission.read_mutating_webhook_configuration(name)
            body = {
                **webhook,
                "metadata": {**webhook["metadata"], "resourceVersion": current.metadata.resource_version},
            }
            self.admission.replace_mutating_webhook_configuration(name, body)

    def close(self) -> None:
        self.api.close()


def pod(
    *,
    name: str | None = None,
    generate_name: str | None = None,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    image: str = "nginx:1.27",
) -> dict[str, Any]:
    """A minimal Pod (no namespace in its metadata: the URL says where it goes)."""
    metadata: dict[str, Any] = {
        "annotations": dict(annotations or {}),
        "labels": dict(labels or {"app": "web"}),
    }
    if name:
        metadata["name"] = name
    if generate_name:
        metadata["generateName"] = generate_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}],
        },
    }


def names(containers: Sequence[Mapping[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def container(pod_body: Mapping[str, Any], name: str, *, kind: str = "containers") -> dict[str, Any]:
    for item in pod_body["spec"].get(kind) or []:
        if item["name"] == name:
            return dict(item)
    raise AssertionError(f"no {kind} entry named {name!r} in {names(pod_body['spec'].get(kind))}")


def env_of(item: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in item.get("env") or []}


def injected(pod_body: Mapping[str, Any]) -> list[str]:
    """Names of the policies recorded in Podgraft's status annotation (empty: not injected)."""
    raw = (pod_body["metadata"].get("annotations") or {}).get(STATUS)
    return [p["name"] for p in json.loads(raw)["policies"]] if raw else []


def api_error(call: Callable[[], object]) -> ApiException:
    """Run `call`, which must fail with an API error, and return that error."""
    try:
        call()
    except ApiException as exc:
        return exc
    raise AssertionError("the API accepted a request the test expected it to refuse")


def error_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    except ValueError:
        return str(exc.body)


def run_podgraft_audit(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`podgraft audit -o json` as an admin runs it against a cluster."""
    from hack.cluster.processes import REPO

    return subprocess.run(
        [sys.executable, "-m", "app.cli", "audit", f"--kubeconfig={kubeconfig}", "-o", "json", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=60,
    )


def podgraft_audit(kubeconfig: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """`podgraft audit -o json` that ran (exit 0 or 1): (exit code, JSON)."""
    result = run_podgraft_audit(kubeconfig, *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)
