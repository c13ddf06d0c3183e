"""A real etcd + kube-apiserver on loopback for the e2e tier (no kubelet, no controllers; the node
tier, tests/node, adds them beside this control plane).

`ControlPlane.start(workdir)` builds (or reuses) the pinned binaries through
`hack/controlplane/build.sh` (more of them when asked: `binaries=`), writes certificates, a static
token file and kubeconfigs, starts etcd and kube-apiserver on free loopback ports in process groups
of their own, and waits for `/readyz`. `stop()` kills both groups by PID, whatever state they are
in; it is safe to call twice. The apiserver also gets a kubelet client certificate (for pod logs
and `kubectl debug` when a kubelet runs) and reaches kubelets at their InternalIP.

Two identities are issued (static bearer tokens):
- `admin` in `system:masters`, used by the tests;
- `system:serviceaccount:<ns>:<sa>`, used by Podgraft, so that it runs with exactly the RBAC the
  Helm chart grants its ServiceAccount (the tests apply the chart's rendered Role/ClusterRole).
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.certs import generate_ca, issue_certificate

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "controlplane" / "build.sh"
LOOPBACK = "127.0.0.1"


# --- processes ------------------------------------------------------------------------------------

_LIVE: dict[int, Managed] = {}


def _with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """Prefix `setpriv --pdeathsig KILL` (util-linux) when present: the child then dies with the test
    process even when that is SIGKILLed and no finalizer runs. (No preexec_fn: unsafe with threads.)"""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


@dataclass
class Managed:
    """A child process in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(
        cls, name: str, argv: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None
    ) -> Managed:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                _with_parent_death_signal(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: killpg reaches any grandchildren
            )
        managed = cls(name, popen, log_path)
        _LIVE[popen.pid] = managed
        return managed

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited within `timeout`."""
        _LIVE.pop(self.pid, None)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the leader may be gone while group members linger
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@atexit.register
def _kill_leftovers() -> None:
    """Last resort (an interrupted session): nothing we started may outlive the test process."""
    for managed in list(_LIVE.values()):
        managed.stop(timeout=3)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, process: Managed | None = None) -> None:
    """Poll `check` until it is true; fail early (with the log tail) if `process` exits."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode} while waiting for {what}:\n"
                f"{process.tail()}"
            )
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(0.2)
    tail = f"\n{process.name} log:\n{process.tail()}" if process is not None else ""
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last error: {last_error}){tail}")


