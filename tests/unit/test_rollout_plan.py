"""app/rollout/plan.py: which workloads are restarted, in which order and waves, and which are reported
instead; pods as the real controllers made them, judged by the audit."""

from __future__ import annotations

from typing import Any

from app.audit.owners import Owner, parent_index
from app.audit.report import audit_pods
from app.rollout.plan import Plan, Target, build_plan, to_start, wave_finished, waves
from tests.unit.rollout_support import CONFIG, namespace_labels, policies, stored


def _audited(version: str, pods: list[dict[str, Any]], replicasets: list[dict[str, Any]]) -> Any:
    return audit_pods(
        pods,
        parents=parent_index(replicasets, "ReplicaSet"),
        namespace_labels=lambda _ns: namespace_labels(),
        policies=policies(version),
        config=CONFIG,
    )


def _workloads() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pods of the captured Deployment, StatefulSet and DaemonSet once rolled out (the old ones
    still terminating among them), and a Job's pod."""
    pods: list[dict[str, Any]] = []
    replicasets: list[dict[str, Any]] = []
    for file in ("deployment", "statefulset", "daemonset"):
        final = stored(f"{file}-rollout.yaml")["final"]
        pods += final["pods"]
        replicasets += final["replicasets"]
    return [*pods, stored("job-pod.yaml")], replicasets


def _ready(owner: Owner) -> str:
    return ""


def test_after_a_policy_edit_every_workload_is_a_target_in_the_audits_order() -> None:
    pods, replicasets = _workloads()
    plan = build_plan(_audited("v2", pods, replicasets), workload=_ready)
    assert [t.owner.ref() for t in plan.targets] == ["daemonset/agent", "deployment/web", "statefulset/db"]
    web = next(t for t in plan.targets if t.owner.name == "web")
    assert web.behind == (("stamp", "stale", 2),)
    assert web.why() == "stamp stale on 2 of 2 pods"
    assert "STAMP" in web.detail
    assert plan.current == plan.cannot == plan.untouched == ()


def test_with_the_policy_they_were_injected_with_everything_is_current() -> None:
    pods, replicasets = _workloads()
    plan = build_plan(_audited("v1", pods, replicasets), workload=_ready)
    assert plan.targets == ()
    assert [t.owner.ref() for t in plan.current] == ["daemonset/agent", "deployment/web", "statefulset/db"]
    assert plan.waves == ()


def test_pods_being_deleted_are_not_audited() -> None:
    final = stored("deployment-rollout.yaml")["final"]
    going = [p for p in final["pods"] if p["metadata"].get("deletionTimestamp")]
    assert len(going) == 2, "the capture holds the old pods while they terminate"
    assert _audited("v2", going, final["replicasets"]) == []


def test_a_completed_jobs_pod_is_never_stale_nor_listed() -> None:
    job_pod = stored("job-pod.yaml")
    assert job_pod["status"]["phase"] == "Succeeded"
    assert _audited("v2", [job_pod], []) == []


def test_workloads_a_restart_cannot_roll_out_or_that_are_gone_are_reported_not_planned() -> None:
    pods, replicasets = _workloads()
    why = {"web": "the Deployment is paused: ...", "db": None}
    plan = build_plan(_audited("v2", pods, replicasets), workload=lambda owner: why.get(owner.name, ""))
    assert [t.owner.name for t in plan.targets] == ["agent"]
    assert [(b.target.owner.name, b.reason) for b in plan.cannot] == [
        ("web", "the Deployment is paused: ..."),
        ("db", "StatefulSet/db no longer exists"),
    ]


def test_bare_pods_are_listed_untouched() -> None:
    pods, replicasets = _workloads()
    bare = stored("dry-run-pods.yaml")["up"]  # a pod the apiserver stored, owned by nothing
    bare["metadata"].pop("ownerReferences", None)
    plan = build_plan(_audited("v2", [*pods, bare], replicasets), workload=_ready)
    assert [str(t.owner) for t in plan.untouched] == [f"Pod/{bare['metadata']['name']}"]


def _plan(*owners: Owner, wave_size: int = 1) -> Plan:
    targets = tuple(Target(o, 1, (("stamp", "stale", 1),)) for o in owners)
    return Plan(targets=targets, waves=waves((o.namespace for o in owners), wave_size))


def test_waves_group_sorted_namespaces() -> None:
    assert waves(["b", "a", "c", "a"], 2) == (("a", "b"), ("c",))
    assert waves([], 3) == ()


def test_one_at_a_time_per_namespace_then_the_next_wave() -> None:
    a1, a2, b1 = (
        Owner("a", "Deployment", "one"),
        Owner("a", "Deployment", "two"),
        Owner("b", "Deployment", "x"),
    )
    plan = _plan(a1, a2, b1)
    assert to_start(plan, {}, parallel=1, wave=0) == [a1]
    assert to_start(plan, {a1: "active"}, parallel=1, wave=0) == []
    assert to_start(plan, {a1: "finished"}, parallel=1, wave=0) == [a2]
    assert to_start(plan, {a1: "active"}, parallel=2, wave=0) == [a2]
    assert not wave_finished(plan, {a1: "finished", a2: "active"}, 0)
    assert wave_finished(plan, {a1: "finished", a2: "finished"}, 0)
    assert to_start(plan, {a1: "finished", a2: "finished"}, parallel=1, wave=1) == [b1]


def test_a_wave_of_two_namespaces_starts_one_in_each() -> None:
    a1, a2, b1 = (
        Owner("a", "Deployment", "one"),
        Owner("a", "Deployment", "two"),
        Owner("b", "Deployment", "x"),
    )
    assert to_start(_plan(a1, a2, b1, wave_size=2), {}, parallel=1, wave=0) == [a1, b1]
