"""app/rollout/runner.py: one workload at a time, the disruption gate, the preflight, the stop
conditions and Ctrl-C, through a scripted API that replays what the real apiserver and controllers
returned during a `kubectl rollout restart` (tests/unit/rollout_stored/)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.audit.owners import Owner
from app.rollout.plan import Plan, Target, waves
from app.rollout.runner import ApiError, Event, Options, Runner, template_pod
from app.rollout.status import RESTARTED_AT
from tests.unit.rollout_support import judge, namespace_labels, stored

FILES = {"Deployment": "deployment", "StatefulSet": "statefulset", "DaemonSet": "daemonset"}
NAMES = {"Deployment": "web", "StatefulSet": "db", "DaemonSet": "agent"}


@dataclass
class Script:
    """One workload: as it was before the restart, then the snapshots the API returns after it."""

    before: dict[str, Any]
    snapshots: list[dict[str, Any]]  # {"object", "pods", "replicasets", "revisions"}
    at: int = -1  # -1: not restarted yet

    def now(self) -> dict[str, Any]:
        return self.snapshots[max(self.at, 0)]


def script(kind: str) -> Script:
    """The captured rollout of `kind`: states until complete, with the pods of half way, then final."""
    captured = stored(f"{FILES[kind]}-rollout.yaml")
    before = copy.deepcopy(captured["final"]["object"])
    del before["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    middle, final = captured["middle"], captured["final"]
    early = [{**middle, "object": s["object"]} for s in captured["states"][:2]]
    return Script(before, [*early, middle, final])


@dataclass
class ScriptedApi:
    scripts: dict[Owner, Script]
    budgets_by_namespace: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dry_run: dict[str, Any] = field(default_factory=lambda: stored("dry-run-pods.yaml")["up"])
    configurations: list[dict[str, Any]] | None = field(
        default_factory=lambda: stored("webhooks.yaml")["configurations"]
    )
    restarts: list[tuple[Owner, str]] = field(default_factory=list)
    dry_runs: int = 0

    def workload(self, owner: Owner) -> dict[str, Any] | None:
        found = self.scripts.get(owner)
        if found is None:
            return None
        if found.at < 0:
            return copy.deepcopy(found.before)
        found.at = min(found.at + 1, len(found.snapshots) - 1)
        return copy.deepcopy(found.now()["object"])

    def restart(self, owner: Owner, patch: Mapping[str, Any]) -> dict[str, Any]:
        found = self.scripts[owner]
        self.restarts.append((owner, patch["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]))
        found.at = 0
        return copy.deepcopy(found.snapshots[0]["object"])

    def _current(self, namespace: str) -> list[Script]:
        return [s for o, s in self.scripts.items() if o.namespace == namespace and s.at >= 0]

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [p for s in self._current(namespace) for p in s.now()["pods"] if _selected(p, selector)]

    def replicasets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [r for s in self._current(namespace) for r in s.now()["replicasets"] if _selected(r, selector)]

    def revisions(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [r for s in self._current(namespace) for r in s.now()["revisions"] if _selected(r, selector)]

    def budgets(self, namespace: str) -> list[dict[str, Any]]:
        return self.budgets_by_namespace.get(namespace, [])

    def dry_run_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any]:
        self.dry_runs += 1
        return copy.deepcopy(self.dry_run)

    def webhooks(self) -> list[dict[str, Any]] | None:
        return self.configurations


def _selected(obj: Mapping[str, Any], selector: str) -> bool:
    key, _, value = selector.partition("=")
    return (obj.get("metadata") or {}).get("labels", {}).get(key) == value


class Clock:
    """Time that moves only when the runner sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.start = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.now)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def target(owner: Owner, pods: int = 2) -> Target:
    return Target(owner, pods, (("stamp", "stale", pods),))


def runner(
    api: ScriptedApi, *owners: Owner, version: str = "v1", events: list[Event] | None = None, **options: Any
) -> tuple[Runner, Clock]:
    clock = Clock()
    plan = Plan(
        targets=tuple(target(o) for o in owners),
        waves=waves((o.namespace for o in owners), options.pop("wave_size", 1)),
    )
    found = events if events is not None else []
    return (
        Runner(
            plan,
            api,
            judge=judge(version),
            namespace_labels=lambda _ns: namespace_labels(),
            options=Options(**{"timeout": 60.0, **options}),
            report=found.append,
            clock=clock.monotonic,
            wall=clock.wall,
            sleep=clock.sleep,
        ),
        clock,
    )


