"""Events on the workload: coalesced into series, rate limited per namespace, bounded everywhere, and
never on the admission path (a hanging or failing Events API changes no admission)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from kubernetes.client.exceptions import ApiException
from prometheus_client import generate_latest

from app.admission.cache import DecisionCache
from app.admission.decide import Verdict
from app.admission.review import AdmissionRequest, parse_review
from app.cluster.events import REPORTING_CONTROLLER
from app.cluster.outcomes import INJECTED, SKIPPED, Level
from app.cluster.reporter import MAX_TRIES, WorkloadEvents
from app.cluster.series import RATE_BURST, RATE_REFILL_SECONDS
from app.engine.config import EngineConfig
from app.metrics import Metrics
from app.server import create_app
from app.settings import Settings
from app.sources.store import PolicyStore
from tests.conftest import make_review
from tests.unit.builders import policy_yaml
from tests.unit.events_support import FakeEventsAPI, owned

NS = "shop"
RS_UID = "2f3c1c9e-8d6b-4f0e-9a51-0c3b7e9d4a11"
SHIPPER = policy_yaml(
    "log-shipper",
    volumes=[{"name": "app-logs", "emptyDir": {}}],
    sidecars=[{"name": "log-shipper", "image": "fluent/fluent-bit:3.2"}],
    sidecarMode="native",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_756_000.0

    def __call__(self) -> float:
        return self.now


def _store() -> PolicyStore:
    store = PolicyStore()
    assert not store.replace_all({"log-shipper.yaml": SHIPPER})
    return store


def _replica(rs: str = "web-7d9f8c6b5", uid: str = RS_UID, *, conflict: bool = True) -> dict[str, Any]:
    """A pod as the ReplicaSet controller submits it; `conflict`: its own volume named app-logs."""
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    if conflict:
        spec["volumes"] = [{"name": "app-logs", "configMap": {"name": "logs"}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{rs}-",
            "labels": {"app": "web"},
            "annotations": {"podgraft.io/inject": "log-shipper"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": uid, "controller": True}
            ],
        },
        "spec": spec,
    }


def _request(pod: dict[str, Any], namespace: str = NS) -> AdmissionRequest:
    return parse_review(orjson.dumps(make_review(pod, namespace=namespace)))


def _objects(*replicasets: tuple[str, str, str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """ReplicaSets (name, uid, deployment) in NS, each owned by its Deployment."""
    return {
        ("ReplicaSet", NS, name): owned(
            "ReplicaSet", name, uid, ("apps/v1", "Deployment", deployment, f"{deployment}-uid")
        )
        for name, uid, deployment in replicasets
    }


def _reporter(
    api: FakeEventsAPI, *, level: Level = "warnings", clock: Clock | None = None, **options: Any
) -> WorkloadEvents:
    return WorkloadEvents(
        api,
        metrics=Metrics(),
        level=level,
        instance="podgraft-7c9d-x2x4q",
        clock=clock or Clock(),
        **options,
    )


def _admit(events: WorkloadEvents, pods: list[dict[str, Any]], namespace: str = NS) -> list[Verdict]:
    """Decide each pod through the decision cache, as the server does, and tell `events`."""
    cache, policies = DecisionCache(), _store().current()
    verdicts = []
    for pod in pods:
        request = _request(pod, namespace)
        verdict = cache.decide(request, policies=policies, config=EngineConfig(), namespace_labels=None)
        events.observe(request, verdict)
        verdicts.append(verdict)
    return verdicts


def _drain(events: WorkloadEvents) -> None:
    events.drain()
    assert not events.queue


def _flush(events: WorkloadEvents) -> None:
    _drain(events)
    batch, events.pending = events.pending, {}
    events.pending.update(events.writer.write(batch))


def _sample(events: WorkloadEvents, name: str, **labels: str) -> float:
    value = events.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# --- coalescing ----------------------------------------------------------------------------------


def test_a_scale_up_of_100_replicas_is_one_event_on_the_deployment_with_a_series_count_of_100() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    clock = Clock()
    events = _reporter(api, clock=clock)
    verdicts = _admit(events, [_replica() for _ in range(100)])
    assert {v.outcome for v in verdicts} == {"allowed"}
    _flush(events)

    [event] = api.events.values()
    [warning] = verdicts[0].result.warnings  # type: ignore[union-attr]
    assert event["regarding"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": NS,
        "name": "web",
        "uid": "web-uid",
    }
    assert event["related"] == {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "namespace": NS,
        "name": "web-7d9f8c6b5",
        "uid": RS_UID,
    }
    assert (event["type"], event["reason"], event["action"], event["note"]) == (
        "Warning",
        SKIPPED,
        "Skip",
        warning,
    )
    assert (event["reportingController"], event["reportingInstance"]) == (
        REPORTING_CONTROLLER,
        "podgraft-7c9d-x2x4q",
    )
    assert event["series"]["count"] == 100
    assert event["metadata"]["name"].startswith("web.")
    assert [verb for verb, _ in api.calls] == ["get", "create"]  # one owner lookup, one write
    assert _sample(events, "podgraft_events_total", reason=SKIPPED) == 100

    clock.now += 30
    _admit(events, [_replica() for _ in range(5)])
    _flush(events)
    assert api.events[(NS, event["metadata"]["name"])]["series"]["count"] == 105
    assert [verb for verb, _ in api.calls] == ["get", "create", "patch"]
    assert _sample(events, "podgraft_events_total", reason=SKIPPED) == 105


def test_one_occurrence_is_an_event_without_a_series() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    events = _reporter(api)
    _admit(events, [_replica()])
    _flush(events)
    [event] = api.events.values()
    assert "series" not in event


def test_each_replicaset_of_a_rollout_and_each_outcome_is_its_own_series() -> None:
    api = FakeEventsAPI(_objects(("web-old", "old-uid", "web"), ("web-new", "new-uid", "web")))
    events = _reporter(api, level="all")
    _admit(events, [_replica("web-old", "old-uid")] * 3 + [_replica("web-new", "new-uid")] * 2)
    _admit(events, [_replica("web-new", "new-uid", conflict=False)] * 4)
    _flush(events)
    found = sorted((e["related"]["name"], e["reason"], api.count(e)) for e in api.on("Deployment", "web"))
    assert found == [("web-new", INJECTED, 4), ("web-new", SKIPPED, 2), ("web-old", SKIPPED, 3)]


def test_a_series_quiet_for_6_minutes_is_over_and_the_next_occurrence_starts_a_new_event() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    clock = Clock()
    events = _reporter(api, clock=clock)
    _admit(events, [_replica()] * 2)
    _flush(events)
    clock.now += 361
    _admit(events, [_replica()] * 3)
    _flush(events)
    assert sorted(api.count(e) for e in api.events.values()) == [2, 3]


def test_a_pod_without_a_controller_gets_no_event() -> None:
    api = FakeEventsAPI()
    events = _reporter(api)
    bare = _replica()
    del bare["metadata"]["ownerReferences"]
    _admit(events, [bare])
    _flush(events)
    assert api.calls == []
    assert len(events.writer.book) == 0


def test_an_expired_event_is_created_again_with_the_whole_count() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    clock = Clock()
    events = _reporter(api, clock=clock)
    _admit(events, [_replica()] * 2)
    _flush(events)
    api.events.clear()  # the apiserver's event TTL
    clock.now += 10
    _admit(events, [_replica()])
    _flush(events)
    [event] = api.events.values()
    assert event["series"]["count"] == 3
    assert [verb for verb, _ in api.calls] == ["get", "create", "patch", "create"]


# --- limits -----------------------------------------------------------------------------------------


def test_new_events_are_rate_limited_per_namespace_with_client_gos_numbers() -> None:
    deployments = [(f"d{i}-rs", f"uid-{i}", f"d{i}") for i in range(RATE_BURST + 1)]
    api = FakeEventsAPI(
        {
            **_objects(*deployments),
            ("ReplicaSet", "other", "d0-rs"): owned("ReplicaSet", "d0-rs", "uid-0", None, "other"),
        }
    )
    clock = Clock()
    events = _reporter(api, clock=clock)
    _admit(events, [_replica(rs, uid) for rs, uid, _ in deployments])
    _admit(events, [_replica("d0-rs", "uid-0")], namespace="other")
    _flush(events)
    assert len([e for e in api.events.values() if e["metadata"]["namespace"] == NS]) == RATE_BURST
    assert len([e for e in api.events.values() if e["metadata"]["namespace"] == "other"]) == 1
    assert _sample(events, "podgraft_events_dropped_total", cause="rate_limited") == 1
    # counting into an existing series costs no token
    _admit(events, [_replica("d0-rs", "uid-0")] * 3)
    _flush(events)
    assert _sample(events, "podgraft_events_dropped_total", cause="rate_limited") == 1
    clock.now += RATE_REFILL_SECONDS
    _admit(events, [_replica(f"d{RATE_BURST}-rs", f"uid-{RATE_BURST}")])
    _flush(events)
    assert len(api.on("Deployment", f"d{RATE_BURST}")) == 1


def test_a_full_queue_drops_and_counts_and_never_blocks() -> None:
    events = _reporter(FakeEventsAPI(), queue_size=3)
    _admit(events, [_replica() for _ in range(5)])  # nobody drains: the drain task is not running
    assert len(events.queue) == 3
    assert _sample(events, "podgraft_events_dropped_total", cause="queue_full") == 2


def test_pending_counts_are_bounded() -> None:
    events = _reporter(FakeEventsAPI(), max_pending=2)
    _admit(events, [_replica(f"rs-{i}", f"uid-{i}") for i in range(3)])
    _drain(events)
    assert len(events.pending) == 2
    assert _sample(events, "podgraft_events_dropped_total", cause="overflow") == 1


def test_a_dry_run_tells_nothing() -> None:
    events = _reporter(FakeEventsAPI())
    review = make_review(_replica(), namespace=NS)
    review["request"]["dryRun"] = True
    request = parse_review(orjson.dumps(review))
    verdict = DecisionCache().decide(
        request, policies=_store().current(), config=EngineConfig(), namespace_labels=None
    )
    assert verdict.result is not None
    assert verdict.result.warnings
    events.observe(request, verdict)
    assert not events.queue


def test_the_queue_keeps_the_owner_references_not_the_pods() -> None:
    """Until the drain, a queued pod would be walked by every collection (the tail of issue 19):
    an item holds the pod's ownerReferences and the result without the patch or the patched pod."""
    events = _reporter(FakeEventsAPI(), level="all")
    pod = _replica(conflict=False)
    request = _request(pod)
    verdict = DecisionCache().decide(
        request, policies=_store().current(), config=EngineConfig(), namespace_labels=None
    )
    events.observe(request, verdict)
    [(namespace, owners, result)] = events.queue
    assert request.object is not None
    assert (namespace, owners) == (NS, pod["metadata"]["ownerReferences"])
    assert owners is request.object["metadata"]["ownerReferences"]  # a part of the pod, not all of it
    assert (result.patch, result.mutated, result.injected) == ([], None, ("log-shipper",))
    events.drain()
    [(key, pending)] = events.pending.items()
    assert (key[0].kind, key[0].name, key[1].reason, pending.count) == (
        "ReplicaSet",
        "web-7d9f8c6b5",
        "Injected",
        1,
    )


