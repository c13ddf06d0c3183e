"""The workload a pod's Events go on: its top controller owner, resolved with a cached GET.

At admission a controller's pod has no name or UID of its own yet, but it carries its controller
reference (`ownerReferences[controller=true]`: apiVersion, kind, name, uid), put there by the
ReplicaSet, Job, StatefulSet or DaemonSet controller. A ReplicaSet or a Job is usually owned in turn
(by a Deployment, a CronJob, or a custom controller such as an Argo Rollout): Podgraft GETs it, the
only read it needs (RBAC: get on replicasets and jobs), and the Event goes on its controller, with
the ReplicaSet or Job as `related`. Any other owner is the workload itself. A pod without a
controller reference gets no Event (its creator got the warnings, and the pod has no UID yet).

Answers are cached (bounded, least recently used out first, with a TTL); a ReplicaSet or Job that
is gone or may not be read (404, 403) is itself the workload for a shorter while. Blocking: only the
Events' writer thread calls it, never the admission path.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from app.cluster.client import api_status
from app.cluster.events import ObjectRef
from app.engine.podview import as_list, as_mapping

HOPS = frozenset([("apps", "ReplicaSet"), ("batch", "Job")])  # (API group, kind) read for their owner
CACHE_SIZE = 4096  # entries, like client-go's event cache (maxLruCacheEntries)
TTL_SECONDS = 300.0  # an owner found; ownership rarely changes, and each entry names the owner's UID
FALLBACK_TTL_SECONDS = 30.0  # the ReplicaSet or Job is gone or may not be read: it is the workload
HTTP_SERVER_ERRORS = 500
HTTP_NOT_FOUND = 404
HTTP_TOO_MANY = 429

log = logging.getLogger("podgraft.events")

Workload = tuple[ObjectRef, ObjectRef | None]  # (regarding, related)
Getter = Callable[[ObjectRef], Mapping[str, Any]]  # GET the object `ref` names (raw JSON); raises on errors


class OwnerUnavailable(Exception):
    """The API could not say who owns a ReplicaSet or Job now (timeout, 5xx, 429): try again later."""


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def controller_reference(metadata: Mapping[str, Any], namespace: str) -> ObjectRef | None:
    """The ownerReference of `metadata` marked `controller: true`, as a reference in `namespace`."""
    return controller_of(metadata.get("ownerReferences"), namespace)


def controller_of(owner_references: object, namespace: str) -> ObjectRef | None:
    """The one of `owner_references` (an object's `ownerReferences`) marked `controller: true`, as
    a reference in `namespace`, if any."""
    for item in as_list(owner_references):
        ref = as_mapping(item)
        kind, name, api_version, uid = (_text(ref.get(k)) for k in ("kind", "name", "apiVersion", "uid"))
        if ref.get("controller") is True and kind and name and api_version:
            return ObjectRef(kind, namespace, name, uid, "", api_version)
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


class OwnerCache:
    """`workload(ref)`: the Event's (regarding, related) for a pod whose controller is `ref`."""

    def __init__(
        self,
        get: Getter,
        *,
        size: int = CACHE_SIZE,
        ttl: float = TTL_SECONDS,
        fallback_ttl: float = FALLBACK_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._get = get
        self.size = size
        self.ttl = ttl
        self.fallback_ttl = fallback_ttl
        self.clock = clock
        self.gets = 0
        self.refused: dict[str, str] = {}  # kind -> why the last GET of one was refused (for logs)
        self._entries: OrderedDict[ObjectRef, tuple[float, Workload]] = OrderedDict()

    def workload(self, ref: ObjectRef) -> Workload:
        """Raises `OwnerUnavailable` when the API cannot answer now."""
        if (group_of(ref.api_version), ref.kind) not in HOPS:
            return ref, None
        now = self.clock()
        entry = self._entries.get(ref)
        if entry is not None and entry[0] > now:
            self._entries.move_to_end(ref)
            return entry[1]
        found, ttl = self._lookup(ref)
        self._entries[ref] = (now + ttl, found)
        self._entries.move_to_end(ref)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return found

    def _lookup(self, ref: ObjectRef) -> tuple[Workload, float]:
        self.gets += 1
        try:
            obj = self._get(ref)
        except Exception as exc:
            status = api_status(exc)
            if status is None or status >= HTTP_SERVER_ERRORS or status == HTTP_TOO_MANY:
                raise OwnerUnavailable(str(exc)[:200]) from exc
            why = f"HTTP {status}"
            if status != HTTP_NOT_FOUND and self.refused.get(ref.kind) != why:
                log.warning(
                    f"cannot get {ref.kind}s ({why}): their pods' Events go on the {ref.kind} itself; "
                    f"grant get on {ref.kind.lower()}s (the chart's ClusterRole for Events does)"
                )
            self.refused[ref.kind] = why
            return (ref, None), self.fallback_ttl
        metadata = as_mapping(obj.get("metadata"))
        if ref.uid and metadata.get("uid") != ref.uid:  # a new object of the same name: not the pod's owner
            return (ref, None), self.fallback_ttl
        parent = controller_reference(metadata, ref.namespace)
        if parent is None:
            return (ref, None), self.ttl
        return (parent, ref), self.ttl
