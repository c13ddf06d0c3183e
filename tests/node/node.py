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
All node state lives under the fixed `NODE_ROOT`, so that `clean_node_root` can also remove what a
killed run left behind: the processes in the node's cgroups and the runc shims (by PID), the mounts,
the bridge, the kubelet's and kube-proxy's iptables chains and the cgroups themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from tests.e2e.controlplane import LOOPBACK, REPO, ControlPlane, Managed, free_port, start_all, wait_for
from tests.e2e.harness import Kube

SETUP = REPO / "hack" / "node" / "setup.sh"
NODE_BINARIES = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
NODE_NAME = "podgraft-node"
NODE_ROOT = Path("/var/lib/podgraft-node")  # fixed, so that a later run cleans up a killed one
LOCK_FILE = Path("/var/lib/podgraft-node.lock")  # one node tier per machine at a time
BRIDGE = "pgnode0"
POD_SUBNET = "10.244.77.0/24"
NODE_IP = "10.244.77.1"  # the bridge's own address: the pods' gateway and the kubelet's address
SERVICE_RANGE = "10.0.0.0/24"  # the apiserver's --service-cluster-ip-range
CGROUP_ROOT = "podgraft-node"
CGROUPS = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")  # the bridge plugin turns it on; stop() restores it


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


# --- cleaning up: by PID, mount, link and cgroup -----------------------------------------------------


def _cgroup_dirs() -> list[Path]:
    """The node's cgroup directories in every v1 hierarchy (and the v2 one), deepest first."""
    found: list[Path] = []
    for hierarchy in CGROUPS.iterdir():
        top = hierarchy / CGROUP_ROOT
        if top.is_dir():
            found += [Path(path) for path, _, _ in os.walk(top)]
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _shims(root: Path) -> list[int]:
    """The PIDs of the runc shims serving this node's containerd (they outlive containerd)."""
    socket = f"{root}/containerd.sock".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if proc.name.isdigit() and argv[0].endswith(b"containerd-shim-runc-v2") and socket in argv:
                pids.append(int(proc.name))
    return pids


def _kill_node_processes(root: Path) -> None:
    """SIGKILL every process in the node's cgroups (containers) and every runc shim of its containerd."""
    for directory in _cgroup_dirs():
        with contextlib.suppress(OSError):
            for line in (directory / "cgroup.procs").read_text().split():
                _kill(int(line))
    for pid in _shims(root):
        _kill(pid)


def _mounts_under(root: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return points


def _remove_kube_chains() -> None:
    """Delete the `KUBE-*` iptables chains the kubelet and kube-proxy made, and the jumps to them."""
    for tool in ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy"):
        for table in ("filter", "nat", "mangle"):
            listing = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False)
            rules = [shlex.split(line) for line in listing.stdout.splitlines()]
            chains = [rule[1] for rule in rules if rule[:1] == ["-N"] and rule[1].startswith("KUBE-")]
            for rule in rules:
                if rule[:1] == ["-A"] and not rule[1].startswith("KUBE-") and any(c in rule for c in chains):
                    subprocess.run([tool, "-t", table, "-D", *rule[1:]], capture_output=True, check=False)
            for flag in ("-F", "-X"):
                for chain in chains:
                    subprocess.run([tool, "-t", table, flag, chain], capture_output=True, check=False)


def clean_node_root(root: Path) -> None:
    """Remove everything a node under `root` made, whether it stopped cleanly or was killed."""
    _kill_node_processes(root)
    for _ in range(10):  # a mount can hide another below it: until none is left
        points = _mounts_under(root)
        if not points:
            break
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    _remove_kube_chains()
    for directory in _cgroup_dirs():
        for _ in range(50):  # killed processes leave their cgroup a moment later
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True, check=False)


@contextlib.contextmanager
def exclusive_node() -> Iterator[None]:
    """Hold the machine-wide node lock: the bridge, the iptables rules and NODE_ROOT are global."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- configuration files ---------------------------------------------------------------------------


def containerd_config(root: Path, *, pause_image: str) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{root}/containerd"
state = "{root}/containerd-state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{root}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[{cri}]
  sandbox_image = "{pause_image}"
  netns_mounts_under_state_dir = true
  # this sandbox has no CAP_SYS_RESOURCE: runc cannot set a pod's oom_score_adj below containerd's
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{root}/cni"
    max_conf_num = 1
"""


def cni_config(root: Path) -> dict[str, Any]:
    """One bridge network; pods reach each other on it and Services through the host (kube-proxy),
    nothing else: no default route, no masquerading."""
    return {
        "cniVersion": "1.0.0",
        "name": "podgraft-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": SERVICE_RANGE}],
                    "dataDir": str(root / "cni-ipam"),
                },
            }
        ],
    }


def kubelet_config(root: Path, *, ca_file: Path, port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # this machine has cgroup v1
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "containerRuntimeEndpoint": f"unix://{root}/containerd.sock",
        "address": NODE_IP,  # the apiserver reaches kubelets at their InternalIP, never loopback
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": LOOPBACK,
        "healthzPort": healthz_port,
        # only the apiserver calls the kubelet, with its kubelet-client certificate
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "failSwapOn": False,
        "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE here: the kubelet cannot lower its own score either
        # the images are imported, never pulled: never garbage-collect them, never evict for disk
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1%", "nodefs.available": "1%", "imagefs.available": "1%"},
        "serializeImagePulls": False,
    }


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _make_bridge() -> None:
    """The CNI bridge, made before the first pod so that the kubelet has its node address on it.
    Bridged traffic goes through iptables (kube-proxy's Service NAT between pods on the bridge)."""
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if bridge_nf.exists():
        bridge_nf.write_text("1")
    for argv in (
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "address", "add", f"{NODE_IP}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
    ):
        subprocess.run(argv, capture_output=True, text=True, check=True)


def _make_cgroup_root() -> None:
    """The kubelet wants its cgroupRoot to exist; a v1 cpuset cgroup needs cpus and mems to be usable."""
    for hierarchy in CGROUPS.iterdir():
        if (hierarchy / "cgroup.procs").exists():
            (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)
    cpuset = CGROUPS / "cpuset"
    for name in ("cpuset.cpus", "cpuset.mems"):
        if (cpuset / name).exists():
            (cpuset / CGROUP_ROOT / name).write_text((cpuset / name).read_text())


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
        _make_bridge()
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
        _make_cgroup_root()
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
        kube = Kube(self.plane.admin_kubeconfig)
        kubelet = next(p for p in self.processes if p.name == "kubelet")

        def ready() -> bool:
            node = json.loads(kube.core.read_node(NODE_NAME, _preload_content=False).data)
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions") or []}
            return conditions.get("Ready") == "True" and not node["spec"].get("taints")

        try:
            wait_for(ready, timeout=120, what=f"node {NODE_NAME} Ready and untainted", process=kubelet)
        finally:
            kube.close()

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
    kube = Kube(plane.admin_kubeconfig)

    def remaining() -> list[dict[str, Any]]:
        return list(json.loads(kube.core.list_pod_for_all_namespaces(_preload_content=False).data)["items"])

    try:
        for item in remaining():
            with contextlib.suppress(ApiException):
                meta = item["metadata"]
                kube.core.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=1)
        wait_for(lambda: not remaining(), timeout=timeout, what="every pod removed")
    finally:
        kube.close()
