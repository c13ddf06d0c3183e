"""Cluster mode's running audit: a watch on pods that keeps the `Census` (`app.audit.census`) current.

Enabled with `PODGRAFT_AUDIT_ENABLED=true` (chart: `audit.enabled`, which adds list/watch on pods to
the ClusterRole). One `ListWatch` on pods in all namespaces; each pod is audited on the watch thread
as it arrives, with the policies in force and the namespace labels of that moment, and only its
small record is kept. Every `refresh_seconds` the census checks whether the policies or the
namespaces' labels changed since its last listing; if so, it asks its watch to list the pods again
(a policy edit changes every pod's state, and the pods are not kept to recompute them). The request
is repeated at the next check until a new listing has arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from app.audit.census import Census, PodRecord, record
from app.audit.classify import audit_pod
from app.cluster.client import api_client
from app.cluster.namespaces import NamespaceCache
from app.cluster.watch import Changed, Listed, ListWatch, Sink, WatchEvent, kube_list_watch
from app.engine.config import EngineConfig
from app.engine.policyset import PolicySet
from app.sources.store import PolicyStore

log = logging.getLogger("podgraft.cluster")

PodEntry = tuple[str, PodRecord | None]  # (uid, record; None: nothing to audit on this pod)


class CensusWatch:
    """Runs as a policy source does (`run(store)`, until cancelled), but only reads the store."""

    def __init__(
        self,
        census: Census,
        namespaces: NamespaceCache,
        config: EngineConfig,
        *,
        configuration: Any = None,
        refresh_seconds: float = 30.0,
        watch_factory: Callable[
            [Callable[[Mapping[str, Any]], PodEntry], Sink[PodEntry]], ListWatch[PodEntry]
        ]
        | None = None,
    ) -> None:
        self.census = census
        self.namespaces = namespaces
        self.config = config
        self.configuration = configuration
        self.refresh_seconds = refresh_seconds
        self.watch_factory = watch_factory or self._kube_watch
        self.policies = PolicySet()
        self._generation = -1
        self._pending_since: int | None = None  # watch.lists when a new listing was asked for

    def entry(self, pod: Mapping[str, Any]) -> PodEntry:
        """The watch's `convert` (on its thread): audit the pod now, keep only its record."""
        metadata = pod.get("metadata") or {}
        uid = str(metadata.get("uid") or f"{metadata.get('namespace')}/{metadata.get('name')}")
        labels = self.namespaces.labels(str(metadata.get("namespace") or ""))
        try:
            audit = audit_pod(pod, namespace_labels=labels, policies=self.policies, config=self.config)
        except Exception:  # a pod the engine chokes on is a bug to log, never a dead watch
            log.exception(
                "auditing a pod failed", extra={"pod": f"{metadata.get('namespace')}/{metadata.get('name')}"}
            )
            return uid, None
        return uid, record(audit)

    def apply(self, event: WatchEvent[PodEntry]) -> None:
        """The watch's sink (on its thread)."""
        if isinstance(event, Listed):
            self.census.replace({uid: item for uid, item in event.items if item is not None})
        elif isinstance(event, Changed):
            uid, item = event.item
            self.census.put(uid, None if event.kind == "DELETED" else item)

    def refresh(self, store: PolicyStore, watch: ListWatch[PodEntry]) -> None:
        """Ask for a new listing when what the records were computed with changed (see the module doc)."""
        policies, generation = store.current(), self.namespaces.generation
        if policies is not self.policies or generation != self._generation:
            self.policies, self._generation = policies, generation
            self._pending_since = watch.lists
            watch.relist()
        elif self._pending_since is not None:
            if watch.lists > self._pending_since:
                self._pending_since = None
            else:
                watch.relist()

    async def run(self, store: PolicyStore) -> None:
        while not (store.synced and self.namespaces.synced.is_set()):  # audit with the real policies
            await asyncio.sleep(0.2)
        self.policies, self._generation = store.current(), self.namespaces.generation
        watch = self.watch_factory(self.entry, self.apply)
        watch.start()
        log.info("pod audit watch started", extra={"refresh_seconds": self.refresh_seconds})
        try:
            while True:
                await asyncio.sleep(self.refresh_seconds)
                self.refresh(store, watch)
        finally:
            watch.stop()

    def _kube_watch(
        self, convert: Callable[[Mapping[str, Any]], PodEntry], sink: Sink[PodEntry]
    ) -> ListWatch[PodEntry]:
        from kubernetes import client

        core = client.CoreV1Api(api_client(self.configuration))
        return kube_list_watch("pods", core.list_pod_for_all_namespaces, convert=convert, sink=sink)