def https_get(
    port: int, path: str, *, ca_file: Path, token: str | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET https://127.0.0.1:port/path, verifying the server against `ca_file`; never uses a proxy."""
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_all(steps: Sequence[Callable[[], None]], *, stop: Callable[[], None]) -> float:
    """Run the start-up `steps` in order; if any fails, `stop` what was started and re-raise.
    Returns the seconds they took."""
    started = time.monotonic()
    try:
        for step in steps:
            step()
    except BaseException:
        stop()
        raise
    return time.monotonic() - started


# --- build ----------------------------------------------------------------------------------------


CONTROL_PLANE = ("kube-apiserver", "etcd")


@dataclass(frozen=True)
class Binaries:
    """Where each binary that `hack/controlplane/build.sh` was asked for is."""

    paths: Mapping[str, Path]
    build_seconds: float

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def build_binaries(names: Sequence[str] = CONTROL_PLANE) -> Binaries:
    """Run hack/controlplane/build.sh for `names` (a no-op when cached, or found in
    KUBEBUILDER_ASSETS); it prints `NAME=PATH` per binary."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *names], capture_output=True, text=True, check=False, cwd=REPO
    )
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    if result.stderr.strip():
        sys.stderr.write(result.stderr)
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Binaries({name: Path(path) for name, path in pairs}, time.monotonic() - started)


# --- certificates and kubeconfigs -----------------------------------------------------------------


def _write(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def write_kubeconfig(path: Path, *, server: str, ca_file: Path, user: str, token: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }
    return _write(path, yaml.safe_dump(config))


@dataclass
class ControlPlane:
    """etcd + kube-apiserver, their files, and how to reach them."""

    workdir: Path
    binaries: Binaries
    etcd_port: int = 0
    apiserver_port: int = 0
    ca_file: Path = field(default_factory=Path)
    admin_token: str = ""
    admin_kubeconfig: Path = field(default_factory=Path)
    processes: list[Managed] = field(default_factory=list)
    start_seconds: float = 0.0
    version: str = ""

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.apiserver_port}"

    def kubeconfig_for(self, user: str, token: str, name: str) -> Path:
        return write_kubeconfig(
            self.workdir / name, server=self.server, ca_file=self.ca_file, user=user, token=token
        )

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        extra_users: Sequence[tuple[str, str, Sequence[str]]] = (),
        binaries: Sequence[str] = CONTROL_PLANE,
    ) -> ControlPlane:
        """Start both processes; on any failure, stop what was started and re-raise.

        `extra_users` are (user name, token, groups) added to the static token file; `binaries`
        are built (or found) besides etcd and kube-apiserver, for whoever runs more components.
        """
        plane = cls(
            workdir=workdir, binaries=build_binaries(tuple(dict.fromkeys([*CONTROL_PLANE, *binaries])))
        )
        steps = [lambda: plane._files(extra_users), plane._start_etcd, plane._start_apiserver]
        plane.start_seconds = start_all(steps, stop=plane.stop)
        return plane

    def _files(self, extra_users: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = generate_ca("e2e-kubernetes-ca")
        self.ca_file = _write(pki / "ca.crt", ca_cert, 0o644)
        names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost", LOOPBACK]
        cert, key = issue_certificate(names, ca_cert=ca_cert, ca_key=ca_key, days=2)
        _write(pki / "apiserver.crt", cert, 0o644)
        _write(pki / "apiserver.key", key)
        # how the apiserver authenticates to kubelets (pod logs, exec), when a node runs
        cert, key = issue_certificate(
            ["kube-apiserver-kubelet-client"], ca_cert=ca_cert, ca_key=ca_key, days=2, client=True
        )
        _write(pki / "kubelet-client.crt", cert, 0o644)
        _write(pki / "kubelet-client.key", key)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(
            pki / "sa.key",
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        _write(
            pki / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            0o644,
        )
        self.admin_token = secrets.token_urlsafe(24)
        rows = [("admin", self.admin_token, ["system:masters"]), *extra_users]
        lines = [f'{token},{user},{user},"{",".join(groups)}"' for user, token, groups in rows]
        _write(pki / "tokens.csv", "\n".join(lines) + "\n")
        self.etcd_port, self.apiserver_port = free_port(), free_port()
        self.admin_kubeconfig = self.kubeconfig_for("admin", self.admin_token, "admin.kubeconfig")

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd-data"
        peer_port = free_port()
        client_url = f"http://{LOOPBACK}:{self.etcd_port}"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        etcd = Managed.spawn(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=e2e",
                f"--data-dir={data}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--unsafe-no-fsync=true",  # a throwaway cluster: speed over durability
                "--log-level=warn",
            ],
            log_path=self.workdir / "logs" / "etcd.log",
        )
        self.processes.append(etcd)

        def healthy() -> bool:
            conn = http.client.HTTPConnection(LOOPBACK, self.etcd_port, timeout=2)
            try:
                conn.request("GET", "/health")
                response = conn.getresponse()
                return response.status == 200 and json.loads(response.read()).get("health") == "true"
            finally:
                conn.close()

        wait_for(healthy, timeout=30, what="etcd /health", process=etcd)

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        apiserver = Managed.spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers=http://{LOOPBACK}:{self.etcd_port}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--kubelet-preferred-address-types=InternalIP",  # a node's name is no DNS name here
                "--allow-privileged=true",
                # no controller-manager: no token controller, so do not require service accounts
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
            log_path=self.workdir / "logs" / "kube-apiserver.log",
        )
        self.processes.append(apiserver)

        def ready() -> bool:
            status, _ = https_get(
                self.apiserver_port, "/readyz", ca_file=self.ca_file, token=self.admin_token
            )
            return status == 200

        wait_for(ready, timeout=120, what="kube-apiserver /readyz", process=apiserver)
        _, body = https_get(self.apiserver_port, "/version", ca_file=self.ca_file, token=self.admin_token)
        self.version = str(json.loads(body).get("gitVersion", ""))

    def stop(self) -> None:
        """Kill the apiserver, then etcd (each by its process group)."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
