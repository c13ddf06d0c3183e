"""A real etcd + kube-apiserver, for the e2e tier on loopback (no kubelet, no controllers) and, with
a node beside it (node.py, cluster.py), for the node tier and `make cluster`.

`ControlPlane.start(workdir)` builds (or reuses) the pinned binaries through
`hack/controlplane/build.sh` (more of them when asked: `binaries=`), writes certificates, a static
token file and kubeconfigs, starts etcd and kube-apiserver on free ports in process groups of their
own, and waits for `/readyz`. `stop()` kills both groups by PID, whatever state they are in; it is
safe to call twice. The apiserver also gets a kubelet client certificate (for pod logs and
`kubectl debug` when a kubelet runs) and reaches kubelets at their InternalIP.

Two ways to run it:
- on loopback (the e2e tier): no ServiceAccount admission (no controller-manager makes the
  accounts), no `kubernetes` Service endpoint; Podgraft runs on the host;
- `in_cluster` at an `address` pods can reach (the node's bridge address): the ServiceAccount
  admission plugin on, tokens issued (TokenRequest, signed with sa.key), the `kubernetes` Service
  at KUBERNETES_SERVICE_IP with this address as its endpoint (the lease reconciler), and both in
  the serving certificate, so that pods reach the apiserver in-cluster with their projected token.

Two identities are issued (static bearer tokens):
- `admin` in `system:masters`, used by the tests;
- `system:serviceaccount:<ns>:<sa>`, used by Podgraft, so that it runs with exactly the RBAC the
  Helm chart grants its ServiceAccount (the tests apply the chart's rendered Role/ClusterRole).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client, config

from app.certs import generate_ca, issue_certificate

from .processes import LOOPBACK, REPO, Managed, free_port, https_get, start_all, wait_for

BUILD_SCRIPT = REPO / "hack" / "controlplane" / "build.sh"
SERVICE_RANGE = "10.0.0.0/24"  # --service-cluster-ip-range
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: the range's first address
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


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


@contextlib.contextmanager
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    """A Kubernetes API client for `kubeconfig`, closed on leaving the block."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


def write_kubeconfig(path: Path, *, server: str, ca_file: Path, user: str, token: str) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }
    return _write(path, yaml.safe_dump(document))


@dataclass
class ControlPlane:
    """etcd + kube-apiserver, their files, and how to reach them."""

    workdir: Path
    binaries: Binaries
    address: str = LOOPBACK
    in_cluster: bool = False
    service_accounts: bool = False
    detached: bool = False
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
        return f"https://{self.address}:{self.apiserver_port}"

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
        address: str = LOOPBACK,
        in_cluster: bool = False,
        service_accounts: bool = False,
        detached: bool = False,
    ) -> ControlPlane:
        """Start both processes; on any failure, stop what was started and re-raise.

        `extra_users` are (user name, token, groups) added to the static token file; `binaries`
        are built (or found) besides etcd and kube-apiserver, for whoever runs more components;
        `address` is where the apiserver listens and what it advertises; `in_cluster` see above;
        `service_accounts` turns the ServiceAccount admission plugin on without the rest of
        `in_cluster` (on loopback, for a controller-manager that makes the accounts);
        `detached` processes outlive this Python process (`make cluster`).
        """
        plane = cls(
            workdir=workdir,
            binaries=build_binaries(tuple(dict.fromkeys([*CONTROL_PLANE, *binaries]))),
            address=address,
            in_cluster=in_cluster,
            service_accounts=service_accounts,
            detached=detached,
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
        names += ["kubernetes.default.svc.cluster.local", KUBERNETES_SERVICE_IP] if self.in_cluster else []
        names += [self.address] if self.address not in names else []
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
        self.etcd_port, self.apiserver_port = free_port(), free_port(self.address)
        self.admin_kubeconfig = self.kubeconfig_for("admin", self.admin_token, "admin.kubeconfig")

    def _spawn(self, name: str, argv: Sequence[str]) -> Managed:
        process = Managed.spawn(
            name, argv, log_path=self.workdir / "logs" / f"{name}.log", detached=self.detached
        )
        self.processes.append(process)
        return process

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd-data"
        peer_port = free_port()
        client_url = f"http://{LOOPBACK}:{self.etcd_port}"
        peer_url = f"http://{LOOPBACK}:{peer_port}"
        etcd = self._spawn(
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
        )

        def healthy() -> bool:
            conn = http.client.HTTPConnection(LOOPBACK, self.etcd_port, timeout=2)
            try:
                conn.request("GET", "/health")
                response = conn.getresponse()
                return response.status == 200 and json.loads(response.read()).get("health") == "true"
            finally:
                conn.close()

        wait_for(healthy, timeout=30, what="etcd /health", process=etcd)

    def _admission_flags(self) -> list[str]:
        if self.in_cluster:
            return []  # the default plugins, ServiceAccount among them; the lease endpoint reconciler
        if self.service_accounts:
            return ["--endpoint-reconciler-type=none"]
        return [
            # no controller-manager: no token controller, so do not require service accounts
            "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none",
        ]

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers=http://{LOOPBACK}:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--authorization-mode=RBAC",
                "--kubelet-preferred-address-types=InternalIP",  # a node's name is no DNS name here
                "--allow-privileged=true",
                *self._admission_flags(),
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
        )

        def get(path: str) -> tuple[int, bytes]:
            return https_get(
                self.apiserver_port, path, ca_file=self.ca_file, token=self.admin_token, host=self.address
            )

        def ready() -> bool:
            return get("/readyz")[0] == 200

        wait_for(ready, timeout=120, what="kube-apiserver /readyz", process=apiserver)
        self.version = str(json.loads(get("/version")[1]).get("gitVersion", ""))

    def stop(self) -> None:
        """Kill the apiserver, then etcd (each by its process group)."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