WEB, DB = Owner("shop", "Deployment", "web"), Owner("shop", "StatefulSet", "db")


def test_two_workloads_of_a_namespace_one_after_the_other_each_until_current() -> None:
    api = ScriptedApi({WEB: script("Deployment"), DB: script("StatefulSet")})
    events: list[Event] = []
    run, _ = runner(api, WEB, DB, events=events)
    outcomes = run.run()
    assert [(o.target.owner, o.result) for o in outcomes] == [(WEB, "restarted"), (DB, "restarted")]
    assert outcomes[0].reason == "deployment 'web' successfully rolled out; 2 pods current"
    assert outcomes[1].reason.startswith("partitioned roll out complete: 2 new pods have been updated...")
    assert [o for o, _ in api.restarts] == [WEB, DB]
    assert outcomes[0].finished <= outcomes[1].started  # no overlap
    kinds = [
        (e.kind, e.target.owner.name if e.target else "")
        for e in events
        if e.kind in ("start", "restart", "finish")
    ]
    assert kinds == [
        ("start", "web"),
        ("restart", "web"),
        ("finish", "web"),
        ("start", "db"),
        ("restart", "db"),
        ("finish", "db"),
    ]


def test_with_parallel_two_both_start_at_once() -> None:
    api = ScriptedApi({WEB: script("Deployment"), DB: script("StatefulSet")})
    events: list[Event] = []
    run, _ = runner(api, WEB, DB, events=events, parallel=2)
    assert {o.result for o in run.run()} == {"restarted"}
    starts = [e.kind for e in events if e.kind in ("start", "finish")]
    assert starts[:2] == ["start", "start"]


def test_namespaces_in_waves_with_a_pause_between() -> None:
    other = Owner("zoo", "Deployment", "web")
    api = ScriptedApi({WEB: script("Deployment"), other: script("Deployment")})
    events: list[Event] = []
    run, _ = runner(api, WEB, other, events=events, pause_between_waves=30.0)
    outcomes = run.run()
    assert [o.result for o in outcomes] == ["restarted", "restarted"]
    messages = [e.message for e in events if e.kind in ("wave", "pause")]
    assert messages == [
        "wave 1 of 2: namespace shop",
        "pausing 30s before the next wave",
        "wave 2 of 2: namespace zoo",
    ]
    first_done = datetime.fromisoformat(outcomes[0].finished)
    assert datetime.fromisoformat(outcomes[1].started) - first_done >= timedelta(seconds=30)


def test_a_budget_that_never_allows_a_disruption_blocks_at_once_and_nothing_is_restarted() -> None:
    budgets = stored("budgets.yaml")["budgets"]
    solo = next(b for b in budgets if b["metadata"]["name"] == "solo")
    solo["spec"]["selector"] = {"matchLabels": {"app": "web"}}
    api = ScriptedApi({WEB: script("Deployment"), DB: script("StatefulSet")}, {"shop": [solo]})
    run, _ = runner(api, WEB, DB)
    outcomes = run.run()
    assert outcomes[0].result == "blocked"
    assert outcomes[0].reason.startswith("PodDisruptionBudget solo can never allow a disruption")
    assert outcomes[0].reason.endswith("(--ignore-pdb restarts it anyway)")
    assert [o for o, _ in api.restarts] == [DB]  # a blocked workload does not stop the run
    assert outcomes[0].finished == outcomes[0].started  # at once


def test_a_budget_that_allows_nothing_now_is_waited_on_then_blocked() -> None:
    unready = next(b for b in stored("budgets.yaml")["budgets"] if b["metadata"]["name"] == "unready")
    unready["spec"]["selector"] = {"matchLabels": {"app": "web"}}
    api = ScriptedApi({WEB: script("Deployment")}, {"shop": [unready]})
    events: list[Event] = []
    run, clock = runner(api, WEB, events=events, timeout=20.0)
    [outcome] = run.run()
    assert outcome.result == "blocked"
    assert (
        outcome.reason
        == "waited 20s: PodDisruptionBudget unready allows no disruption now: 0 of 2 pods healthy, 1 needed"
    )
    assert api.restarts == []
    assert clock.now > 20
    assert [e.message for e in events if e.kind == "wait"] == [
        "PodDisruptionBudget unready allows no disruption now: 0 of 2 pods healthy, 1 needed"
    ]


