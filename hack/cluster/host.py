"""What the local node makes on this machine, and how it is all removed again: the CNI bridge (with
its route to the Service range), the cgroup root, the processes in the node's cgroups and the runc
shims, mounts, the kubelet's and kube-proxy's iptables chains, two sysctls, and `NODE_ROOT`.

All of it is global to the machine, hence one node at a time (`exclusive_node`), and fixed paths,
so that `clean_host` also removes what a killed run left behind (by PID, mount, link, chain and
cgroup; never by process name). Before it makes anything, `prepare_host` writes down in
`HOST_STATE` what it found: the `KUBE-*` chains that already existed (another cluster's: never
touched) and the values of ip_forward and bridge-nf-call-iptables, which `clean_host` restores.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .controlplane import SERVICE_RANGE

NODE_ROOT = Path("/var/lib/podgraft-node")  # fixed, so that a later run cleans up a killed one
LOCK_FILE = Path("/var/lib/podgraft-node.lock")  # one node per machine at a time
HOST_STATE = Path("/var/lib/podgraft-node.host.json")  # what prepare_host found, for clean_host
BRIDGE = "pgnode0"
POD_SUBNET = "10.244.77.0/24"
NODE_IP = "10.244.77.1"  # the bridge's own address: the pods' gateway, the kubelet's and the apiserver's
CGROUP_ROOT = "podgraft-node"
CGROUPS = Path("/sys/fs/cgroup")
SYSCTLS = (
    Path("/proc/sys/net/ipv4/ip_forward"),  # the bridge plugin turns it on
    Path("/proc/sys/net/bridge/bridge-nf-call-iptables"),  # bridged pod traffic through kube-proxy's NAT
)
IPTABLES = ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy")
TABLES = ("filter", "nat", "mangle")


# --- what was there before ----------------------------------------------------------------------------


def _rules(tool: str, table: str) -> list[list[str]]:
    try:
        listing = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return []
    return [shlex.split(line) for line in listing.stdout.splitlines()]


def kube_chains() -> dict[str, list[str]]:
    """`tool/table` -> the KUBE-* chains in it now."""
    found = {}
    for tool in IPTABLES:
        for table in TABLES:
            chains = [r[1] for r in _rules(tool, table) if r[:1] == ["-N"] and r[1].startswith("KUBE-")]
            found[f"{tool}/{table}"] = chains
    return found


def _read_state() -> dict[str, object]:
    try:
        return dict(json.loads(HOST_STATE.read_text()))
    except (OSError, ValueError):
        return {}


# --- cleaning up: by PID, mount, link, chain and cgroup -------------------------------------------------


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


def remove_kube_chains(before: dict[str, list[str]]) -> list[str]:
    """Delete the `KUBE-*` chains that were not there `before` (the ones the kubelet and kube-proxy
    made), and the rules of other chains that jump to them. Returns `tool/table/chain` per chain."""
    removed = []
    for tool in IPTABLES:
        for table in TABLES:
            rules = _rules(tool, table)
            existing = set(before.get(f"{tool}/{table}", []))
            chains = [
                r[1] for r in rules if r[:1] == ["-N"] and r[1].startswith("KUBE-") and r[1] not in existing
            ]
            for rule in rules:
                if rule[:1] == ["-A"] and rule[1] not in chains and any(c in rule for c in chains):
                    subprocess.run([tool, "-t", table, "-D", *rule[1:]], capture_output=True, check=False)
            for flag in ("-F", "-X"):
                for chain in chains:
                    subprocess.run([tool, "-t", table, flag, chain], capture_output=True, check=False)
            removed += [f"{tool}/{table}/{chain}" for chain in chains]
    return removed


def clean_host(root: Path = NODE_ROOT) -> None:
    """Remove everything a node under `root` made, whether it stopped cleanly or was killed, and
    put back what `prepare_host` found. Without a HOST_STATE (nothing was made yet), no chain is touched."""
    state = _read_state()
    _kill_node_processes(root)
    for _ in range(10):  # a mount can hide another below it: until none is left
        points = _mounts_under(root)
        if not points:
            break
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    if state:
        chains = state.get("chains")
        remove_kube_chains(dict(chains) if isinstance(chains, dict) else {})
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
    sysctls = state.get("sysctls")
    for path, value in sysctls.items() if isinstance(sysctls, dict) else []:
        with contextlib.suppress(OSError):
            Path(path).write_text(str(value))
    HOST_STATE.unlink(missing_ok=True)


def _note_alive(note: str) -> bool:
    """Whether the process a lock note names (`... (pid N)`) still runs."""
    match = re.search(r"\(pid (\d+)\)$", note)
    return match is not None and Path(f"/proc/{match.group(1)}").exists()


def write_lock_note(lock: IO[str], holder: str, pid: int) -> None:
    lock.seek(0)
    lock.truncate(0)
    lock.write(f"{holder} (pid {pid})\n")
    lock.flush()


def hold_node_lock(holder: str) -> IO[str]:
    """Take the machine-wide node lock (the bridge, the iptables rules and NODE_ROOT are global) and
    return its open file: the lock is held as long as it, or a process that inherited it, is open.
    `holder` is written into the lock file for whoever waits. A cluster of `make cluster` is not
    waited for: its lock holder keeps the lock until `make cluster-down`."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    lock = LOCK_FILE.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        other = lock.read().strip() or "another run"
        if other.startswith("make cluster") and _note_alive(other):
            lock.close()
            message = f"this machine's node is in use by {other}: `make cluster-down` first"
            raise RuntimeError(message) from None
        fcntl.flock(lock, fcntl.LOCK_EX)
    write_lock_note(lock, holder, os.getpid())
    return lock


@contextlib.contextmanager
def exclusive_node(holder: str) -> Iterator[None]:
    """Hold the node lock for the length of a `with` (a test session)."""
    lock = hold_node_lock(holder)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


# --- making the node's network and cgroups ----------------------------------------------------------


def prepare_host() -> None:
    """Clean up after a killed run, write down what is there, then make the CNI bridge with the
    node's address (before the apiserver, which listens on it, and the kubelet, whose node IP it
    is) and a route to the Service range through it: no Service packet ever leaves on the host's
    default route, even before kube-proxy has written its rules. Bridged traffic goes through
    iptables (kube-proxy's Service NAT between pods on the bridge)."""
    clean_host()
    state = {
        "chains": kube_chains(),
        "sysctls": {str(path): path.read_text().strip() for path in SYSCTLS if path.exists()},
    }
    HOST_STATE.write_text(json.dumps(state, indent=2))
    bridge_nf = SYSCTLS[1]
    if bridge_nf.exists():
        bridge_nf.write_text("1")
    for argv in (
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "address", "add", f"{NODE_IP}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
        ["ip", "route", "add", SERVICE_RANGE, "dev", BRIDGE, "src", NODE_IP],
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