def test_nothing_is_queued_for_pods_with_nothing_to_tell() -> None:
    events = _reporter(FakeEventsAPI(), level="warnings")
    _admit(events, [_replica(conflict=False)])  # injected, no warning: not worth a Warning Event
    assert not events.queue


# --- a failing API ------------------------------------------------------------------------------------


def test_a_failing_api_is_retried_at_the_next_flush_with_nothing_lost() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    events = _reporter(api)
    api.failures = [ApiException(status=500, reason="etcd"), ApiException(status=503, reason="down")]
    _admit(events, [_replica()] * 2)
    _flush(events)  # the GET fails: the counts wait
    assert api.events == {}
    _flush(events)  # the GET works, the create fails
    assert api.events == {}
    _admit(events, [_replica()])
    _flush(events)
    [event] = api.events.values()
    assert event["series"]["count"] == 3
    assert _sample(events, "podgraft_events_dropped_total", cause="unavailable") == 0


def test_an_api_failing_for_good_drops_after_max_tries() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    events = _reporter(api)
    api.failures = [ApiException(status=500, reason="etcd")] * MAX_TRIES
    _admit(events, [_replica()] * 2)
    for _ in range(MAX_TRIES):
        _flush(events)
    assert api.events == {}
    assert events.pending == {}
    assert _sample(events, "podgraft_events_dropped_total", cause="unavailable") == 2