def test_ignore_pdb_restarts_anyway() -> None:
    solo = next(b for b in stored("budgets.yaml")["budgets"] if b["metadata"]["name"] == "solo")
    solo["spec"]["selector"] = {"matchLabels": {"app": "web"}}
    api = ScriptedApi({WEB: script("Deployment")}, {"shop": [solo]})
    run, _ = runner(api, WEB, ignore_pdb=True)
    assert [o.result for o in run.run()] == ["restarted"]


def test_podgraft_down_under_ignore_fails_the_preflight_and_nothing_is_restarted() -> None:
    api = ScriptedApi(
        {WEB: script("Deployment"), DB: script("StatefulSet")}, dry_run=stored("dry-run-pods.yaml")["down"]
    )
    run, _ = runner(api, WEB, DB)
    check = run.preflight(target(WEB))
    assert check.verdict == "stop"
    assert check.message == (
        "the webhook did not inject stamp: the apiserver calls pg-podgraft / podgraft.podgraft.io for it, "
        "so Podgraft did not answer and failurePolicy Fail let the pod in uninjected: is Podgraft running "
        "and reachable?"
    ).replace("Fail", _failure_policy())
    outcomes = run.run()
    assert [o.result for o in outcomes] == ["failed", "not-started"]
    assert outcomes[0].reason.startswith("preflight: the webhook did not inject stamp")
    assert outcomes[1].reason == "not started: shop Deployment/web failed"
    assert api.restarts == []


def _failure_policy() -> str:
    [configuration] = [
        c for c in stored("webhooks.yaml")["configurations"] if c["metadata"]["name"] == "pg-podgraft"
    ]
    return str(configuration["webhooks"][0]["failurePolicy"])


def test_a_namespace_the_webhook_does_not_select_is_named_in_the_preflight() -> None:
    api = ScriptedApi({WEB: script("Deployment")}, dry_run=stored("dry-run-pods.yaml")["down"])
    clock = Clock()
    run = Runner(
        Plan(targets=(target(WEB),), waves=(("shop",),)),
        api,
        judge=judge("v1"),
        namespace_labels=lambda _ns: {"kubernetes.io/metadata.name": "shop"},
        options=Options(),
        clock=clock.monotonic,
        wall=clock.wall,
        sleep=clock.sleep,
    )
    message = run.preflight(target(WEB)).message
    assert message == (
        "the webhook did not inject stamp: the apiserver does not call pg-podgraft / podgraft.podgraft.io "
        "for it: namespaceSelector podgraft.io/injection=enabled,kubernetes.io/metadata.name notin "
        "(kube-system,kube-public,kube-node-lease,podgraft): does not match"
    )


def test_a_webhook_serving_the_old_version_fails_the_preflight() -> None:
    api = ScriptedApi({WEB: script("Deployment")})
    run, _ = runner(api, WEB, version="v2")
    check = run.preflight(target(WEB))
    assert check.verdict == "stop"
    assert "Podgraft has not loaded the change yet" in check.message


def test_new_pods_created_uninjected_fail_the_workload_and_stop_the_run() -> None:
    scripted = script("Deployment")
    down = stored("dry-run-pods.yaml")["down"]
    fresh_hash = _new_hash(scripted.snapshots[-2])
    for snapshot in scripted.snapshots[2:]:
        for pod in snapshot["pods"]:
            if pod["metadata"]["labels"].get("pod-template-hash") == fresh_hash:
                pod["spec"] = copy.deepcopy(down["spec"])  # what the webhook down under Ignore lets in
                pod["metadata"]["annotations"].pop("podgraft.io/status", None)
    api = ScriptedApi({WEB: scripted, DB: script("StatefulSet")})
    run, _ = runner(api, WEB, DB)
    outcomes = run.run()
    assert [o.result for o in outcomes] == ["failed", "not-started"]
    assert outcomes[0].reason.startswith("new pod web-")
    assert (
        "is not current: stamp missing (never injected: env 'STAMP' in container 'app')" in outcomes[0].reason
    )
    assert outcomes[0].reason.endswith("(Podgraft down under failurePolicy Ignore?)")
    assert [o for o, _ in api.restarts] == [WEB]


