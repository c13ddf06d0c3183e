"""Unit tests of the app/cluster package's own logic, without an API server (fakes for list and watch).

They live beside the e2e tier that exercises the same code against a real kube-apiserver; they carry
no `e2e` marker and do not start the control plane.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from kubernetes.client.exceptions import ApiException

from app.audit.census import Census
from app.certs import generate_ca, read_ca_bundle
from app.cluster.cabundle import ca_bundle_patch
from app.cluster.census import CensusWatch
from app.cluster.configmaps import (
    EVENT_REASON,
    ConfigMapSource,
    ConfigMapState,
    PolicyConfigMap,
    rejection_message,
    source_key,
)
from app.cluster.events import MAX_EVENT_MESSAGE, warning_event
from app.cluster.mode import cluster_mode
from app.cluster.namespaces import NamespaceCache, NamespaceLabels
from app.cluster.watch import Changed, Listed, ListWatch, Sink, WatchEvent, kube_list_watch
from app.engine.config import EngineConfig
from app.retry import Backoff
from app.settings import Settings
from app.sources.store import PolicyStore

GOOD = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {{name: {name}}}
spec:
  env: [{{name: EDITION, value: "{edition}"}}]
"""
BAD = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: broken}
spec: {initContainerPosition: middle}
"""


def cm(name: str, data: dict[str, str], *, namespace: str = "podgraft", rv: str = "1") -> PolicyConfigMap:
    return PolicyConfigMap(namespace=namespace, name=name, uid=f"uid-{name}", resource_version=rv, data=data)


# --- ConfigMap state ----------------------------------------------------------------------------------


def test_state_delta_holds_only_changed_and_removed_keys() -> None:
    state = ConfigMapState()
    assert state.upsert(cm("a", {"x": "1", "y": "2"})) == {
        source_key("podgraft", "a", "x"): "1",
        source_key("podgraft", "a", "y"): "2",
    }
    assert state.upsert(cm("a", {"x": "1", "y": "2"}, rv="2")) == {}
    assert state.upsert(cm("a", {"x": "1b", "z": "3"})) == {
        "configmap podgraft/a x": "1b",
        "configmap podgraft/a y": None,
        "configmap podgraft/a z": "3",
    }
    assert state.delete("podgraft", "a") == {"configmap podgraft/a x": None, "configmap podgraft/a z": None}
    assert state.delete("podgraft", "a") == {}


def test_state_resync_removes_configmaps_missing_from_the_listing_of_that_namespace_only() -> None:
    state = ConfigMapState()
    state.upsert(cm("keep", {"k": "1"}))
    state.upsert(cm("gone", {"g": "1"}))
    state.upsert(cm("other", {"o": "1"}, namespace="elsewhere"))

    delta = state.resync("podgraft", [cm("keep", {"k": "2"}), cm("new", {"n": "1"})])

    assert delta == {
        "configmap podgraft/gone g": None,
        "configmap podgraft/keep k": "2",
        "configmap podgraft/new n": "1",
    }
    assert sorted(state.texts()) == [
        "configmap elsewhere/other o",
        "configmap podgraft/keep k",
        "configmap podgraft/new n",
    ]


def test_state_owner_finds_configmap_and_key_even_with_spaces_in_names() -> None:
    state = ConfigMapState()
    state.upsert(cm("a", {"b c.yaml": "x"}))
    state.upsert(cm("a b", {"c.yaml": "y"}))
    owner = state.owner("configmap podgraft/a b c.yaml")
    assert owner is not None
    assert (owner[0].name, owner[1]) in {("a", "b c.yaml"), ("a b", "c.yaml")}
    assert state.owner("configmap podgraft/nope x") is None


# --- rejection messages and Events -----------------------------------------------------------------


def test_rejection_message_names_configmap_key_and_error() -> None:
    message = rejection_message(cm("policies", {}), "log.yaml", "document 1: spec.env: bad", kept=True)
    assert message == (
        "ConfigMap podgraft/policies key 'log.yaml' rejected: document 1: spec.env: bad; "
        "the last good version of its policies stays in force"
    )
    assert "no earlier version" in rejection_message(cm("p", {}), "k", "e", kept=False)


def test_rejection_message_is_bounded() -> None:
    message = rejection_message(cm("p", {}), "k", "x" * 5000, kept=True)
    assert len(message) == MAX_EVENT_MESSAGE
    assert message.endswith("...")


def test_rejection_event_is_a_warning_on_the_configmap() -> None:
    now = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    event = warning_event(cm("policies", {}, rv="42").ref(), EVENT_REASON, "boom", now=now, instance="pod-1")
    assert event["metadata"] == {"generateName": "policies.", "namespace": "podgraft"}
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "namespace": "podgraft",
        "name": "policies",
        "uid": "uid-policies",
        "resourceVersion": "42",
    }
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "PolicyRejected", "boom")
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2025-01-02T03:04:05Z"


# --- caBundle -------------------------------------------------------------------------------------------


def test_ca_bundle_patch_sets_every_stale_entry_behind_a_resource_version_guard() -> None:
    configuration = {
        "metadata": {"name": "podgraft", "resourceVersion": "7"},
        "webhooks": [
            {"name": "a.podgraft.io", "clientConfig": {"caBundle": "old"}},
            {"name": "b.podgraft.io", "clientConfig": {"caBundle": "new"}},
            {"name": "c.podgraft.io", "clientConfig": {"url": "https://x"}},
            {"name": "d.podgraft.io"},
        ],
    }
    ops = ca_bundle_patch(configuration, "new")
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    patched = jsonpatch.apply_patch(configuration, ops)
    assert [w["clientConfig"]["caBundle"] for w in patched["webhooks"]] == ["new"] * 4
    assert [w["name"] for w in patched["webhooks"]] == [w["name"] for w in configuration["webhooks"]]
    assert configuration["webhooks"][0]["clientConfig"]["caBundle"] == "old", "the input is not modified"
    moved = {**configuration, "metadata": {"name": "podgraft", "resourceVersion": "8"}}
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(moved, ops)


def test_ca_bundle_patch_is_empty_when_current_and_refuses_an_empty_configuration() -> None:
    current = {"webhooks": [{"name": "a", "clientConfig": {"caBundle": "x"}}]}
    assert ca_bundle_patch(current, "x") == []
    with pytest.raises(ValueError, match="has no webhooks"):
        ca_bundle_patch({"metadata": {"name": "empty"}, "webhooks": []}, "x")


def test_read_ca_bundle_checks_the_pem(tmp_path: Path) -> None:
    ca_cert, _ = generate_ca()
    (tmp_path / "ca.crt").write_bytes(ca_cert)
    assert base64.b64decode(read_ca_bundle(tmp_path / "ca.crt")) == ca_cert
    (tmp_path / "junk").write_text("not a certificate")
    with pytest.raises(ValueError, match="no PEM certificate"):
        read_ca_bundle(tmp_path / "junk")


# --- ListWatch with a fake API --------------------------------------------------------------------------


class FakeApi:
    """Scripted list and watch calls; records the resourceVersions the watches started from."""

    def __init__(self, watches: list[list[tuple[str, str | None, str] | Exception] | Exception]) -> None:
        self.lists = 0
        self.watch_versions: list[str] = []
        self.watches = watches

    def lister(self) -> tuple[list[str], str]:
        self.lists += 1
        return [f"listed-{self.lists}"], f"{self.lists * 100}"

    def watcher(self, version: str) -> Iterator[tuple[str, str | None, str]]:
        self.watch_versions.append(version)
        if not self.watches:
            raise RuntimeError("script exhausted")
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        for item in step:
            if isinstance(item, Exception):
                raise item
            yield item

    def list_watch(self, sink: Any) -> ListWatch[Any]:
        return ListWatch("fake", lister=self.lister, watcher=self.watcher, sink=sink)


def run_list_watch(api: FakeApi, *, until: int) -> tuple[list[Any], ListWatch[str]]:
    seen: list[Any] = []
    holder: list[ListWatch[str]] = []

    def record(item: Any) -> None:
        seen.append(item)
        if len(seen) >= until:
            holder[0].stop()

    watch: ListWatch[str] = ListWatch(
        "fake",
        lister=api.lister,
        watcher=api.watcher,
        sink=lambda event: record(
            ("list", event.items) if isinstance(event, Listed) else (event.kind, event.item)
        ),
        backoff=Backoff(initial=0.0, cap=0.0),
    )
    holder.append(watch)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the list/watch loop did not stop"
    return seen, watch


def test_list_watch_resumes_from_the_last_version_and_relists_on_410() -> None:
    api = FakeApi(
        [
            [("ADDED", "a", "101"), ("BOOKMARK", None, "150")],  # ends normally: resume from 150
            ConnectionResetError("dropped"),  # a failure: retry from 150 again, no list
            [("MODIFIED", "a", "160"), ConnectionResetError("mid-stream")],  # resume from 160
            ApiException(status=410, reason="Gone"),  # too old: list again
            [("MODIFIED", "b", "201"), ("DELETED", "b", "202")],
        ]
    )
    seen, watch = run_list_watch(api, until=6)

    assert seen == [
        ("list", ["listed-1"]),
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("list", ["listed-2"]),
        ("MODIFIED", "b"),
        ("DELETED", "b"),
    ]
    assert api.watch_versions == ["100", "150", "150", "160", "200"]
    assert watch.lists == 2


def test_list_watch_retries_a_failing_list_with_backoff() -> None:
    api = FakeApi([[("ADDED", "a", "101")]])
    failures = [ApiException(status=403, reason="Forbidden"), TimeoutError("slow")]
    real_lister = api.lister

    def flaky() -> tuple[list[str], str]:
        if failures:
            raise failures.pop(0)
        return real_lister()

    api.lister = flaky  # type: ignore[method-assign]
    seen, _ = run_list_watch(api, until=2)
    assert seen == [("list", ["listed-1"]), ("ADDED", "a")]


# --- ConfigMapSource with a fake list/watch -----------------------------------------------------------


def test_configmap_source_first_sync_events_and_rejections() -> None:
    """First full load (ready), then a live edit fixes a broken key; Events only for fresh errors."""
    posted: list[tuple[str, str]] = []
    release = threading.Event()

    def factory(namespace: str, sink: Sink[PolicyConfigMap]) -> ListWatch[PolicyConfigMap]:
        listed = [
            cm(
                "policies",
                {"good.yaml": GOOD.format(name="good", edition="1"), "bad.yaml": BAD},
                namespace=namespace,
            )
        ]

        def watcher(version: str) -> Iterator[tuple[str, PolicyConfigMap | None, str]]:
            fixed = {
                "good.yaml": GOOD.format(name="good", edition="2"),
                "bad.yaml": GOOD.format(name="fixed", edition="1"),
            }
            for _ in range(500):  # the edit arrives after the first full load
                if store.synced:
                    break
                release.wait(0.01)
            yield "MODIFIED", cm("policies", fixed, namespace=namespace, rv="2"), "2"
            release.wait(10)

        return ListWatch(
            f"configmaps {namespace}",
            lister=lambda: (listed, "1"),
            watcher=watcher,
            sink=sink,
            interrupt=release.set,
        )

    store = PolicyStore()
    source = ConfigMapSource(
        ["podgraft"],
        post_event=lambda ref, reason, message: posted.append((f"{ref.kind} {ref.name} {reason}", message)),
        watch_factory=factory,
    )

    async def scenario() -> None:
        task = asyncio.create_task(source.run(store))
        for _ in range(200):
            if "fixed" in store.current().by_name:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # let the Event task finish
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())

    assert store.synced
    assert sorted(store.current().by_name) == ["fixed", "good"]
    assert store.errors() == {}
    assert len(posted) == 1
    name, message = posted[0]
    assert name == "ConfigMap policies PolicyRejected"
    assert "ConfigMap podgraft/policies key 'bad.yaml' rejected" in message
    assert "spec.initContainerPosition" in message
    assert "no earlier version of it is in force" in message


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
    mode = cluster_mode(settings)

    assert mode.settings.kubernetes_version == "1.28"  # not asked: the API server is not even reachable
    assert isinstance(mode.namespaces, NamespaceCache)
    [source] = mode.sources
    assert isinstance(source, ConfigMapSource)
    assert source.namespaces == ["a", "b"]
    assert source.selector == "podgraft.io/policy=true"
    assert mode.census is None

    audited = cluster_mode(settings.model_copy(update={"audit_enabled": True, "audit_refresh_seconds": 5}))
    assert audited.census is not None
    assert [type(s).__name__ for s in audited.sources] == ["ConfigMapSource", "CensusWatch"]
    census_watch = audited.sources[1]
    assert isinstance(census_watch, CensusWatch)
    assert (census_watch.census, census_watch.refresh_seconds) == (audited.census, 5)


def test_a_stopped_list_watch_cannot_be_restarted() -> None:
    watch: ListWatch[str] = ListWatch(
        "once", lister=lambda: ([], "1"), watcher=lambda v: iter(()), sink=print
    )
    watch.stop()
    with pytest.raises(RuntimeError, match="make a new one"):
        watch.start()


# --- kube_list_watch over raw JSON ----------------------------------------------------------------------


class FakeResponse:
    """What the client returns with `_preload_content=False`: a urllib3-like response."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.status = status
        self.reason = "OK" if status == 200 else "Error"
        self.data = body
        self.released = False

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for cut in range(0, len(self.data), 7):  # in odd chunks: lines are split across reads
            yield self.data[cut : cut + 7]

    def release_conn(self) -> None:
        self.released = True

    def close(self) -> None:
        self.released = True