def test_a_refused_event_is_dropped_at_once_and_not_retried() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    events = _reporter(api)
    api.failures = [None, ApiException(status=403, reason="Forbidden")]  # the GET works, the create not
    _admit(events, [_replica()] * 2)
    _flush(events)
    _flush(events)
    assert api.events == {}
    assert [verb for verb, _ in api.calls] == ["get", "create"]
    assert _sample(events, "podgraft_events_dropped_total", cause="rejected") == 2


# --- never on the admission path ------------------------------------------------------------------------


def _review(pod: dict[str, Any]) -> dict[str, Any]:
    return make_review(pod, namespace=NS)


def test_admission_completes_while_the_events_api_hangs_and_the_counts_arrive_once_it_answers() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    api.gate.clear()  # every call hangs
    metrics = Metrics()
    events = WorkloadEvents(
        api,
        metrics=metrics,
        level="warnings",
        instance="pg-0",
        flush_seconds=0.02,
    )
    app = create_app(Settings(), store=_store(), metrics=metrics, events=events)
    with TestClient(app) as client:
        first = client.post("/mutate", json=_review(_replica()))
        assert first.status_code == 200
        assert api.entered.wait(10), "the writer never called the API"
        # the writer is stuck in the API; admission goes on, answered as before
        replies = [client.post("/mutate", json=_review(_replica())) for _ in range(50)]
        assert {r.status_code for r in replies} == {200}
        assert all(r.json()["response"]["warnings"] == first.json()["response"]["warnings"] for r in replies)
        assert api.events == {}

        api.gate.set()

        def written() -> int:
            found = api.on("Deployment", "web")
            return api.count(found[0]) if found else 0

        deadline = time.monotonic() + 10
        while written() < 51 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert written() == 51
        text = generate_latest(metrics.registry).decode()
        assert 'podgraft_events_total{reason="InjectionSkipped"} 51.0' in text
        assert "podgraft_decision_cache_hits_total 50.0" in text  # the replicas were answered from the cache


