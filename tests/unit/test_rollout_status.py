"""app/rollout/status.py: kubectl rollout status's rules, on every state the real controllers went
through during a `kubectl rollout restart`, checked against what kubectl said about that same state;
what a restart cannot roll out; which pods are new."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from app.rollout.status import (
    RESTARTED_AT,
    cannot_progress,
    new_pods,
    owned_pods,
    pod_problems,
    restart_patch,
    rollout_status,
)
from tests.unit.rollout_support import stored

ROLLOUTS = [("Deployment", "deployment"), ("StatefulSet", "statefulset"), ("DaemonSet", "daemonset")]


def _says(kubectl: dict[str, Any]) -> str:
    return str(kubectl["said"]).replace("\\n", "").strip()


@pytest.mark.parametrize(("kind", "file"), ROLLOUTS, ids=[k for k, _ in ROLLOUTS])
def test_every_sampled_state_gets_kubectls_verdict_and_message(kind: str, file: str) -> None:
    states = stored(f"{file}-rollout.yaml")["states"]
    assert len(states) >= 2, "a rollout goes through several states"
    for sample in states:
        status = rollout_status(kind, sample["object"])
        said = _says(sample["kubectl"])
        assert status.message.replace("'", '"') == said, sample["object"]["status"]
        done = "successfully rolled out" in said or said.startswith(("partitioned roll out complete",))
        assert status.done == done
    assert rollout_status(kind, states[-1]["object"]).done
    assert not rollout_status(kind, states[0]["object"]).done


def test_a_deployment_past_its_progress_deadline_has_failed_as_kubectl_says() -> None:
    sample = stored("stuck.yaml")["progressDeadline"]
    status = rollout_status("Deployment", sample["object"])
    assert not status.done
    assert status.failed == "deployment 'late' exceeded its progress deadline"
    assert sample["kubectl"]["exit"] != 0
    assert "exceeded its progress deadline" in sample["kubectl"]["said"]


@pytest.mark.parametrize(
    ("key", "kind", "reason"),
    [
        ("paused", "Deployment", "the Deployment is paused"),
        ("onDelete", "StatefulSet", "updateStrategy OnDelete"),
        ("partition", "StatefulSet", "rollingUpdate.partition is 1"),
        ("daemonSetOnDelete", "DaemonSet", "updateStrategy OnDelete"),
    ],
)
def test_what_a_restart_cannot_roll_out_says_why(key: str, kind: str, reason: str) -> None:
    assert cannot_progress(kind, stored("stuck.yaml")[key]).startswith(reason)


@pytest.mark.parametrize(("kind", "file"), ROLLOUTS, ids=[k for k, _ in ROLLOUTS])
def test_a_workload_that_rolls_out_can_be_restarted(kind: str, file: str) -> None:
    assert cannot_progress(kind, stored(f"{file}-rollout.yaml")["final"]["object"]) == ""


@pytest.mark.parametrize(("kind", "file"), ROLLOUTS, ids=[k for k, _ in ROLLOUTS])
def test_new_pods_half_way_are_the_new_revisions_only(kind: str, file: str) -> None:
    middle = stored(f"{file}-rollout.yaml")["middle"]
    live = [p for p in middle["pods"] if not p["metadata"].get("deletionTimestamp")]
    fresh = new_pods(
        kind,
        middle["object"],
        middle["pods"],
        replicasets=middle["replicasets"],
        revisions=middle["revisions"],
    )
    assert fresh, "half way, some pods are new"
    assert len(fresh) < len(live) or len(live) == 1
    template = middle["object"]["spec"]["template"]["metadata"]["annotations"]
    assert RESTARTED_AT in template
    mine = owned_pods(kind, middle["object"], middle["pods"], middle["replicasets"])
    assert {p["metadata"]["name"] for p in fresh} <= {p["metadata"]["name"] for p in mine}


@pytest.mark.parametrize(("kind", "file"), ROLLOUTS, ids=[k for k, _ in ROLLOUTS])
def test_once_complete_every_live_pod_is_new(kind: str, file: str) -> None:
    final = stored(f"{file}-rollout.yaml")["final"]
    mine = owned_pods(kind, final["object"], final["pods"], final["replicasets"])
    fresh = new_pods(
        kind, final["object"], final["pods"], replicasets=final["replicasets"], revisions=final["revisions"]
    )
    assert mine
    assert {p["metadata"]["name"] for p in fresh} == {p["metadata"]["name"] for p in mine}


def test_other_controllers_pods_and_terminating_ones_are_not_the_workloads() -> None:
    final = stored("deployment-rollout.yaml")["final"]
    stranger = {
        "metadata": {
            "name": "x",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "other", "controller": True}],
        }
    }
    going = {
        **final["pods"][0],
        "metadata": {**final["pods"][0]["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"},
    }
    found = owned_pods("Deployment", final["object"], [*final["pods"], stranger, going], final["replicasets"])
    live = [p for p in final["pods"] if not p["metadata"].get("deletionTimestamp")]
    assert [p["metadata"]["name"] for p in found] == [p["metadata"]["name"] for p in live]


def test_the_restart_patch_is_kubectls_annotation_with_the_local_offset() -> None:
    now = datetime(2026, 12, 3, 14, 5, 9, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert restart_patch(now) == {
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: "2026-12-03T14:05:09+01:00"}}}}
    }


def test_a_pod_that_cannot_start_is_named_with_its_reason() -> None:
    pod = stored("deployment-rollout.yaml")["final"]["pods"][0]
    pod["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "ImagePullBackOff", "message": "no registry"}
    }
    assert pod_problems([pod]) == f"pod {pod['metadata']['name']} container app: ImagePullBackOff no registry"
    assert pod_problems(stored("deployment-rollout.yaml")["final"]["pods"]) == ""
