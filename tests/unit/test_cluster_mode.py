"""Cluster mode's other state, without an API server: the namespace label cache, `cluster_mode`
(what it builds from the settings) and the running audit's `CensusWatch` (when it lists pods
again, the record it keeps per pod).

Unit tests (no `e2e` marker): the e2e tier exercises the same code against a real kube-apiserver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.audit.census import Census
from app.cluster.census import CensusWatch
from app.cluster.configmaps import ConfigMapSource
from app.cluster.mode import cluster_mode
from app.cluster.namespaces import NamespaceCache, NamespaceLabels
from app.cluster.reporter import WorkloadEvents
from app.cluster.watch import Changed, Listed, ListWatch
from app.engine.config import EngineConfig
from app.metrics import Metrics
from app.settings import Settings
from app.sources.store import PolicyStore
from tests.unit.cluster_support import GOOD, FakeApi

# --- NamespaceCache and wiring ------------------------------------------------------------------------


def test_namespace_cache_follows_listings_and_events() -> None:
    def factory(cache: NamespaceCache) -> ListWatch[NamespaceLabels]:
        return ListWatch(
            "unused",
            lister=lambda: ([], ""),
            watcher=lambda v: iter(()),
            sink=cache.apply,
        )

    cache = NamespaceCache(watch_factory=factory)
    assert cache.labels("a") is None
    assert not cache.synced.is_set()
    cache.apply(
        Listed([NamespaceLabels("a", {"podgraft.io/injection": "enabled"}), NamespaceLabels("b", {})])
    )
    assert cache.synced.is_set()
    assert cache.labels("a") == {"podgraft.io/injection": "enabled"}
    cache.apply(Changed("MODIFIED", NamespaceLabels("b", {"team": "x"})))
    cache.apply(Changed("DELETED", NamespaceLabels("a", {})))
    assert cache.labels("b") == {"team": "x"}
    assert cache.labels("a") is None
    cache.apply(Listed([NamespaceLabels("c", {})]))
    assert cache.labels("b") is None


def test_cluster_mode_keeps_an_explicit_kubernetes_version_and_adds_the_audit_when_enabled(
    tmp_path: Path,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""
    )
    settings = Settings(
        policy_source="configmaps",
        kubeconfig=kubeconfig,
        kubernetes_version="1.28",
        policy_namespaces=["a", "b", "a"],
    )
    mode = cluster_mode(settings, Metrics())

    assert mode.settings.kubernetes_version == "1.28"  # not asked: the API server is not even reachable
    assert isinstance(mode.namespaces, NamespaceCache)
    [source] = mode.sources
    assert isinstance(source, ConfigMapSource)
    assert source.namespaces == ["a", "b"]
    assert source.selector == "podgraft.io/policy=true"
    assert mode.census is None

    assert isinstance(mode.events, WorkloadEvents)  # PODGRAFT_EVENTS defaults to warnings
    assert (mode.events.level, mode.events.writer.instance) == ("warnings", settings.pod_name)
    assert cluster_mode(settings.model_copy(update={"events": "off"}), Metrics()).events is None

    audited = cluster_mode(
        settings.model_copy(update={"audit_enabled": True, "audit_refresh_seconds": 5}), Metrics()
    )
    assert audited.census is not None
    assert [type(s).__name__ for s in audited.sources] == ["ConfigMapSource", "CensusWatch"]
    census_watch = audited.sources[1]
    assert isinstance(census_watch, CensusWatch)
    assert (census_watch.census, census_watch.refresh_seconds) == (audited.census, 5)


# --- the running audit's watch ----------------------------------------------------------------------------


class FakePodWatch:
    def __init__(self) -> None:
        self.lists = 1
        self.relists = 0

    def relist(self) -> None:
        self.relists += 1


def test_census_watch_lists_again_when_policies_or_namespace_labels_change_until_it_happened() -> None:
    namespaces = NamespaceCache(watch_factory=lambda cache: FakeApi([]).list_watch(cache.apply))
    namespaces.apply(Listed([NamespaceLabels("shop", {"podgraft.io/injection": "enabled"})]))
    store = PolicyStore()
    store.replace_all({"a.yaml": GOOD.format(name="a", edition="1")})
    watch = FakePodWatch()
    census_watch = CensusWatch(Census(), namespaces, EngineConfig())
    census_watch.policies, census_watch._generation = store.current(), namespaces.generation

    census_watch.refresh(store, watch)  # type: ignore[arg-type]
    assert watch.relists == 0, "nothing changed"
    store.replace_all({"a.yaml": GOOD.format(name="a", edition="2")})
    census_watch.refresh(store, watch)  # type: ignore[arg-type]
    assert watch.relists == 1
    census_watch.refresh(store, watch)  # type: ignore[arg-type]
    assert watch.relists == 2, "asked again: no new listing arrived yet"
    watch.lists += 1
    census_watch.refresh(store, watch)  # type: ignore[arg-type]
    assert watch.relists == 2
    namespaces.apply(Changed("MODIFIED", NamespaceLabels("shop", {})))
    census_watch.refresh(store, watch)  # type: ignore[arg-type]
    assert watch.relists == 3


def test_census_watch_keeps_a_record_per_concerned_pod_and_drops_deleted_ones() -> None:
    census = Census()
    namespaces = NamespaceCache(watch_factory=lambda cache: FakeApi([]).list_watch(cache.apply))
    namespaces.apply(Listed([NamespaceLabels("shop", {"podgraft.io/injection": "enabled"})]))
    store = PolicyStore()
    store.replace_all({"a.yaml": GOOD.format(name="a", edition="1")})
    census_watch = CensusWatch(census, namespaces, EngineConfig())
    census_watch.policies = store.current()

    def pod(name: str, inject: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "namespace": "shop",
                "uid": f"uid-{name}",
                "annotations": {"podgraft.io/inject": inject},
            },
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        }

    census_watch.apply(
        Listed([census_watch.entry(pod("asks", "a")), census_watch.entry(pod("plain", "false"))])
    )
    assert census.counts() == {("a", "missing"): 1}
    census_watch.apply(Changed("DELETED", census_watch.entry(pod("asks", "a"))))
    assert census.counts() == {}
    assert census.synced
