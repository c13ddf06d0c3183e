"""The policy ConfigMap source of app/cluster/configmaps.py, without an API server: the state of
the ConfigMaps seen (deltas, resync, owners), rejection messages and their Warning Events, and
`ConfigMapSource` over a fake list/watch (first sync, a live fix, Events only for fresh errors).

Unit tests (no `e2e` marker): the e2e tier exercises the same code against a real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator

import pytest

from app.cluster.configmaps import (
    EVENT_REASON,
    ConfigMapSource,
    ConfigMapState,
    PolicyConfigMap,
    rejection_message,
    source_key,
)
from app.cluster.events import MAX_EVENT_MESSAGE, warning_event
from app.cluster.watch import ListWatch, Sink
from app.sources.store import PolicyStore
from tests.unit.cluster_support import GOOD

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
        "configmap podgraft/a key x": "1b",
        "configmap podgraft/a key y": None,
        "configmap podgraft/a key z": "3",
    }
    assert state.delete("podgraft", "a") == {
        "configmap podgraft/a key x": None,
        "configmap podgraft/a key z": None,
    }
    assert state.delete("podgraft", "a") == {}


def test_state_resync_removes_configmaps_missing_from_the_listing_of_that_namespace_only() -> None:
    state = ConfigMapState()
    state.upsert(cm("keep", {"k": "1"}))
    state.upsert(cm("gone", {"g": "1"}))
    state.upsert(cm("other", {"o": "1"}, namespace="elsewhere"))

    delta = state.resync("podgraft", [cm("keep", {"k": "2"}), cm("new", {"n": "1"})])

    assert delta == {
        "configmap podgraft/gone key g": None,
        "configmap podgraft/keep key k": "2",
        "configmap podgraft/new key n": "1",
    }
    assert sorted(state.texts()) == [
        "configmap elsewhere/other key o",
        "configmap podgraft/keep key k",
        "configmap podgraft/new key n",
    ]


def test_state_owner_finds_configmap_and_key_even_with_spaces_in_names() -> None:
    state = ConfigMapState()
    state.upsert(cm("a", {"b c.yaml": "x"}))
    state.upsert(cm("a b", {"c.yaml": "y"}))
    owner = state.owner("configmap podgraft/a b key c.yaml")
    assert owner is not None
    assert (owner[0].name, owner[1]) == ("a b", "c.yaml")
    owner = state.owner("configmap podgraft/a key b c.yaml")
    assert owner is not None
    assert (owner[0].name, owner[1]) == ("a", "b c.yaml")
    assert state.owner("configmap podgraft/nope key x") is None


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


def test_a_key_the_apiserver_would_refuse_on_every_pod_is_rejected_naming_configmap_key_and_field() -> None:
    posted: list[str] = []
    schema_error = GOOD.format(name="bad", edition="1") + "  volumes: [{name: v, hostPth: {path: /x}}]\n"

    def factory(namespace: str, sink: Sink[PolicyConfigMap]) -> ListWatch[PolicyConfigMap]:
        listed = [
            cm("policies", {"good.yaml": GOOD.format(name="good", edition="1"), "bad.yaml": schema_error})
        ]
        return ListWatch(
            f"configmaps {namespace}",
            lister=lambda: (listed, "1"),
            watcher=lambda version: iter(()),
            sink=sink,
            interrupt=lambda: None,
        )

    store = PolicyStore()
    source = ConfigMapSource(
        ["podgraft"], post_event=lambda ref, reason, message: posted.append(message), watch_factory=factory
    )

    async def scenario() -> None:
        task = asyncio.create_task(source.run(store))
        for _ in range(200):
            if store.synced and posted:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert sorted(store.current().by_name) == ["good"], "the refused policy never goes live"
    assert posted == [
        "ConfigMap podgraft/policies key 'bad.yaml' rejected: document 1: policy 'bad': "
        "spec.volumes[0].hostPth: unknown field in Kubernetes 1.29; did you mean 'hostPath'?; "
        "no earlier version of it is in force"
    ]
