"""Cluster mode's policy source: ConfigMaps labelled `podgraft.io/policy=true` in watched namespaces.

One `ListWatch` per watched namespace; each posts its typed events to the event loop through a
queue, so every change to the `PolicyStore` happens on one thread, in order. Each data key of each
ConfigMap is one source key of the store (`configmap NS/NAME key KEY`), compiled on its own: an edit
recompiles that key alone. A rejected key is logged and reported once as a `PolicyRejected` Warning
Event on its ConfigMap; the store keeps its last good version in force. Deleting a ConfigMap (or
removing its label) removes its keys. The first full listing of every watched namespace (and of the
Namespaces, when a namespace cache is given) is one `replace_all(full=True)`, which is what turns
`/readyz` ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.cluster.client import api_client, describe
from app.cluster.events import EventRecorder, ObjectRef, bounded_message
from app.cluster.namespaces import NamespaceCache
from app.cluster.watch import Changed, Listed, ListWatch, Sink, WatchEvent, kube_list_watch
from app.sources.documents import SourceText, configmap_source_key
from app.sources.store import ErrorTracker, PolicyStore

log = logging.getLogger("podgraft.cluster")

EVENT_REASON = "PolicyRejected"


# --- pure state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyConfigMap:
    """What Podgraft needs of a policy ConfigMap."""

    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    data: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> PolicyConfigMap:
        """From the API's JSON (`binaryData` is not read: policies are text)."""
        meta = obj.get("metadata") or {}
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            data={str(k): str(v) for k, v in (obj.get("data") or {}).items()},
        )

    def ref(self) -> ObjectRef:
        return ObjectRef("ConfigMap", self.namespace, self.name, self.uid, self.resource_version)


def source_key(namespace: str, name: str, key: str) -> str:
    """The store's key for one data key of one ConfigMap (as `podgraft policy validate` names it)."""
    return configmap_source_key(namespace, name, key)


class ConfigMapState:
    """The policy texts Podgraft has seen, per ConfigMap; each update returns the store delta.

    Only keys whose text changed are in a delta (None for a removed key), so an edit of one key
    recompiles that key alone and an unchanged broken key is not reported again.
    """

    def __init__(self) -> None:
        self._maps: dict[tuple[str, str], PolicyConfigMap] = {}

    def __len__(self) -> int:
        return len(self._maps)

    def texts(self) -> dict[str, SourceText]:
        """Every key of every ConfigMap (for a full `replace_all`)."""
        return {
            source_key(cm.namespace, cm.name, key): text
            for cm in self._maps.values()
            for key, text in cm.data.items()
        }

    def upsert(self, cm: PolicyConfigMap) -> dict[str, SourceText]:
        old = self._maps.get((cm.namespace, cm.name))
        self._maps[(cm.namespace, cm.name)] = cm
        old_data: Mapping[str, str] = old.data if old is not None else {}
        delta: dict[str, SourceText] = {
            source_key(cm.namespace, cm.name, key): None for key in old_data if key not in cm.data
        }
        for key, text in cm.data.items():
            if old_data.get(key) != text:
                delta[source_key(cm.namespace, cm.name, key)] = text
        return delta

    def delete(self, namespace: str, name: str) -> dict[str, SourceText]:
        old = self._maps.pop((namespace, name), None)
        if old is None:
            return {}
        return {source_key(namespace, name, key): None for key in old.data}

    def resync(self, namespace: str, listed: Iterable[PolicyConfigMap]) -> dict[str, SourceText]:
        """A full listing of one namespace: ConfigMaps missing from it were deleted meanwhile."""
        listed = list(listed)
        names = {cm.name for cm in listed}
        delta: dict[str, SourceText] = {}
        for ns, name in [k for k in self._maps if k[0] == namespace and k[1] not in names]:
            delta.update(self.delete(ns, name))
        for cm in listed:
            delta.update(self.upsert(cm))
        return delta

    def owner(self, key: str) -> tuple[PolicyConfigMap, str] | None:
        """The ConfigMap and data key behind a source key."""
        for cm in self._maps.values():
            prefix = source_key(cm.namespace, cm.name, "")
            if key.startswith(prefix) and key[len(prefix) :] in cm.data:
                return cm, key[len(prefix) :]
        return None


def rejection_message(cm: PolicyConfigMap, key: str, error: str, *, kept: bool) -> str:
    """The Event message: which ConfigMap and key, what is wrong (the store names document and field)."""
    outcome = (
        "the last good version of its policies stays in force"
        if kept
        else "no earlier version of it is in force"
    )
    return bounded_message(f"ConfigMap {cm.namespace}/{cm.name} key {key!r} rejected: {error}; {outcome}")


# --- the source ---------------------------------------------------------------------------------

ConfigMapMessage = tuple[str, WatchEvent[PolicyConfigMap]]  # (namespace, event)
EventPoster = Callable[[ObjectRef, str, str], None]  # (object, reason, message); blocking, on a worker thread


