"""app/audit: owners, the census, the report and the restart plan (pure; the states come from
tests/unit/test_audit_classify.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml

from app.audit.census import MAX_LISTED, Census, record
from app.audit.classify import PodAudit, PolicyState
from app.audit.owners import Owner, controller_ref, parent_index, resolve_owner
from app.audit.report import AuditedPod, needs_restart, only_policy, render, restart_plan, summary


def _pod(name: str, *, owner: tuple[str, str] | None = None, namespace: str = "shop") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Other", "name": "not-the-controller", "controller": False},
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": True},
        ]
    return {"metadata": metadata}


# --- owners -------------------------------------------------------------------------------------------


def test_owners_follow_replicasets_to_deployments_and_jobs_to_cronjobs() -> None:
    parents = {
        **parent_index([_pod("web-7d9", owner=("Deployment", "web"))], "ReplicaSet"),
        **parent_index([_pod("nightly-281", owner=("CronJob", "nightly"))], "Job"),
    }
    assert resolve_owner(_pod("web-7d9-abc", owner=("ReplicaSet", "web-7d9")), parents) == Owner(
        "shop", "Deployment", "web"
    )
    assert (
        str(resolve_owner(_pod("nightly-281-x", owner=("Job", "nightly-281")), parents)) == "CronJob/nightly"
    )
    assert str(resolve_owner(_pod("db-0", owner=("StatefulSet", "db")), parents)) == "StatefulSet/db"
    assert str(resolve_owner(_pod("once-x", owner=("Job", "once")), parents)) == "Job/once"  # no CronJob
    assert (
        str(resolve_owner(_pod("lost-x", owner=("ReplicaSet", "unlisted")), parents)) == "ReplicaSet/unlisted"
    )
    assert str(resolve_owner(_pod("debug"), parents)) == "Pod/debug"
    assert str(resolve_owner(_pod("x", owner=("Rollout", "canary")), parents)) == "Rollout/canary"


@pytest.mark.parametrize(
    "refs",
    [
        None,
        "junk",
        [None, 3, "x"],
        [{"controller": "true", "kind": "ReplicaSet", "name": "a"}],
        [{"controller": True}],
    ],
    ids=["none", "string", "junk-items", "controller-string", "no-kind"],
)
def test_a_broken_owner_reference_is_no_controller(refs: Any) -> None:
    assert controller_ref({"ownerReferences": refs}) is None


def test_only_rollout_kinds_have_a_rollout() -> None:
    assert [Owner("a", k, "x").has_rollout for k in ("Deployment", "StatefulSet", "DaemonSet")] == [True] * 3
    assert [Owner("a", k, "x").has_rollout for k in ("ReplicaSet", "Job", "CronJob", "Pod")] == [False] * 4


# --- report -------------------------------------------------------------------------------------------


def _audited(name: str, owner: Owner, *states: tuple[str, str], note: str = "") -> AuditedPod:
    policies = tuple(
        PolicyState(p, s, f"detail of {p}", recorded_hash="aaaa" if s == "stale" else None, live_hash="bbbb")  # type: ignore[arg-type]
        for p, s in states
    )
    return AuditedPod(PodAudit(owner.namespace, name, policies, note), owner)


WEB = Owner("shop", "Deployment", "web")
DB = Owner("shop", "StatefulSet", "db")
JOB = Owner("batch", "Job", "once")
PODS = [
    _audited("web-1", WEB, ("log-shipper", "current"), ("mesh-proxy", "stale")),
    _audited("web-2", WEB, ("log-shipper", "current"), ("mesh-proxy", "current")),
    _audited("db-0", DB, ("log-shipper", "missing")),
    _audited("once-x", JOB, ("log-shipper", "missing"), note="the podgraft.io/status annotation is not JSON"),
    _audited("cache-0", Owner("shop", "StatefulSet", "cache"), ("log-shipper", "refused")),
]


def test_summary_counts_pods_per_state_per_policy_and_the_exit_signal() -> None:
    assert summary(PODS) == {
        "log-shipper": {"current": 2, "missing": 2, "refused": 1},
        "mesh-proxy": {"stale": 1, "current": 1},
    }
    assert needs_restart(PODS)
    assert not needs_restart([PODS[1], PODS[4]]), "refused and current need no restart"
    assert only_policy(PODS, "mesh-proxy") == [
        _audited("web-1", WEB, ("mesh-proxy", "stale")),
        _audited("web-2", WEB, ("mesh-proxy", "current")),
    ]


def test_table_has_a_row_per_pod_and_policy_and_a_summary_line_per_policy() -> None:
    text = render(PODS, "table")
    lines = text.splitlines()
    assert lines[0].split() == ["NAMESPACE", "POD", "OWNER", "POLICY", "STATE", "DETAIL"]
    assert lines[1].split()[:5] == ["shop", "web-1", "Deployment/web", "log-shipper", "current"]
    assert ["batch", "once-x", "Job/once", "log-shipper", "missing"] in [line.split()[:5] for line in lines]
    assert "detail of log-shipper; the podgraft.io/status annotation is not JSON" in text
    assert lines[-3:] == [
        "policy log-shipper: 2 current, 2 missing, 1 refused (5 pods)",
        "policy mesh-proxy: 1 current, 1 stale (2 pods)",
        "1 pod with a status annotation that cannot be read",
    ]


def test_json_and_yaml_hold_the_same_document() -> None:
    data = orjson.loads(render(PODS, "json"))
    assert data == yaml.safe_load(render(PODS, "yaml"))
    assert data["needsRestart"] is True
    assert data["pods"][0] == {
        "namespace": "shop",
        "pod": "web-1",
        "owner": "Deployment/web",
        "policies": [
            {
                "policy": "log-shipper",
                "state": "current",
                "detail": "detail of log-shipper",
                "recordedHash": None,
                "liveHash": "bbbb",
            },
            {
                "policy": "mesh-proxy",
                "state": "stale",
                "detail": "detail of mesh-proxy",
                "recordedHash": "aaaa",
                "liveHash": "bbbb",
            },
        ],
    }
    assert data["pods"][3]["note"] == "the podgraft.io/status annotation is not JSON"


def test_restart_plan_restarts_one_owner_at_a_time_and_lists_the_others_apart() -> None:
    plan = restart_plan(PODS).splitlines()
    commands = [line for line in plan if line.startswith("kubectl")]
    assert commands == [
        "kubectl rollout restart -n shop deployment/web && kubectl rollout status -n shop deployment/web"
        " --timeout=10m  # mesh-proxy stale",
        "kubectl rollout restart -n shop statefulset/db && kubectl rollout status -n shop statefulset/db"
        " --timeout=10m  # log-shipper missing",
    ]
    assert "#   batch Job/once: log-shipper missing" in plan
    assert "cache" not in "\n".join(plan), "a refused policy is not fixed by a restart"
    assert restart_plan([PODS[1]]) == "# nothing is stale or missing: nothing to restart\n"


# --- census -------------------------------------------------------------------------------------------


def test_census_keeps_records_and_counts_through_listings_and_events() -> None:
    census = Census()
    assert not census.synced
    web1, web2, db = (record(p.audit) for p in PODS[:3])
    assert web1 is not None
    assert web2 is not None
    assert db is not None
    assert web2.states == (("log-shipper", "current", ""), ("mesh-proxy", "current", ""))
    assert record(PodAudit("shop", "plain", ())) is None, "a pod no policy concerns is not kept"
    census.replace({"u1": web1, "u2": web2})
    assert census.synced
    census.put("u3", db)
    census.put("u2", None)  # no longer concerned
    census.put("u2", None)
    assert census.counts() == {
        ("log-shipper", "current"): 1,
        ("mesh-proxy", "stale"): 1,
        ("log-shipper", "missing"): 1,
    }
    snapshot = census.snapshot()
    assert snapshot["pods"] == 2
    assert snapshot["policies"] == {"log-shipper": {"current": 1, "missing": 1}, "mesh-proxy": {"stale": 1}}
    assert snapshot["notCurrent"] == [
        {
            "namespace": "shop",
            "pod": "db-0",
            "policy": "log-shipper",
            "state": "missing",
            "detail": "detail of log-shipper",
        },
        {
            "namespace": "shop",
            "pod": "web-1",
            "policy": "mesh-proxy",
            "state": "stale",
            "detail": "detail of mesh-proxy",
        },
    ]


def test_census_lists_a_bounded_number_of_pods_that_need_a_look() -> None:
    census = Census()
    item = record(PODS[2].audit)
    assert item is not None
    census.replace({str(i): item for i in range(MAX_LISTED * 3)})
    snapshot = census.snapshot()
    assert snapshot["policies"] == {"log-shipper": {"missing": MAX_LISTED * 3}}
    assert len(snapshot["notCurrent"]) == MAX_LISTED