def _new_hash(snapshot: dict[str, Any]) -> str:
    revision = snapshot["object"]["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    rs = next(
        r
        for r in snapshot["replicasets"]
        if r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == revision
    )
    return str(rs["metadata"]["labels"]["pod-template-hash"])


def test_a_rollout_that_does_not_complete_within_the_timeout_fails_with_kubectls_message() -> None:
    scripted = script("Deployment")
    scripted.snapshots = scripted.snapshots[:3]  # never gets further than half way
    api = ScriptedApi({WEB: scripted})
    run, _ = runner(api, WEB, timeout=10.0)
    [outcome] = run.run()
    assert outcome.result == "failed"
    assert outcome.reason.startswith(
        "not complete within 10s: Waiting for deployment 'web' rollout to finish"
    )


def test_a_progress_deadline_fails_at_once() -> None:
    scripted = script("Deployment")
    late = stored("stuck.yaml")["progressDeadline"]["object"]
    late["metadata"]["name"] = "web"
    scripted.snapshots = [{**scripted.snapshots[0], "object": late}]
    api = ScriptedApi({WEB: scripted})
    run, clock = runner(api, WEB)
    [outcome] = run.run()
    assert (outcome.result, outcome.reason) == ("failed", "deployment 'web' exceeded its progress deadline")
    assert clock.now < 5


def test_an_interrupt_mid_rollout_reports_the_restart_and_how_far_it_got() -> None:
    api = ScriptedApi({WEB: script("Deployment"), DB: script("StatefulSet")})
    events: list[Event] = []
    run, _ = runner(api, WEB, DB, events=events)

    def interrupt_after_restart(event: Event) -> None:
        events.append(event)
        if event.kind == "restart":
            run.interrupt()

    run.report = interrupt_after_restart
    outcomes = run.run()
    assert [o.result for o in outcomes] == ["interrupted", "not-started"]
    stamp = api.restarts[0][1]
    assert outcomes[0].restarted == stamp
    assert outcomes[0].reason.startswith(f"stopped waiting during its rollout (restartedAt {stamp}; last: ")
    assert outcomes[0].reason.endswith(
        "the controller carries on: kubectl rollout status -n shop deployment/web"
    )
    assert outcomes[1].reason == "interrupted before it started"


def test_a_forbidden_call_fails_the_workload_with_the_apiservers_message() -> None:
    class Forbidden(ScriptedApi):
        def restart(self, owner: Owner, patch: Mapping[str, Any]) -> dict[str, Any]:
            raise ApiError(403, 'deployments.apps "web" is forbidden: User "u" cannot patch resource')

    api = Forbidden({WEB: script("Deployment")})
    run, _ = runner(api, WEB)
    [outcome] = run.run()
    assert outcome.result == "failed"
    assert (
        outcome.reason
        == 'API call refused: deployments.apps "web" is forbidden: User "u" cannot patch resource'
    )


def test_a_workload_paused_since_the_plan_is_blocked_not_restarted() -> None:
    scripted = script("Deployment")
    scripted.before["spec"]["paused"] = True
    api = ScriptedApi({WEB: scripted})
    run, _ = runner(api, WEB)
    [outcome] = run.run()
    assert outcome.result == "blocked"
    assert outcome.reason.startswith("the Deployment is paused")
    assert api.restarts == []


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
def test_each_kind_rolls_out_to_current(kind: str) -> None:
    owner = Owner("shop", kind, NAMES[kind])
    api = ScriptedApi({owner: script(kind)})
    run, _ = runner(api, owner)
    [outcome] = run.run()
    assert outcome.result == "restarted", outcome.reason


def test_the_template_pod_is_what_the_controller_would_create() -> None:
    pod = template_pod(script("Deployment").before)
    assert pod["metadata"]["generateName"] == "web-"
    assert pod["metadata"]["annotations"] == {"podgraft.io/inject": "stamp"}
    assert "ownerReferences" not in pod["metadata"]
    assert pod == {**pod, "kind": "Pod", "apiVersion": "v1"}
