"""Which workload owns a pod: the controller reference, followed through ReplicaSets and Jobs (pure).

A Deployment's pods are owned by a ReplicaSet, which the Deployment owns; a CronJob's pods by a Job,
which the CronJob owns. `resolve_owner` follows one such hop with the `parents` index built from
the listed ReplicaSets and Jobs; a kind it does not know is reported as it is, so a custom
controller's pods still get an owner. A ReplicaSet or Job that was not listed (not in the dump, not
listable, deleted meanwhile) is the owner too, marked `listed=False`: what owns it is unknown, and
the restart plan says so instead of treating it as a workload of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.engine.podview import as_list, as_mapping

ROLLOUT_KINDS = ("Deployment", "StatefulSet", "DaemonSet")  # `kubectl rollout restart` works on these
HOP_KINDS = ("ReplicaSet", "Job")  # owned in turn by a Deployment or a CronJob

DEFAULT_NAMESPACE = "default"  # where an object without `metadata.namespace` is (as `audit_pod` reads it)
ParentIndex = Mapping[tuple[str, str, str], tuple[str, str]]  # (kind, namespace, name) -> its controller


@dataclass(frozen=True, slots=True, order=True)
class Owner:
    """The workload behind a pod (`Pod` itself for a bare pod)."""

    namespace: str
    kind: str
    name: str
    listed: bool = True  # False: a ReplicaSet or Job that was not listed, whose own owner is unknown

    @property
    def has_rollout(self) -> bool:
        return self.kind in ROLLOUT_KINDS

    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def controller_ref(metadata: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the ownerReference marked `controller: true`, if any."""
    for item in as_list(metadata.get("ownerReferences")):
        ref = as_mapping(item)
        if (
            ref.get("controller") is True
            and isinstance(ref.get("kind"), str)
            and isinstance(ref.get("name"), str)
        ):
            return str(ref["kind"]), str(ref["name"])
    return None


def parent_index(
    objects: Iterable[Mapping[str, Any]], kind: str
) -> dict[tuple[str, str, str], tuple[str, str]]:
    """The controllers of listed ReplicaSets or Jobs (`kind`), by (kind, namespace, name); one without
    a controller (a bare ReplicaSet or Job) is its own."""
    index: dict[tuple[str, str, str], tuple[str, str]] = {}
    for obj in objects:
        metadata = as_mapping(obj.get("metadata"))
        name = str(metadata.get("name") or "")
        index[(kind, str(metadata.get("namespace") or DEFAULT_NAMESPACE), name)] = controller_ref(
            metadata
        ) or (kind, name)
    return index


def resolve_owner(pod: Mapping[str, Any], parents: ParentIndex) -> Owner:
    """The pod's workload: its controller, or that controller's own controller for ReplicaSets and Jobs."""
    metadata = as_mapping(pod.get("metadata"))
    namespace = str(metadata.get("namespace") or DEFAULT_NAMESPACE)
    ref = controller_ref(metadata)
    if ref is None:
        return Owner(namespace, "Pod", str(metadata.get("name") or metadata.get("generateName") or ""))
    kind, name = ref
    if kind in HOP_KINDS:
        parent = parents.get((kind, namespace, name))
        if parent is None:
            return Owner(namespace, kind, name, listed=False)
        kind, name = parent
    return Owner(namespace, kind, name)
