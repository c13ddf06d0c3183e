"""A real single node beside the control plane, all on this machine.

- kube-controller-manager (every controller, the token controller with sa.key among them) and
  kube-scheduler, built from the pinned modules like kube-apiserver;
- containerd and runc from Debian (CRI plugin, overlayfs snapshotter, runc v2 shim), with the CNI
  bridge + host-local + loopback plugins from Debian's containernetworking-plugins: pods get
  addresses in `POD_SUBNET` on the bridge `BRIDGE`, routed only to each other and to Services;
- a kubelet (cgroupfs driver, cgroup v1 allowed by `failCgroupV1: false`) serving on the bridge;
- kube-proxy in iptables mode, so Service ClusterIPs answer.

`Node.start` builds nothing itself: `hack/controlplane/build.sh` brings the binaries,
`hack/node/setup.sh` the Debian packages and the two images (pause, busybox), `hack/image/build.sh`
Podgraft's image; all are imported with `ctr images import`. It checks what runs: the kubelet's
version is the pinned Kubernetes and the runtime the pinned containerd (`node.status.nodeInfo`).
Every process runs in its own process group and is stopped by its PID. The components'
configuration files come from configs.py; the bridge, and cleaning up the host, from host.py
(`cluster.LocalCluster` does both around this).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from app.cluster.client import raw_json

from .configs import cni_config, containerd_config, kubelet_config
from .controlplane import ControlPlane, api_client
from .host import NODE_IP, NODE_ROOT, POD_SUBNET, make_cgroup_root
from .processes import LOOPBACK, REPO, Managed, free_port, start_all, wait_for

SETUP = REPO / "hack" / "node" / "setup.sh"
IMAGE_BUILD = REPO / "hack" / "image" / "build.sh"
KUBERNETES_MODULE = REPO / "hack" / "controlplane" / "kubernetes" / "go.mod"
NODE_BINARIES = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
NODE_NAME = "podgraft-node"


def pinned_kubernetes() -> str:
    """The k8s.io/kubernetes version of hack/controlplane/kubernetes/go.mod (v1.35.4)."""
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)$", KUBERNETES_MODULE.read_text(), re.M)
    assert match, f"no k8s.io/kubernetes requirement in {KUBERNETES_MODULE}"
    return match.group(1)


@dataclass(frozen=True)
class Images:
    """The images the node runs, by name, and the archives they are imported from."""

    pause: str
    busybox: str
    podgraft: str  # Podgraft's own, from the Dockerfile
    archives: tuple[Path, ...]
    containerd: str  # the containerd version setup.sh pins (1.6.20)
    seconds: float = 0.0


def _run_script(script: Path) -> dict[str, str]:
    """Run a hack/ script that prints `KEY=VALUE` lines; fail with its stderr."""
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def prepare_images() -> Images:
    """hack/node/setup.sh (installs the Debian packages when missing; pause and busybox, cached)
    and hack/image/build.sh (Podgraft's image from the Dockerfile, cached by content)."""
    started = time.monotonic()
    found = _run_script(SETUP) | _run_script(IMAGE_BUILD)
    refs = {key: found[key].split(" ", 1) for key in ("pause", "busybox", "podgraft")}
    return Images(
        pause=refs["pause"][0],
        busybox=refs["busybox"][0],
        podgraft=refs["podgraft"][0],
        archives=tuple(Path(archive) for _, archive in refs.values()),
        containerd=found["containerd"],
        seconds=time.monotonic() - started,
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the node --------------------------------------------------------------------------------------


@dataclass
class Node:
    """The node's processes, how to reach its container runtime, and what it reports it runs."""

    plane: ControlPlane
    images: Images
    workdir: Path
    root: Path = NODE_ROOT
    detached: bool = False
    processes: list[Managed] = field(default_factory=list)
    start_seconds: float = 0.0
    kubelet_version: str = ""
    runtime_version: str = ""

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @classmethod
    def start(cls, plane: ControlPlane, images: Images, *, workdir: Path, detached: bool = False) -> Node:
        """Start every component, wait for the node to be Ready; on failure, stop what was started.
        The host must be prepared (host.prepare_host: the bridge) before the control plane."""
        node = cls(plane, images, workdir, detached=detached)
        steps = [
            node._start_controllers,
            node._start_containerd,
            node._start_kubelet,
            node._start_kube_proxy,
            node._wait_ready,
        ]
        node.start_seconds = start_all(steps, stop=node.stop)
        return node

    def _spawn(self, name: str, argv: Sequence[str | Path]) -> Managed:
        process = Managed.spawn(
            name,
            [str(a) for a in argv],
            log_path=self.workdir / "logs" / f"{name}.log",
            detached=self.detached,
        )
        self.processes.append(process)
        return process

    def _start_controllers(self) -> None:
        plane, binaries = self.plane, self.plane.binaries
        common = [
            f"--kubeconfig={plane.admin_kubeconfig}",
            f"--bind-address={LOOPBACK}",
            "--leader-elect=false",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                binaries["kube-controller-manager"],
                *common,
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kube-controller-manager'}",
                f"--root-ca-file={plane.ca_file}",  # published in every namespace: kube-root-ca.crt
                f"--service-account-private-key-file={plane.workdir / 'pki' / 'sa.key'}",
                "--use-service-account-credentials=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                binaries["kube-scheduler"],
                *common,
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kube-scheduler'}",
                "--v=1",
            ],
        )

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    def import_image(self, archive: Path) -> None:
        """`ctr images import` an OCI archive into the CRI's namespace (never pulled: pullPolicy Never)."""
        result = self.ctr("images", "import", "--digests", "--snapshotter=overlayfs", str(archive))
        if result.returncode != 0:
            raise RuntimeError(f"ctr images import {archive} failed: {result.stderr}")

    def tag_image(self, source: str, target: str) -> None:
        result = self.ctr("images", "tag", "--force", source, target)
        if result.returncode != 0:
            raise RuntimeError(f"ctr images tag {source} {target} failed: {result.stderr}")

    def _start_containerd(self) -> None:
        config = _write(
            self.root / "containerd.toml", containerd_config(self.root, pause_image=self.images.pause)
        )
        _write(self.root / "cni" / "10-podgraft.conflist", json.dumps(cni_config(self.root), indent=2))
        containerd = self._spawn("containerd", ["containerd", f"--config={config}", "--log-level=warn"])
        wait_for(
            lambda: self.ctr("version").returncode == 0, timeout=60, what="containerd", process=containerd
        )
        for archive in self.images.archives:
            self.import_image(archive)

    def _start_kubelet(self) -> None:
        make_cgroup_root()
        config = kubelet_config(
            self.root, ca_file=self.plane.ca_file, port=free_port(), healthz_port=free_port()
        )
        path = _write(self.root / "kubelet.yaml", yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                self.plane.binaries["kubelet"],
                f"--config={path}",
                f"--kubeconfig={self.plane.admin_kubeconfig}",
                f"--root-dir={self.root / 'kubelet'}",
                f"--cert-dir={self.root / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        self._spawn(
            "kube-proxy",
            [
                self.plane.binaries["kube-proxy"],
                f"--kubeconfig={self.plane.admin_kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={POD_SUBNET}",
                f"--bind-address={LOOPBACK}",
                f"--healthz-bind-address={LOOPBACK}:{free_port()}",
                f"--metrics-bind-address={LOOPBACK}:{free_port()}",
                "--conntrack-max-per-core=0",  # leave the host's conntrack table size alone
                "--iptables-localhost-nodeports=false",
                "--v=1",
            ],
        )

    def _wait_ready(self) -> None:
        kubelet = next(p for p in self.processes if p.name == "kubelet")
        with api_client(self.plane.admin_kubeconfig) as api:
            core = client.CoreV1Api(api)

            def ready() -> bool:
                node = raw_json(core.read_node, NODE_NAME)
                conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions") or []}
                info = node.get("status", {}).get("nodeInfo") or {}
                self.kubelet_version = str(info.get("kubeletVersion", ""))
                self.runtime_version = str(info.get("containerRuntimeVersion", ""))
                return conditions.get("Ready") == "True" and not node["spec"].get("taints")

            wait_for(ready, timeout=120, what=f"node {NODE_NAME} Ready and untainted", process=kubelet)
        # what runs is what is pinned: the kubelet of k8s.io/kubernetes, the containerd of setup.sh
        if self.kubelet_version != pinned_kubernetes():
            raise RuntimeError(f"the node runs kubelet {self.kubelet_version}, pinned: {pinned_kubernetes()}")
        runtime = f"containerd://{self.images.containerd}"
        if not self.runtime_version.startswith(runtime):
            raise RuntimeError(f"the node runs {self.runtime_version}, pinned: {runtime}")

    def stop(self) -> None:
        """Stop the controllers (nothing is re-created), let the kubelet tear every pod down (its
        network too), then stop the rest by process group (host.clean_host removes what is left)."""
        controllers = [p for p in self.processes if p.name in ("kube-controller-manager", "kube-scheduler")]
        for process in controllers:
            process.stop()
        kubelet = next((p for p in self.processes if p.name == "kubelet" and p.alive()), None)
        if kubelet is not None:
            with contextlib.suppress(Exception):
                _delete_all_pods(self.plane, timeout=60)
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def _delete_all_pods(plane: ControlPlane, *, timeout: float) -> None:
    """Delete every pod with a short grace period and wait until the kubelet has removed them all."""
    with api_client(plane.admin_kubeconfig) as api:
        core = client.CoreV1Api(api)

        def remaining() -> list[dict[str, Any]]:
            return list(raw_json(core.list_pod_for_all_namespaces)["items"])

        for item in remaining():
            with contextlib.suppress(ApiException):
                meta = item["metadata"]
                core.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=1)
        wait_for(lambda: not remaining(), timeout=timeout, what="every pod removed")
