"""The one-node cluster, whole, as the node tier and `make cluster` run it: the host prepared (the
bridge first: the apiserver listens on its address), the control plane `in_cluster` on the node's
address, the node, and everything removed again in reverse order.

A `detached` cluster (`make cluster`) outlives the Python process that started it: `state()` is
what `make cluster-down` needs to find its processes again by PID and start time (`adopt`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .controlplane import Binaries, ControlPlane
from .host import NODE_IP, clean_host, prepare_host
from .node import NODE_BINARIES, Images, Node
from .processes import Managed


@dataclass
class LocalCluster:
    plane: ControlPlane
    node: Node
    workdir: Path
    start_seconds: float = 0.0

    @classmethod
    def start(cls, workdir: Path, *, images: Images, detached: bool = False) -> LocalCluster:
        """Prepare the host, start the control plane and the node; on failure, undo all of it."""
        started = time.monotonic()
        prepare_host()
        plane: ControlPlane | None = None
        try:
            plane = ControlPlane.start(
                workdir / "controlplane",
                binaries=NODE_BINARIES,
                address=NODE_IP,
                in_cluster=True,
                detached=detached,
            )
            node = Node.start(plane, images, workdir=workdir, detached=detached)
        except BaseException:
            if plane is not None:
                plane.stop()
            clean_host()
            raise
        return cls(plane, node, workdir, time.monotonic() - started)

    @property
    def processes(self) -> list[Managed]:
        return [*self.plane.processes, *self.node.processes]

    def stop(self) -> None:
        """The node first (its pods are deleted through the apiserver), then the control plane,
        then whatever is left on the host."""
        try:
            self.node.stop()
        finally:
            self.plane.stop()
            clean_host()

    # --- a detached cluster, found again -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "admin_kubeconfig": str(self.plane.admin_kubeconfig),
            "images": asdict(self.node.images) | {"archives": [str(a) for a in self.node.images.archives]},
            "plane": [process_state(p) for p in self.plane.processes],
            "node": [process_state(p) for p in self.node.processes],
        }

    @classmethod
    def adopt(cls, state: dict[str, Any]) -> LocalCluster:
        """The cluster a detached start recorded; its processes that are gone stay gone."""
        workdir = Path(state["workdir"])
        images = dict(state["images"])
        images["archives"] = tuple(Path(a) for a in images["archives"])
        plane = ControlPlane(workdir / "controlplane", Binaries({}, 0.0), address=NODE_IP, in_cluster=True)
        plane.admin_kubeconfig = Path(state["admin_kubeconfig"])
        plane.processes = [_adopt(p) for p in state["plane"]]
        node = Node(plane, Images(**images), workdir)
        node.processes = [_adopt(p) for p in state["node"]]
        return cls(plane, node, workdir)


def process_state(process: Managed) -> dict[str, Any]:
    return {
        "name": process.name,
        "pid": process.pid,
        "started": process.started,
        "log": str(process.log_path),
    }


def _adopt(entry: dict[str, Any]) -> Managed:
    return Managed.adopt(entry["name"], int(entry["pid"]), entry["started"], Path(entry["log"]))


def stop_detached(state: dict[str, Any]) -> None:
    """Stop a detached cluster by its recorded state; never raises half-way."""
    with contextlib.suppress(Exception):
        LocalCluster.adopt(state).stop()
    clean_host()
