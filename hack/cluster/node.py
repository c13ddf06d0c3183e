"""A real single node beside the e2e control plane, all on this machine.

- kube-controller-manager and kube-scheduler, built from the pinned modules like kube-apiserver;
- containerd and runc from Debian (CRI plugin, overlayfs snapshotter, runc v2 shim), with the CNI
  bridge + host-local + loopback plugins from Debian's containernetworking-plugins: pods get
  addresses in `POD_SUBNET` on the bridge `BRIDGE`, routed only to each other and to Services;
- a kubelet (cgroupfs driver, cgroup v1 allowed by `failCgroupV1: false`) serving on loopback;
- kube-proxy in iptables mode, so Service ClusterIPs answer.

`Node.start` builds nothing itself: `hack/controlplane/build.sh` brings the binaries and
`hack/node/setup.sh` the Debian packages and the two images (pause, busybox), which are imported
with `ctr images import`. Every process runs in its own process group and is stopped by its PID.
The components' configuration files come from configs.py. All node state lives under the fixed
`NODE_ROOT` (host.py, with the bridge and the cgroups), so that `host.clean_node_root` can also
remove what a killed run left behind: the processes in the node's cgroups and the runc shims (by
PID), the mounts, the bridge, the kubelet's and kube-proxy's iptables chains and the cgroups themselves.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .configs import cni_config, containerd_config, kubelet_config
from .controlplane import ControlPlane, api_client
from .host import IP_FORWARD, NODE_IP, NODE_ROOT, POD_SUBNET, clean_node_root, make_bridge, make_cgroup_root
from .processes import LOOPBACK, REPO, Managed, free_port, start_all, wait_for

SETUP = REPO / "hack" / "node" / "setup.sh"
NODE_BINARIES = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
NODE_NAME = "podgraft-node"


@dataclass(frozen=True)
class Images:
    """The images setup.sh built: name -> archive, plus the two names the tests use."""

    pause: str
    busybox: str
    archives: tuple[Path, ...]


def prepare_images() -> Images:
    """Run hack/node/setup.sh (installs the Debian packages when missing; images are cached)."""
    result = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{SETUP} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    images = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    refs = {key: value.split(" ", 1) for key, value in images.items()}
    return Images(
        pause=refs["pause"][0],
        busybox=refs["busybox"][0],
        archives=tuple(Path(archive) for _, archive in refs.values()),
    )


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the node --------------------------------------------------------------------------------------


@dataclass
class Node:
    """The node's processes and how to reach its container runtime."""

    plane: ControlPlane
    images: Images
    workdir: Path
    root: Path = NODE_ROOT
    processes: list[Managed] = field(default_factory=list)
    start_seconds: float = 0.0
    ip_forward: str = ""

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    @classmethod
    def start(cls, plane: ControlPlane, images: Images, *, workdir: Path) -> Node:
        """Start every component, wait for the node to be Ready; on failure, stop and clean up."""
        node = cls(plane, images, workdir)
        steps = [
            lambda: clean_node_root(node.root),
            node._start_controllers,
            node._start_containerd,
            node._start_kubelet,
            node._start_kube_proxy,
            node._wait_ready,
        ]
        node.start_seconds = start_all(steps, stop=node.stop)
        return node

    def _spawn(self, name: str, argv: Sequence[str | Path]) -> Managed:
        process = Managed.spawn(name, [str(a) for a in argv], log_path=self.workdir / "logs" / f"{name}.log")
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
                f"--root-ca-file={plane.ca_file}",
                "--use-service-account-credentials=false",
                "--controllers=*,-serviceaccount-token",  # no signing key: the pods mount no tokens
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
            timeout=120,
        )

    def _start_containerd(self) -> None:
        self.ip_forward = IP_FORWARD.read_text()
        make_bridge()
        config = _write(
            self.root / "containerd.toml", containerd_config(self.root, pause_image=self.images.pause)
        )
        _write(self.root / "cni" / "10-podgraft.conflist", json.dumps(cni_config(self.root), indent=2))
        containerd = self._spawn("containerd", ["containerd", f"--config={config}", "--log-level=warn"])
        wait_for(
            lambda: self.ctr("version").returncode == 0, timeout=60, what="containerd", process=containerd
        )
        for archive in self.images.archives:
            result = self.ctr("images", "import", "--digests", "--snapshotter=overlayfs", str(archive))
            if result.returncode != 0:
                raise RuntimeError(f"ctr images import {archive} failed: {result.stderr}")

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
        api = api_client(self.plane.admin_kubeconfig)
        core = client.CoreV1Api(api)
        kubelet = next(p for p in self.processes if p.name == "kubelet")

        def ready() -> bool:
            node = json.loads(core.read_node(NODE_NAME, _preload_content=False).data)
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions") or []}
            return conditions.get("Ready") == "True" and not node["spec"].get("taints")

        try:
            wait_for(ready, timeout=120, what=f"node {NODE_NAME} Ready and untainted", process=kubelet)
        finally:
            api.close()

    def stop(self) -> None:
        """Stop the controllers (nothing is re-created), let the kubelet tear every pod down (its
        network too), stop the rest by process group, then clean NODE_ROOT up."""
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
        clean_node_root(self.root)
        if self.ip_forward:
            IP_FORWARD.write_text(self.ip_forward)


def _delete_all_pods(plane: ControlPlane, *, timeout: float) -> None:
    """Delete every pod with a short grace period and wait until the kubelet has removed them all."""
    api = api_client(plane.admin_kubeconfig)
    core = client.CoreV1Api(api)

    def remaining() -> list[dict[str, Any]]:
        return list(json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)["items"])

    try:
        for item in remaining():
            with contextlib.suppress(ApiException):
                meta = item["metadata"]
                core.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=1)
        wait_for(lambda: not remaining(), timeout=timeout, what="every pod removed")
    finally:
        api.close()
