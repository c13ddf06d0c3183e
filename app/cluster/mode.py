"""Cluster mode's wiring for `podgraft serve --policy-source configmaps`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.admission.engine import engine_config
from app.audit.census import Census
from app.cluster.census import CensusWatch
from app.cluster.client import ClusterError, load_configuration
from app.cluster.configmaps import ConfigMapSource
from app.cluster.discovery import discover_version
from app.cluster.events import EventsClient
from app.cluster.namespaces import NamespaceCache
from app.cluster.reporter import WorkloadEvents
from app.metrics import Metrics
from app.settings import Settings
from app.sources import NamespaceLookup, PolicySource

log = logging.getLogger("podgraft.cluster")


@dataclass(frozen=True, slots=True)
class ClusterMode:
    """What `podgraft serve` runs in cluster mode."""

    sources: list[PolicySource]  # the ConfigMap source, and the pod audit watch when enabled
    namespaces: NamespaceLookup
    settings: Settings  # with the discovered Kubernetes version
    census: Census | None  # the running audit, when enabled
    events: WorkloadEvents | None  # Events on the workload, unless PODGRAFT_EVENTS=off


def cluster_mode(settings: Settings, metrics: Metrics) -> ClusterMode:
    """The ConfigMap source, the namespace cache, the Events on the workload (unless off) and (when
    enabled) the pod audit watch; asks the API server for its version unless the version was set
    explicitly (it decides what `sidecarMode: auto` means)."""
    try:
        configuration = load_configuration(settings.kubeconfig)
    except Exception as exc:
        raise ClusterError(f"no Kubernetes API configuration: {exc}") from exc
    if "kubernetes_version" not in settings.model_fields_set:
        version = discover_version(configuration)
        log.info("kubernetes version discovered", extra={"kubernetes_version": version})
        settings = settings.model_copy(update={"kubernetes_version": version})
    namespaces = NamespaceCache(configuration)
    sources: list[PolicySource] = [
        ConfigMapSource(
            settings.watched_policy_namespaces(),
            configuration=configuration,
            label=settings.policy_label,
            namespace_cache=namespaces,
        )
    ]
    census = None
    if settings.audit_enabled:
        census = Census()
        sources.append(
            CensusWatch(
                census,
                namespaces,
                engine_config(settings),
                configuration=configuration,
                refresh_seconds=settings.audit_refresh_seconds,
            )
        )
    events = None
    if settings.events != "off":
        events = WorkloadEvents(
            EventsClient(configuration),
            metrics=metrics,
            level=settings.events,
            instance=settings.pod_name,
            flush_seconds=settings.events_flush_seconds,
        )
    return ClusterMode(sources, namespaces, settings, census, events)
