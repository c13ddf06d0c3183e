"""The `unknown` state (app/audit/classify.py): when a namespace's labels are unknown (a dump without
its Namespace, no right to list Namespaces), what they decide is never reported as a fact; the
report, the restart plan, the census and the metric carry the new state."""

from __future__ import annotations

import copy
from typing import Any

from app.audit.census import Census, record
from app.audit.classify import STATES, PodAudit, audit_pod
from app.audit.owners import Owner
from app.audit.report import AuditedPod, needs_restart, restart_plan, summary_lines
from app.engine.config import EngineConfig
from app.engine.inject import inject_pod
from app.engine.policyset import PolicySet
from app.metrics import CensusCollector
from tests.unit.builders import compiled, pod, policy_set

CONFIG = EngineConfig()
OPTED_IN = {"podgraft.io/injection": "enabled", "team": "a"}
SHIPPER = compiled("log-shipper", sidecars=[{"name": "log-shipper", "image": "fluent/fluent-bit:3.2.0"}])
TEAM_A = compiled(
    "team-a", namespaceSelector={"matchLabels": {"team": "a"}}, env=[{"name": "T", "value": "a"}]
)
LIVE = policy_set(SHIPPER, TEAM_A)


def asking(value: str) -> dict[str, Any]:
    return {
        **pod("web-1", annotations={"podgraft.io/inject": value}),
        "metadata": {"name": "web-1", "namespace": "shop", "annotations": {"podgraft.io/inject": value}},
    }


def injected(item: dict[str, Any], policies: PolicySet) -> dict[str, Any]:
    """`item` as the webhook stores it in an opted-in namespace of team a."""
    mutated = inject_pod(
        item, namespace="shop", namespace_labels=OPTED_IN, policies=policies, config=CONFIG
    ).mutated
    assert mutated is not None
    return copy.deepcopy(dict(mutated))


def states(item: dict[str, Any], labels: dict[str, str] | None, policies: PolicySet = LIVE) -> dict[str, str]:
    audit = audit_pod(item, namespace_labels=labels, policies=policies, config=CONFIG)
    return {s.policy: s.state for s in audit.policies}


def test_missing_is_unknown_when_the_namespace_labels_are_unknown() -> None:
    item = asking("log-shipper")
    assert states(item, OPTED_IN) == {"log-shipper": "missing"}
    [state] = audit_pod(item, namespace_labels=None, policies=LIVE, config=CONFIG).policies
    assert state.state == "unknown"
    assert state.detail == (
        "namespace 'shop' not checked, its labels are unknown; if opted in: missing,"
        " never injected: container 'log-shipper'"
    )
    assert state.live_hash == SHIPPER.content_hash


def test_a_namespace_selector_decides_nothing_on_unknown_labels() -> None:
    assert states(asking("team-a"), {"podgraft.io/injection": "enabled"}) == {"team-a": "refused"}
    assert states(asking("team-a"), None) == {"team-a": "unknown"}, "refused only on an assumption"
    recorded = injected(asking("team-a"), LIVE)
    assert states(recorded, OPTED_IN) == {"team-a": "current"}
    assert states(recorded, {"podgraft.io/injection": "enabled"}) == {"team-a": "orphaned"}
    assert states(recorded, None) == {"team-a": "unknown"}, "orphaned only on an assumption"


def test_what_the_pod_itself_shows_stays_known() -> None:
    old = policy_set(
        compiled("log-shipper", sidecars=[{"name": "log-shipper", "image": "fluent/fluent-bit:3.1.9"}])
    )
    assert states(injected(asking("log-shipper"), old), None) == {"log-shipper": "stale"}
    assert states(injected(asking("log-shipper"), LIVE), None) == {"log-shipper": "current"}
    conflict = asking("log-shipper")
    conflict["spec"]["containers"].append({"name": "log-shipper", "image": "mine"})
    assert states(conflict, None) == {"log-shipper": "refused"}, "a conflict is in the pod"
    assert states(asking("nosuch"), None) == {"nosuch": "refused"}, "no such policy, whatever the labels"
    opted_out = injected(asking("log-shipper"), LIVE)
    opted_out["metadata"]["annotations"]["podgraft.io/inject"] = "false"
    assert states(opted_out, None) == {"log-shipper": "orphaned"}, "the pod opts out: no namespace needed"


def test_unknown_is_counted_but_needs_no_restart() -> None:
    pods = [
        AuditedPod(
            PodAudit("shop", "web-1", (_state("log-shipper", "unknown"),)), Owner("shop", "Deployment", "web")
        ),
        AuditedPod(
            PodAudit("shop", "web-2", (_state("log-shipper", "current"),)), Owner("shop", "Deployment", "web")
        ),
    ]
    assert "unknown" in STATES
    assert summary_lines(pods) == ["policy log-shipper: 1 current, 1 unknown (2 pods)"]
    assert not needs_restart(pods)
    assert restart_plan(pods) == (
        "# nothing is stale or missing: nothing to restart\n"
        "# 1 pod not judged (state unknown: the labels of their namespaces were not read)\n"
    )


def test_the_running_audit_counts_and_exports_unknown() -> None:
    audit = audit_pod(asking("log-shipper"), namespace_labels=None, policies=LIVE, config=CONFIG)
    census = Census()
    item = record(audit)
    assert item is not None
    census.replace({"uid": item})
    assert census.counts() == {("log-shipper", "unknown"): 1}
    snapshot = census.snapshot()
    assert snapshot["policies"] == {"log-shipper": {"unknown": 1}}
    assert [entry["state"] for entry in snapshot["notCurrent"]] == ["unknown"]
    [family] = CensusCollector(census).collect()
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"policy": "log-shipper", "state": "unknown"}, 1)
    ]
    assert "unknown" in family.documentation


def _state(policy: str, state: str) -> Any:
    from app.audit.classify import PolicyState

    return PolicyState(policy, state, f"detail of {policy}")  # type: ignore[arg-type]