def test_a_hung_api_fills_the_queue_only_as_far_as_its_bound_and_the_drain_keeps_counting() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    api.gate.clear()
    events = _reporter(api, flush_seconds=0.01, queue_size=10)

    async def scenario() -> None:
        task = asyncio.create_task(events.run())
        _admit(events, [_replica()])
        while not api.entered.is_set():
            await asyncio.sleep(0.01)
        for _ in range(20):  # the writer is hung; each admission still returns at once
            _admit(events, [_replica()] * 5)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert not events.queue  # the drain task keeps going
        assert sum(p.count for p in events.pending.values()) == 100
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    api.gate.set()
    assert _sample(events, "podgraft_events_dropped_total", cause="queue_full") == 0


def test_the_drain_keeps_up_when_one_turn_of_the_loop_completes_many_admissions() -> None:
    """Under load, one turn of the event loop finishes hundreds of requests: the drain's next turn
    must take them all, or the queue fills although the drain task runs."""
    events = _reporter(FakeEventsAPI(), flush_seconds=60, queue_size=1000)
    pods = [_replica() for _ in range(900)]

    async def scenario() -> None:
        task = asyncio.create_task(events.run())
        await asyncio.sleep(0)  # the drain waits on the queue
        _admit(events, pods)  # one loop turn's worth of admissions
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # one turn of the drain
        _admit(events, pods)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert _sample(events, "podgraft_events_dropped_total", cause="queue_full") == 0
    assert sum(p.count for p in events.pending.values()) == 1800


def test_the_writer_thread_is_a_daemon_so_a_hung_call_never_holds_up_the_exit() -> None:
    api = FakeEventsAPI(_objects(("web-7d9f8c6b5", RS_UID, "web")))
    api.gate.clear()
    events = _reporter(api, flush_seconds=0.01)

    async def scenario() -> None:
        task = asyncio.create_task(events.run())
        _admit(events, [_replica()])
        while not api.entered.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    [thread] = [t for t in threading.enumerate() if t.name == "podgraft-events" and t.is_alive()]
    assert thread.daemon
    api.gate.set()
    thread.join(5)


@pytest.mark.parametrize("level", ["warnings", "all"])
def test_local_mode_has_no_events(level: str) -> None:
    """Directory mode (`make run`) builds no Events at any level."""
    from app.metrics import Metrics as M
    from app.serve import build_wiring

    wiring, _ = build_wiring(Settings(events=level), M())  # type: ignore[arg-type]
    assert wiring.events is None
