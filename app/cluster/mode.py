"""Cluster mode's wiring for `podgraft serve --policy-source configmaps`."""

from __future__ import annotations

import logging

from app.cluster.client import ClusterError, load_configuration
from app.cluster.configmaps import ConfigMapSource
from app.cluster.discovery import discover_version
from app.cluster.namespaces import NamespaceCache
from app.settings import Settings
from app.sources import NamespaceLookup, PolicySource

log = logging.getLogger("podgraft.cluster")


def cluster_sources(settings: Settings) -> tuple[list[PolicySource], NamespaceLookup, Settings]:
    """The ConfigMap source and the namespace cache; asks the API server for its version unless the
    version was set explicitly (it decides what `sidecarMode: auto` means)."""
    try:
        configuration = load_configuration(settings.kubeconfig)
    except Exception as exc:
        raise ClusterError(f"no Kubernetes API configuration: {exc}") from exc
    if "kubernetes_version" not in settings.model_fields_set:
        version = discover_version(configuration)
        log.info("kubernetes version discovered", extra={"kubernetes_version": version})
        settings = settings.model_copy(update={"kubernetes_version": version})
    namespaces = NamespaceCache(configuration)
    source = ConfigMapSource(
        settings.watched_policy_namespaces(),
        configuration=configuration,
        label=settings.policy_label,
        namespace_cache=namespaces,
    )
    return [source], namespaces, settings
