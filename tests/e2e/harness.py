"""What the e2e tests drive: the Kubernetes API as an admin, Podgraft as a real server process, the
Helm chart's rendered webhook configuration and RBAC, and a second (labelling) webhook over TLS."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from app.certs import Bundle, generate_bundle, issue_certificate, service_hostnames, write_bundle

from .controlplane import CONTROL_PLANE, LOOPBACK, REPO, ControlPlane, Managed, free_port, https_get, wait_for

T = TypeVar("T")

CHART = REPO / "charts" / "podgraft"
HELM_BUILD = REPO / "hack" / "helm" / "build.sh"
RELEASE = "pg"
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


# --- Podgraft -------------------------------------------------------------------------------------


@dataclass
class Podgraft:
    """`podgraft serve` in configmaps mode, as a real uvicorn process over TLS."""

    process: Managed
    port: int
    ca_file: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}/mutate"

    @classmethod
    def start(
        cls,
        *,
        workdir: Path,
        kubeconfig: Path,
        certs: Path,
        namespace: str,
        policy_namespaces: Sequence[str],
        wait: bool = True,
        name: str = "podgraft",
    ) -> Podgraft:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODGRAFT_")}
        env.update(
            POD_NAMESPACE=namespace,
            PODGRAFT_POLICY_NAMESPACES=",".join(policy_namespaces),
            PODGRAFT_DRAIN_SECONDS="0",
            PODGRAFT_AUDIT_ENABLED="true",
            PODGRAFT_AUDIT_REFRESH_SECONDS="1",
            PYTHONUNBUFFERED="1",
        )
        argv = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--policy-source=configmaps",
            f"--kubeconfig={kubeconfig}",
            f"--tls-cert={certs / 'tls.crt'}",
            f"--tls-key={certs / 'tls.key'}",
            f"--host={LOOPBACK}",
            f"--port={port}",
            "--log-level=info",
        ]
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        process = Managed.spawn(name, argv, log_path=workdir / "logs" / f"{name}.log", env=env)
        server = cls(process, port, certs / "ca.crt", argv, env)
        if not wait:
            wait_for(server.answers, timeout=60, what=f"{name} /healthz", process=process)
            return server
        server._wait_ready()
        return server

    def _wait_ready(self) -> None:
        try:
            wait_for(self.ready, timeout=60, what=f"{self.process.name} /readyz", process=self.process)
        except BaseException:
            self.process.stop()
            raise

    def restart(self) -> None:
        """Start the same server again, on the same port, after `stop()`; wait until it is ready."""
        name, log_path = self.process.name, self.process.log_path
        self.process = Managed.spawn(name, self.argv, log_path=log_path, env=self.env)
        self._wait_ready()

    def get(self, path: str) -> tuple[int, bytes]:
        return https_get(self.port, path, ca_file=self.ca_file)

    def answers(self) -> bool:
        return self.get("/healthz")[0] == 200

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def readiness(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/readyz")[1]))

    def requests_total(self) -> float:
        """podgraft_admission_requests_total, all outcomes."""
        text = self.get("/metrics")[1].decode()
        pattern = re.compile(r"^podgraft_admission_requests_total\{[^}]*\} (\S+)$", re.M)
        return sum(float(value) for value in pattern.findall(text))

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics (None when absent)."""
        text = self.get("/metrics")[1].decode()
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
        return float(match.group(1)) if match else None

    def stop(self) -> None:
        self.process.stop()


# --- the Helm chart -------------------------------------------------------------------------------


def helm_binary() -> Path:
    result = subprocess.run(["bash", str(HELM_BUILD)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{HELM_BUILD} failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class ChartObjects:
    webhook: dict[str, Any]
    rbac: list[dict[str, Any]]
    service_account: tuple[str, str] = ("", "")  # (namespace, name) the RBAC binds
    policies: list[dict[str, Any]] = field(default_factory=list)  # ConfigMaps from policies.definitions

    def user(self) -> str:
        return f"system:serviceaccount:{self.service_account[0]}:{self.service_account[1]}"


def render_chart(
    *, ca_bundle: str, watch_namespaces: Sequence[str], policies: Mapping[str, Any] | None = None
) -> ChartObjects:
    """`helm template` the chart's webhook configuration, RBAC and policy ConfigMaps (from
    `policies.definitions`), with tls.mode=secret and our CA."""
    argv = [
        str(helm_binary()),
        "template",
        RELEASE,
        str(CHART),
        f"--namespace={PODGRAFT_NAMESPACE}",
        "--set=tls.mode=secret",
        "--set=tls.secret.name=podgraft-e2e-tls",
        f"--set=tls.secret.caBundle={ca_bundle}",
        f"--set-json=policies.watchNamespaces={json.dumps(list(watch_namespaces))}",
        f"--set-json=policies.definitions={json.dumps(dict(policies or {}))}",
        "--set=audit.enabled=true",  # the running audit: the server watches pods with the chart's RBAC
        "--show-only=templates/webhook.yaml",
        "--show-only=templates/rbac.yaml",
        *(["--show-only=templates/policies.yaml"] if policies else []),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{result.stderr}")
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    webhooks = [d for d in documents if d["kind"] == "MutatingWebhookConfiguration"]
    rbac = [d for d in documents if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    assert len(webhooks) == 1, f"expected one MutatingWebhookConfiguration, got {len(webhooks)}"
    binding = next(d for d in rbac if d["kind"] == "ClusterRoleBinding")
    subject = binding["subjects"][0]
    configmaps = [d for d in documents if d["kind"] == "ConfigMap"]
    return ChartObjects(webhooks[0], rbac, (subject["namespace"], subject["name"]), configmaps)


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


# --- a second webhook: adds a label -----------------------------------------------------------------


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
        cert, key = issue_certificate([LOOPBACK, "localhost"], ca_cert=ca_cert, ca_key=ca_key, days=2)
        (workdir / "labeller.crt").write_bytes(cert)
        (workdir / "labeller.key").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(workdir / "labeller.crt", workdir / "labeller.key")
        calls: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                request = review["request"]
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
        thread = threading.Thread(target=server.serve_forever, name="e2e-labeller", daemon=True)
        thread.start()
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


# --- the whole stack: control plane, chart objects, Podgraft, webhook -------------------------------


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
        workdir / "controlplane", extra_users=[(chart.user(), token, groups)], binaries=binaries
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

    def first_injection() -> None:
        body = kube.create_pod(warmup, pod(name="warmup", annotations={INJECT: warmup_policy}), dry_run=True)
        assert injected(body.body) == [warmup_policy], body.body["metadata"]

    eventually(first_injection, timeout=30, what="the apiserver calls Podgraft")
    timings["setup"] = time.monotonic() - started
    return env