def test_kube_list_watch_pages_the_listing_and_reads_the_watch_stream_as_json() -> None:
    calls: list[dict[str, Any]] = []
    pages = {
        None: {
            "metadata": {"continue": "p2", "resourceVersion": "10"},
            "items": [{"metadata": {"name": "a"}}],
        },
        "p2": {"metadata": {"resourceVersion": "10"}, "items": [{"metadata": {"name": "b"}}]},
    }
    stream = b"".join(
        json.dumps(event).encode() + b"\n"  # the API ends every event with a newline
        for event in (
            {"type": "ADDED", "object": {"metadata": {"name": "c", "resourceVersion": "11"}}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}},
        )
    )
    responses: list[FakeResponse] = []

    def list_function(namespace: str, **kwargs: Any) -> FakeResponse:
        calls.append({"namespace": namespace, **kwargs})
        response = FakeResponse(
            stream if kwargs.get("watch") else json.dumps(pages[kwargs["_continue"]]).encode()
        )
        responses.append(response)
        return response

    events: list[WatchEvent[str]] = []
    watch = kube_list_watch(
        "fake",
        list_function,
        "ns",
        label_selector="x=y",
        convert=lambda obj: obj["metadata"]["name"],
        sink=events.append,
        page_size=1,
    )
    items, version = watch.lister()
    assert (items, version) == (["a", "b"], "10")
    assert [(c["limit"], c["_continue"], c["label_selector"]) for c in calls] == [
        (1, None, "x=y"),
        (1, "p2", "x=y"),
    ]

    seen: list[tuple[str, str | None, str]] = []
    with pytest.raises(ApiException) as gone:
        seen.extend(watch.watcher("10"))
    assert seen == [("ADDED", "c", "11"), ("BOOKMARK", None, "15")]
    assert gone.value.status == 410
    assert calls[-1]["watch"] is True
    assert calls[-1]["resource_version"] == "10"
    assert all(r.released for r in responses)


def test_kube_list_watch_raises_an_error_status_as_an_api_exception() -> None:
    watch = kube_list_watch(
        "fake",
        lambda **kwargs: FakeResponse(b'{"kind":"Status","code":403}', status=403),
        convert=str,
        sink=print,
    )
    with pytest.raises(ApiException) as refused:
        watch.lister()
    assert refused.value.status == 403


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