class ConfigMapSource:
    """Cluster mode: watch ConfigMaps labelled `<policy_label>=true` in the given namespaces."""

    def __init__(
        self,
        namespaces: Sequence[str],
        *,
        configuration: Any = None,
        label: str = "podgraft.io/policy",
        namespace_cache: NamespaceCache | None = None,
        post_event: EventPoster | None = None,
        watch_factory: Callable[[str, Sink[PolicyConfigMap]], ListWatch[PolicyConfigMap]] | None = None,
    ) -> None:
        self.namespaces = list(dict.fromkeys(namespaces))
        self.configuration = configuration
        self.selector = f"{label}=true"
        self.namespace_cache = namespace_cache
        self.post_event = post_event if post_event is not None else EventRecorder(configuration).warn
        self.watch_factory = watch_factory or self._kube_watch
        self.state = ConfigMapState()
        self.errors = ErrorTracker()
        self._event_tasks: set[asyncio.Task[None]] = set()

    async def run(self, store: PolicyStore) -> None:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[ConfigMapMessage] = asyncio.Queue()

        def sink(namespace: str) -> Sink[PolicyConfigMap]:
            def post(event: WatchEvent[PolicyConfigMap]) -> None:  # called on that namespace's watch thread
                with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                    loop.call_soon_threadsafe(inbox.put_nowait, (namespace, event))

            return post

        self.state = ConfigMapState()
        watches = [self.watch_factory(ns, sink(ns)) for ns in self.namespaces]
        if self.namespace_cache is not None:
            self.namespace_cache.start()
        for item in watches:
            item.start()
        try:
            await self._first_sync(store, inbox)
            while True:
                self._handle(store, await inbox.get())
        except asyncio.CancelledError:
            if self.namespace_cache is not None:  # shutting down; after a failure it keeps running
                self.namespace_cache.stop()
            raise
        finally:
            for item in watches:
                item.stop()

    async def _first_sync(self, store: PolicyStore, inbox: asyncio.Queue[ConfigMapMessage]) -> None:
        """Wait for a listing of every namespace (and the Namespaces), then load all at once."""
        pending = set(self.namespaces)
        started = time.monotonic()
        while pending:
            try:
                message = await asyncio.wait_for(inbox.get(), timeout=10)
            except TimeoutError:
                log.warning(
                    "still waiting for the first listing of policy ConfigMaps",
                    extra={"namespaces": sorted(pending), "seconds": int(time.monotonic() - started)},
                )
                continue
            self._stage(message)
            namespace, event = message
            if isinstance(event, Listed):
                pending.discard(namespace)
        if self.namespace_cache is not None:
            waited = 0
            while not self.namespace_cache.synced.is_set():
                while not inbox.empty():
                    self._stage(inbox.get_nowait())
                await asyncio.sleep(0.05)
                waited += 1
                if waited % 200 == 0:
                    log.warning(
                        "still waiting for the first listing of Namespaces", extra={"seconds": waited // 20}
                    )
            while not inbox.empty():
                self._stage(inbox.get_nowait())
        errors = store.replace_all(self.state.texts(), full=True)
        self._report(store, errors)
        log.info(
            "policy ConfigMaps synced",
            extra={
                "namespaces": self.namespaces,
                "configmaps": len(self.state),
                "policies": len(store.current()),
                "rejected": len(errors),
            },
        )

    def _stage(self, message: ConfigMapMessage) -> dict[str, SourceText]:
        namespace, event = message
        if isinstance(event, Listed):
            return self.state.resync(namespace, event.items)
        assert isinstance(event, Changed)
        if event.kind == "DELETED":
            return self.state.delete(event.item.namespace, event.item.name)
        return self.state.upsert(event.item)

    def _handle(self, store: PolicyStore, message: ConfigMapMessage) -> None:
        delta = self._stage(message)
        if not delta:
            return
        errors = store.replace_all(delta, full=False)
        removed = sorted(key for key, text in delta.items() if text is None)
        if removed:
            log.info("policy ConfigMap keys removed", extra={"sources": removed})
        changed = sorted(key for key, text in delta.items() if text is not None and key not in errors)
        if changed:
            log.info("policy ConfigMap keys loaded", extra={"sources": changed})
        self._report(store, errors)

    def _report(self, store: PolicyStore, errors: Mapping[str, str]) -> None:
        fresh = self.errors.fresh(errors, store.errors())
        if not fresh:
            return
        in_force = {policy.source for policy in store.current().by_name.values()}
        for key, error in sorted(fresh.items()):
            kept = key in in_force
            log.error(
                "policy ConfigMap key rejected",
                extra={"source": key, "error": error, "last_good_version_in_force": kept},
            )
            owner = self.state.owner(key)
            if owner is None:
                continue
            cm, data_key = owner
            message = rejection_message(cm, data_key, error, kept=kept)
            task = asyncio.get_running_loop().create_task(self._post_in_thread(cm, message))
            self._event_tasks.add(task)
            task.add_done_callback(self._event_tasks.discard)

    async def _post_in_thread(self, cm: PolicyConfigMap, message: str) -> None:
        try:
            await asyncio.to_thread(self.post_event, cm.ref(), EVENT_REASON, message)
        except Exception as exc:  # an Event is a courtesy: never let it break the source
            log.warning(
                "could not record an Event on the ConfigMap",
                extra={"configmap": f"{cm.namespace}/{cm.name}", "error": describe(exc)},
            )

    def _kube_watch(self, namespace: str, sink: Sink[PolicyConfigMap]) -> ListWatch[PolicyConfigMap]:
        from kubernetes import client

        core = client.CoreV1Api(api_client(self.configuration))  # one connection pool per thread
        return kube_list_watch(
            f"configmaps {namespace}",
            core.list_namespaced_config_map,
            namespace,
            label_selector=self.selector,
            convert=PolicyConfigMap.from_api,
            sink=sink,
        )
