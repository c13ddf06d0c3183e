"""Helpers of the integration tier: the real `podgraft serve` process, HTTPS clients, review builders.

The server runs as a subprocess started with the installed console script, with certificates made
by `podgraft certs generate`. Its certificate files sit in a Kubernetes-Secret-like layout
(`tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>/`), so a rotation swaps both files at once,
as the kubelet does for a mounted Secret.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PODGRAFT = BIN / "podgraft"
EXAMPLE_POLICIES = REPO / "examples" / "policies"
EXAMPLE_POD = REPO / "examples" / "pods" / "web.yaml"
V1 = "admission.k8s.io/v1"
V1BETA1 = "admission.k8s.io/v1beta1"
NAMESPACE = "shop"
STARTUP_TIMEOUT = 20.0
POLL = 0.05


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def generate_certs(out: Path) -> None:
    """The project's own cert command (as `make run` uses it)."""
    subprocess.run(
        [
            str(PODGRAFT),
            "certs",
            "generate",
            "--service",
            "podgraft",
            "--namespace",
            "podgraft",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=30,
        env=clean_env(),
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The test environment without any PODGRAFT_* variable that could leak into the server, except
    the engine's form the tests run against (PODGRAFT_ENGINE, see `make test`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("PODGRAFT_") or k == "PODGRAFT_ENGINE") and k != "POD_NAMESPACE"
    }
    env.update(extra)
    return env


class SecretDir:
    """A directory laid out like a mounted Secret: files are symlinks through `..data`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._generation = 0

    @property
    def cert(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key(self) -> Path:
        return self.root / "tls.key"

    def publish(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Swap in a new cert/key pair atomically (new timestamped dir, then `..data` renamed over)."""
        self._generation += 1
        version = self.root / f"..{time.time_ns()}_{self._generation}"
        version.mkdir()
        (version / "tls.crt").write_bytes(cert_pem)
        (version / "tls.key").write_bytes(key_pem)
        os.chmod(version / "tls.key", 0o600)
        link = self.root / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(version.name)
        old = (self.root / "..data").resolve() if (self.root / "..data").is_symlink() else None
        link.replace(self.root / "..data")
        for name in ("tls.crt", "tls.key"):
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")
        if old is not None and old.is_dir():
            shutil.rmtree(old)

    def current(self) -> tuple[bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes()


@dataclass
class Server:
    """One running `podgraft serve`, its files and its log."""

    port: int
    ca_file: Path
    ca_key_file: Path
    secret: SecretDir
    policy_dir: Path
    log_file: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        import json

        records = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def start(self) -> None:
        args = [
            str(PODGRAFT),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--policies",
            str(self.policy_dir),
            "--tls-cert",
            str(self.secret.cert),
            "--tls-key",
            str(self.secret.key),
            "--log-level",
            "info",
            *self.extra_args,
        ]
        log = self.log_file.open("ab")
        try:
            # setpriv --pdeathsig: the server dies with the test process even if that is SIGKILLed.
            setpriv = shutil.which("setpriv")
            prefix = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
            self.process = subprocess.Popen(
                [*prefix, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.log_file.parent,
                env=clean_env(**self.env),
            )
        finally:
            log.close()
        self.wait_ready()

    def readiness_context(self) -> ssl.SSLContext:
        """The TLS context `wait_ready` polls /readyz with (a subclass may present a client cert)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(verify=self.readiness_context(), timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"podgraft serve exited with {self.process.returncode}:\n{self.log_text()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.base_url}/readyz").status_code == 200:
                        return
                time.sleep(POLL)
        raise RuntimeError(f"podgraft serve not ready within {STARTUP_TIMEOUT}s:\n{self.log_text()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def build_server(
    root: Path, *, env: Mapping[str, str] | None = None, extra_args: list[str] | None = None
) -> Server:
    """Certificates from `podgraft certs generate`, a Secret-like cert dir, a copy of the example policies."""
    generated = root / "generated"
    generate_certs(generated)
    secret = SecretDir(root / "secret")
    secret.publish((generated / "tls.crt").read_bytes(), (generated / "tls.key").read_bytes())
    policies = root / "policies"
    shutil.copytree(EXAMPLE_POLICIES, policies)
    return Server(
        port=free_port(),
        ca_file=generated / "ca.crt",
        ca_key_file=generated / "ca.key",
        secret=secret,
        policy_dir=policies,
        log_file=root / "server.log",
        env=dict(env or {}),
        extra_args=list(extra_args or []),
    )


@contextlib.contextmanager
def running(server: Server, *, attempts: int = 3) -> Iterator[Server]:
    """Start the server (on another free port if the chosen one was taken meanwhile); always stop it."""
    try:
        for attempt in range(attempts):
            try:
                server.start()
                break
            except RuntimeError:
                server.stop()
                if attempt == attempts - 1 or "address already in use" not in server.log_text().lower():
                    raise
                server.port = free_port()
        yield server
    finally:
        server.stop()


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def peer_certificate(
    port: int, context: ssl.SSLContext, *, server_name: str = "localhost"
) -> x509.Certificate:
    """Do a fresh TLS handshake and return the certificate the server presented."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_for(
    probe: Callable[[], Any],
    *,
    until: Callable[[Any], Any] = bool,
    timeout: float = 5.0,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    """Poll `probe` until `until(value)` holds; return that value, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if until(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last value: {last!r})")
        time.sleep(interval)


# --- reviews and pods --------------------------------------------------------------------------------


def load_pod(path: Path = EXAMPLE_POD) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def pod(
    name: str = "app",
    *,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    namespace: str | None = NAMESPACE,
    **spec: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = dict(annotations)
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": containers or [{"name": "app", "image": "nginx:1.27"}], **spec},
    }


def review(
    obj: Mapping[str, Any] | None,
    *,
    operation: str = "CREATE",
    api_version: str = V1,
    uid: str | None = None,
    namespace: str = NAMESPACE,
    resource: str = "pods",
    group: str = "",
    kind: str = "Pod",
    sub_resource: str | None = None,
    old_object: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview as the kube-apiserver sends it."""
    metadata = (obj or {}).get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "requestKind": {"group": group, "version": "v1", "kind": kind},
        "requestResource": {"group": group, "version": "v1", "resource": resource},
        "name": name if isinstance(name, str) else "",
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "dryRun": False,
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    if obj is not None:
        request["object"] = copy.deepcopy(dict(obj))
    if old_object is not None:
        request["oldObject"] = copy.deepcopy(dict(old_object))
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    import json

    assert response.get("patchType") == "JSONPatch", response
    operations: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"], validate=True))
    return operations


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{labels}': value} (labels as written by the client)."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^(\S+?(?:\{.*\})?)\s+(\S+)$", line)
        assert match is not None, line
        samples[match.group(1)] = float(match.group(2))
    return samples
