"""The namespace cache: the labels of every Namespace, kept current by one `ListWatch`.

The server reads it on every request (namespace opt-in, each policy's `namespaceSelector`, the Pod
Security level) even when the webhook configuration's own namespaceSelector is wrong.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.cluster.client import api_client
from app.cluster.watch import Changed, Listed, ListWatch, WatchEvent, kube_list_watch

log = logging.getLogger("podgraft.cluster")


@dataclass(frozen=True, slots=True)
class NamespaceLabels:
    name: str
    labels: Mapping[str, str]

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> NamespaceLabels:
        meta = obj.get("metadata") or {}
        return cls(name=str(meta.get("name") or ""), labels=dict(meta.get("labels") or {}))


class NamespaceCache:
    """Implements `app.sources.NamespaceLookup`.

    `labels(name)` is None for a namespace not seen (yet): the server then trusts the webhook
    configuration's namespaceSelector, as in local mode. `synced` is set by the first full listing.
    """

    def __init__(
        self,
        configuration: Any = None,
        *,
        watch_factory: Callable[[NamespaceCache], ListWatch[NamespaceLabels]] | None = None,
    ) -> None:
        self.configuration = configuration
        self.synced = threading.Event()
        self._labels: dict[str, Mapping[str, str]] = {}
        self.generation = 0  # counts every change, for readers that derive something from the labels
        self._watch = (watch_factory or NamespaceCache._kube_watch)(self)

    def labels(self, name: str) -> Mapping[str, str] | None:
        return self._labels.get(name)

    def start(self) -> None:
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()

    def apply(self, event: WatchEvent[NamespaceLabels]) -> None:
        """The watch's sink (on its thread): a listing is one reference swap, an event one key."""
        self.generation += 1
        if isinstance(event, Listed):
            self._labels = {ns.name: ns.labels for ns in event.items}
            if not self.synced.is_set():
                log.info("namespaces synced", extra={"namespaces": len(event.items)})
            self.synced.set()
        elif isinstance(event, Changed):
            if event.kind == "DELETED":
                self._labels.pop(event.item.name, None)
            else:
                self._labels[event.item.name] = event.item.labels

    def _kube_watch(self) -> ListWatch[NamespaceLabels]:
        from kubernetes import client

        core = client.CoreV1Api(api_client(self.configuration))
        return kube_list_watch(
            "namespaces", core.list_namespace, convert=NamespaceLabels.from_api, sink=self.apply
        )
