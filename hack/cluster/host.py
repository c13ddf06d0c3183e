"""What the node tier makes on this machine, and how it is all removed again: the CNI bridge, the
cgroup root, the processes in the node's cgroups and the runc shims, mounts, the kubelet's and
kube-proxy's iptables chains, and `NODE_ROOT`. All of it is global to the machine, hence one node
tier at a time (`exclusive_node`), and a fixed `NODE_ROOT`, so that `clean_node_root` also removes
what a killed run left behind (by PID, mount, link and cgroup; never by process name)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

NODE_ROOT = Path("/var/lib/podgraft-node")  # fixed, so that a later run cleans up a killed one
LOCK_FILE = Path("/var/lib/podgraft-node.lock")  # one node tier per machine at a time
BRIDGE = "pgnode0"
POD_SUBNET = "10.244.77.0/24"
NODE_IP = "10.244.77.1"  # the bridge's own address: the pods' gateway and the kubelet's address
SERVICE_RANGE = "10.0.0.0/24"  # the apiserver's --service-cluster-ip-range
CGROUP_ROOT = "podgraft-node"
CGROUPS = Path("/sys/fs/cgroup")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")  # the bridge plugin turns it on; Node.stop() restores it


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


# --- making the node's network and cgroups ----------------------------------------------------------


def make_bridge() -> None:
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


def make_cgroup_root() -> None:
    """The kubelet wants its cgroupRoot to exist; a v1 cpuset cgroup needs cpus and mems to be usable."""
    for hierarchy in CGROUPS.iterdir():
        if (hierarchy / "cgroup.procs").exists():
            (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)
    cpuset = CGROUPS / "cpuset"
    for name in ("cpuset.cpus", "cpuset.mems"):
        if (cpuset / name).exists():
            (cpuset / CGROUP_ROOT / name).write_text((cpuset / name).read_text())
