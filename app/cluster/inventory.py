"""`podgraft audit` against a cluster: one pass over what the API holds (no watch).

The policy ConfigMaps (as cluster mode loads them), the Namespaces' labels, the ReplicaSets and Jobs
(to resolve owners) and the pods, page by page: a pod is audited as its page arrives and only its
audit is kept. Refusals of the optional listings (no RBAC for ReplicaSets or Jobs, or for
Namespaces) are warnings: owners then stop at the ReplicaSet or Job, and namespaces are taken as
opted in, as the webhook does when it cannot see their labels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from app.audit.owners import ParentIndex, parent_index
from app.cluster.client import api_client, api_status, describe
from app.cluster.configmaps import ConfigMapState, PolicyConfigMap
from app.cluster.watch import list_pages
from app.engine.policyset import PolicySet
from app.sources.store import PolicyStore

Warn = Callable[[str], None]
HTTP_FORBIDDEN = 403


class Inventory:
    """The API, read for an audit (one client, blocking calls)."""

    def __init__(self, configuration: Any, warn: Warn) -> None:
        from kubernetes import client

        api = api_client(configuration)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.warn = warn

    def _items(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        for page, _version in list_pages(function, *args, **kwargs):
            yield from page

    def policies(
        self, namespaces: Sequence[str], label: str, *, max_bytes: int, kubernetes_version: str
    ) -> tuple[PolicySet, dict[str, str]]:
        """The policies in force, as cluster mode loads them, and the rejected keys with their errors."""
        state = ConfigMapState()
        for namespace in namespaces:
            listed = self._items(
                self.core.list_namespaced_config_map, namespace, label_selector=f"{label}=true"
            )
            state.resync(namespace, [PolicyConfigMap.from_api(obj) for obj in listed])
        store = PolicyStore(max_bytes=max_bytes, kubernetes_version=kubernetes_version)
        errors = store.replace_all(state.texts())
        return store.current(), errors

    def namespace_labels(self) -> Mapping[str, Mapping[str, str]] | None:
        try:
            return {
                str((obj.get("metadata") or {}).get("name")): dict(
                    (obj.get("metadata") or {}).get("labels") or {}
                )
                for obj in self._items(self.core.list_namespace)
            }
        except Exception as exc:
            if api_status(exc) != HTTP_FORBIDDEN:
                raise
            self.warn(f"cannot list Namespaces ({describe(exc)}): namespaces are taken as opted in")
            return None

    def parents(self, namespace: str | None) -> ParentIndex:
        """Who owns each ReplicaSet and Job (Deployments, CronJobs)."""
        index: dict[tuple[str, str, str], tuple[str, str]] = {}
        for kind, in_namespace, everywhere in (
            (
                "ReplicaSet",
                self.apps.list_namespaced_replica_set,
                self.apps.list_replica_set_for_all_namespaces,
            ),
            ("Job", self.batch.list_namespaced_job, self.batch.list_job_for_all_namespaces),
        ):
            try:
                objects = self._items(in_namespace, namespace) if namespace else self._items(everywhere)
                index.update(parent_index(objects, kind))
            except Exception as exc:
                if api_status(exc) != HTTP_FORBIDDEN:
                    raise
                self.warn(f"cannot list {kind}s ({describe(exc)}): their pods' owner is shown as the {kind}")
        return index

    def pods(self, namespace: str | None, selector: str | None) -> Iterator[dict[str, Any]]:
        options = {"label_selector": selector} if selector else {}
        if namespace:
            return self._items(self.core.list_namespaced_pod, namespace, **options)
        return self._items(self.core.list_pod_for_all_namespaces, **options)
