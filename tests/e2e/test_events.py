"""Issue 17 §1: Events on the workload, through a real kube-apiserver. This tier runs no controllers,
so the tests create the objects of each controller chain (Deployment -> ReplicaSet -> pods, CronJob ->
Job -> pod, StatefulSet -> pod) the way their controllers do: pods with a `generateName`, no name or
UID, and the controller's ownerReference. Podgraft runs with the chart's RBAC (its ClusterRole for
Events: create/patch events.k8s.io Events, get ReplicaSets and Jobs), `PODGRAFT_EVENTS=all` and a
0.5 s flush."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import E2E
from .events import (
    REPORTING_CONTROLLER,
    Workloads,
    described_events,
    pod_from_template,
    podgraft_events,
    sample,
    summary,
    template,
)
from .kube import INJECT, api_error, error_message, eventually, injected, pod

pytestmark = pytest.mark.e2e

APP = {"name": "app", "image": "nginx:1.27"}
# The pod's own volume named like log-shipper's: the optional policy is skipped, with a warning.
CONFLICTING = {"containers": [APP], "volumes": [{"name": "app-logs", "configMap": {"name": "logs"}}]}
PLAIN = {"containers": [APP]}


def _replicas(e2e: E2E, ns: str, owner: dict[str, Any], count: int) -> list[list[str]]:
    """`count` pods of `owner` created as its controller does; the warnings each creation returned."""
    return [
        e2e.kube.create_pod(ns, pod_from_template(owner, owner["spec"]["template"])).warnings
        for _ in range(count)
    ]


def _cache_hits(e2e: E2E) -> float:
    return sample(e2e.podgraft.get("/metrics")[1].decode(), "podgraft_decision_cache_hits_total")


def _one(e2e: E2E, ns: str, kind: str, name: str, want: int) -> dict[str, Any]:
    def settled() -> dict[str, Any]:
        events = podgraft_events(e2e.kube, ns, kind, name)
        assert len(events) == 1, summary(events)
        assert events[0].get("series", {}).get("count", 1) == want, summary(events)
        return events[0]

    return eventually(settled, timeout=20, what=f"one Podgraft Event on {kind}/{name} counting {want}")


def test_a_deployments_replicas_with_a_conflicting_optional_policy_make_one_warning_on_the_deployment(
    e2e: E2E,
) -> None:
    ns = e2e.opted_in("events")
    workloads = Workloads(e2e.kube)
    deployment = workloads.deployment(
        ns, "web", template({"app": "web"}, {INJECT: "log-shipper"}, CONFLICTING)
    )
    rs = workloads.replica_set(ns, deployment, "5d8f7c9b6")
    hits = _cache_hits(e2e)

    warnings = _replicas(e2e, ns, rs, 5)

    assert warnings[0] == [
        "podgraft: policy 'log-shipper' not injected: the pod already has a different volume named 'app-logs'"
    ]
    assert all(w == warnings[0] for w in warnings)
    event = _one(e2e, ns, "Deployment", "web", 5)
    assert event["regarding"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": ns,
        "name": "web",
        "uid": deployment["metadata"]["uid"],
    }
    assert event["related"] == {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "namespace": ns,
        "name": rs["metadata"]["name"],
        "uid": rs["metadata"]["uid"],
    }
    assert (event["type"], event["reason"], event["action"]) == ("Warning", "InjectionSkipped", "Skip")
    assert event["note"] == warnings[0][0]
    assert (event["reportingController"], event["reportingInstance"]) == (
        REPORTING_CONTROLLER,
        "podgraft-e2e-0",
    )
    # the replicas after the first were answered from the decision cache, and still counted
    assert _cache_hits(e2e) >= hits + 4
    # what `kubectl describe deployment web` lists: the core/v1 view, selected by the Deployment's UID
    [described] = described_events(e2e.kube, ns, deployment)
    assert (described["reason"], described["series"]["count"], described["message"]) == (
        "InjectionSkipped",
        5,
        warnings[0][0],
    )
    assert described["reportingComponent"] == REPORTING_CONTROLLER

    # a second scale-up counts into the same series (the series is patched, not recreated)
    _replicas(e2e, ns, rs, 2)
    again = _one(e2e, ns, "Deployment", "web", 7)
    assert again["metadata"]["name"] == event["metadata"]["name"]


def test_an_injected_deployment_shows_injected_with_policy_version_and_containers(e2e: E2E) -> None:
    ns = e2e.opted_in("events")
    workloads = Workloads(e2e.kube)
    deployment = workloads.deployment(ns, "api", template({"app": "api"}, {INJECT: "wait-for-db"}, PLAIN))
    rs = workloads.replica_set(ns, deployment, "7b6c5d4f3")
    _replicas(e2e, ns, rs, 3)
    event = _one(e2e, ns, "Deployment", "api", 3)
    assert (event["type"], event["reason"], event["action"]) == ("Normal", "Injected", "Inject")
    probe = e2e.kube.create_pod(ns, pod_from_template(rs, rs["spec"]["template"]), dry_run=True).body
    assert injected(probe) == ["wait-for-db"]
    version = probe["metadata"]["annotations"]["podgraft.io/status"].split('"hash":"')[1].split('"')[0]
    assert event["note"] == f"injected policy wait-for-db (version {version}); containers: wait-for-db"


def test_a_cronjobs_job_pod_with_an_explicitly_classic_sidecar_warns_on_the_cronjob(e2e: E2E) -> None:
    ns = e2e.opted_in("events")
    workloads = Workloads(e2e.kube)
    spec = {"containers": [APP], "restartPolicy": "OnFailure"}
    cron = workloads.cron_job(ns, "backup", template({"app": "backup"}, {INJECT: "classic-helper"}, spec))
    job = workloads.job(ns, cron, "29112233")
    [warnings] = [e2e.kube.create_pod(ns, pod_from_template(job, job["spec"]["template"])).warnings]
    [warning] = warnings
    assert "is a classic container (sidecarMode classic)" in warning

    def both() -> list[dict[str, Any]]:
        events = podgraft_events(e2e.kube, ns, "CronJob", "backup")
        assert summary(events) == [("Normal", "Injected", 1), ("Warning", "InjectedWithWarnings", 1)]
        return events

    events = eventually(both, timeout=20, what="Injected and InjectedWithWarnings on the CronJob")
    [warned] = [e for e in events if e["type"] == "Warning"]
    assert warned["note"] == warning
    assert warned["regarding"]["uid"] == cron["metadata"]["uid"]
    assert warned["related"]["name"] == job["metadata"]["name"]


def test_a_pod_denied_by_a_required_policy_tells_its_statefulset_why(e2e: E2E) -> None:
    ns = e2e.opted_in("events")
    sts = Workloads(e2e.kube).stateful_set(ns, "db", template({"app": "db"}, {INJECT: "needs-image"}, PLAIN))
    pod = pod_from_template(sts, sts["spec"]["template"])
    del pod["metadata"]["generateName"]  # the StatefulSet controller names its pods
    pod["metadata"]["name"] = "db-0"
    denied = api_error(lambda: e2e.kube.create_pod(ns, pod))
    message = error_message(denied)
    assert "required policy 'needs-image' could not be rendered" in message

    def told() -> dict[str, Any]:
        events = [
            e for e in podgraft_events(e2e.kube, ns, "StatefulSet", "db") if e["reason"] == "InjectionDenied"
        ]
        assert len(events) == 1, summary(podgraft_events(e2e.kube, ns))
        return events[0]

    event = eventually(told, timeout=20, what="InjectionDenied on the StatefulSet")
    assert (event["type"], event["action"]) == ("Warning", "Deny")
    assert event["note"] in message  # the apiserver prefixes the webhook's name
    assert "related" not in event
    assert event["regarding"]["uid"] == sts["metadata"]["uid"]


def test_a_bare_pod_gets_no_event_its_creator_got_the_warning(e2e: E2E) -> None:
    bare_ns = e2e.opted_in("events-bare")
    alone = pod(name="alone", annotations={INJECT: "log-shipper"})
    alone["spec"]["volumes"] = CONFLICTING["volumes"]
    assert e2e.kube.create_pod(bare_ns, alone).warnings  # told to whoever created it
    # a controlled pod after it: once its Event is written, the bare pod's turn has passed
    ns = e2e.opted_in("events")
    workloads = Workloads(e2e.kube)
    deployment = workloads.deployment(
        ns, "after", template({"app": "after"}, {INJECT: "log-shipper"}, CONFLICTING)
    )
    _replicas(e2e, ns, workloads.replica_set(ns, deployment, "6c5b4a392"), 1)
    _one(e2e, ns, "Deployment", "after", 1)
    assert podgraft_events(e2e.kube, bare_ns) == []
