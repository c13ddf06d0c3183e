"""Carrying out a rollout plan: one target at a time per namespace, waves of namespaces, a stop at
the first target that does not progress. The runner decides; it talks to the cluster only through a
`RolloutApi` (`app.cluster.workloads` in `podgraft rollout`, a scripted one in the unit tests), and
judges pods with the audit's own test (`judge`, a closure over `app.audit.classify.audit_pod`).

Per target, in order, each step re-read from the API:

1. `gate`: the workload can still be rolled out by a restart (`status.cannot_progress`), and, unless
   `ignore_pdb`, its PodDisruptionBudgets allow a disruption now (`disruption`); a budget that never
   can is reported at once, one that cannot *now* is waited on up to `timeout`, then `blocked`.
2. preflight: a server-side dry-run create of a pod from the workload's template comes back with
   the live version of every policy its pods are behind on (else: the webhook is down under
   `failurePolicy: Ignore`, or does not select the pod, or serves an older version: `failed`, and
   the run stops; or the engine refuses the policy for this template: `blocked`).
3. restart: the pod template's `kubectl.kubernetes.io/restartedAt` (a merge patch).
4. `rolling`: until the rollout is complete by `kubectl rollout status`'s rules and every live pod of
   the workload is current by the audit. A new pod that is not current fails the target at once
   (waiting does not change an admitted pod); so does an exceeded progress deadline; a rollout
   not complete within `timeout` fails with kubectl's message and why pods are not Ready.

A failure stops the run: no new target starts, the ones in flight are finished. `interrupt()` (the
CLI's Ctrl-C) does the same at the next safe point, never inside a step, and reports every target
in flight with how far it got.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from app.audit.classify import NEEDS_RESTART, PolicyState
from app.audit.owners import Owner
from app.engine.podview import as_mapping, string_map
from app.explain.webhooks import WebhookMatch, pod_create_webhooks, selector_text
from app.rollout.disruption import Gate, disruption_gate
from app.rollout.plan import Phase, Plan, Target, to_start, wave_finished
from app.rollout.status import (
    cannot_progress,
    new_pods,
    owned_pods,
    pod_problems,
    restart_patch,
    restarted_at,
    rollout_status,
)

Result = Literal["restarted", "current", "blocked", "failed", "not-started", "interrupted", "planned"]
HTTP_FORBIDDEN, HTTP_NOT_FOUND = 403, 404
IGNORE_HINT = " (--ignore-pdb restarts it anyway)"


class ApiError(Exception):
    """A failed API call, as the runner needs to know it: its HTTP status (None: no answer) and message."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class RolloutApi(Protocol):
    def workload(self, owner: Owner) -> dict[str, Any] | None: ...  # None: not found
    def restart(self, owner: Owner, patch: Mapping[str, Any]) -> dict[str, Any]: ...
    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def replicasets(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def revisions(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...
    def budgets(self, namespace: str) -> list[dict[str, Any]]: ...
    def dry_run_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any]: ...
    def webhooks(self) -> list[dict[str, Any]] | None: ...  # None: not allowed to list them


Judge = Callable[[Mapping[str, Any]], Sequence[PolicyState]]


@dataclass(frozen=True, slots=True)
class Options:
    timeout: float = 600.0
    parallel: int = 1
    pause_between_waves: float = 0.0
    ignore_pdb: bool = False
    poll: float = 1.0
    webhook_configuration: str | None = (
        None  # Podgraft's MutatingWebhookConfiguration, if not the labelled one
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    target: Target
    result: Result
    reason: str
    started: str = ""  # wall-clock times, RFC 3339
    restarted: str = ""  # the restartedAt stamp set
    finished: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """What the runner tells its reporter: a target started, waits, was restarted, progressed, ended;
    a wave started or a pause began."""

    kind: Literal["start", "wait", "restart", "progress", "finish", "wave", "pause"]
    message: str
    target: Target | None = None
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class Preflight:
    verdict: Literal["ok", "stop", "blocked"]
    message: str


@dataclass
class _Run:
    target: Target
    state: Literal["gate", "rolling"] = "gate"
    since: float = 0.0  # when the state began
    started: str = ""
    stamp: str = ""
    generation: int = 0
    message: str = ""


def template_pod(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A Pod from a workload's template, as its controller would create it (the name from
    `generateName`; no owner reference: a dry run creates nothing to own)."""
    template = as_mapping(as_mapping(obj.get("spec")).get("template"))
    metadata = as_mapping(template.get("metadata"))
    name = str(as_mapping(obj.get("metadata")).get("name") or "pod")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{name}-",
            "labels": string_map(metadata.get("labels")),
            "annotations": string_map(metadata.get("annotations")),
        },
        "spec": dict(as_mapping(template.get("spec"))),
    }


def behind(states: Sequence[PolicyState], policies: frozenset[str] = frozenset()) -> str:
    """Why a pod is not current by the audit ("" when it is): a policy stale or missing, or one of
    `policies` in any state but current."""
    for state in states:
        if state.state in NEEDS_RESTART or (state.policy in policies and state.state != "current"):
            return f"{state.policy} {state.state}" + (f" ({state.detail})" if state.detail else "")
    return ""


def _not_called(matches: Sequence[WebhookMatch]) -> str:
    ours = [m for m in matches if m.podgraft]
    if not ours:
        return (
            "no MutatingWebhookConfiguration of Podgraft's is registered "
            "(labelled app.kubernetes.io/name=podgraft, or named by --webhook)"
        )
    if any(m.called for m in ours):
        called = next(m for m in ours if m.called)
        return (
            f"the apiserver calls {called.title} for it, so Podgraft did not answer and failurePolicy "
            f"{called.failure_policy} let the pod in uninjected: is Podgraft running and reachable?"
        )
    first = ours[0]
    why = "; ".join(r for r in first.reasons if "does not" in r or "not checked" in r)
    return f"the apiserver does not call {first.title} for it: {why}"


def diagnose_missing(
    webhooks: Sequence[Mapping[str, Any]] | None,
    *,
    namespace_labels: Mapping[str, str] | None,
    pod_labels: Mapping[str, str],
    configuration: str | None,
) -> str:
    """Why a dry-run pod came back without Podgraft's injection."""
    if webhooks is None:
        return (
            "Podgraft is down (failurePolicy Ignore lets pods in uninjected) or its webhook does not "
            "select the pod (no permission to list mutatingwebhookconfigurations to tell which)"
        )
    matches = pod_create_webhooks(
        webhooks,
        namespace_labels=namespace_labels,
        pod_labels=pod_labels,
        podgraft_configuration=configuration,
    )
    return _not_called(matches)


def judge_dry_run(
    target: Target,
    states: Sequence[PolicyState],
    *,
    diagnose: Callable[[], str],
) -> Preflight:
    """Does the dry-run pod hold the live version of every policy the target's pods are behind on?"""
    by_policy = {s.policy: s for s in states}
    for policy in sorted(target.policies):
        state = by_policy.get(policy)
        if state is None or state.state == "current":
            continue
        if state.state == "missing":
            return Preflight("stop", f"the webhook did not inject {policy}: {diagnose()}")
        if state.state == "stale":
            return Preflight(
                "stop",
                f"the webhook injects {policy} {state.recorded_hash}, the live policy is {state.live_hash}: "
                "Podgraft has not loaded the change yet (or an older Podgraft answers)",
            )
        return Preflight(
            "blocked",
            f"the webhook would not inject {policy} into its pods now ({state.state}: {state.detail})",
        )
    hashes = ", ".join(f"{p} {by_policy[p].live_hash}" for p in sorted(target.policies) if p in by_policy)
    return Preflight("ok", f"a dry-run pod from its template gets {hashes or 'what its pods need'} (live)")


class Runner:
    """Runs a `Plan` (see the module doc). Not thread-safe, except `interrupt()`."""

    def __init__(
        self,
        plan: Plan,
        api: RolloutApi,
        *,
        judge: Judge,
        namespace_labels: Callable[[str], Mapping[str, str] | None],
        options: Options,
        report: Callable[[Event], None] = lambda _event: None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now().astimezone(),
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.plan, self.api, self.judge, self.options = plan, api, judge, options
        self.namespace_labels = namespace_labels
        self.report, self.clock, self.wall = report, clock, wall
        self._wake = threading.Event()
        self.sleep = sleep or self._wake.wait
        self._interrupted = False
        self.stopping = ""  # why no new target starts
        self.outcomes: dict[Owner, Outcome] = {}
        self._phases: dict[Owner, Phase] = {}
        self._runs: dict[Owner, _Run] = {}
        self._webhooks: list[dict[str, Any]] | None = None
        self._webhooks_read = False

    # --- the API, through one door --------------------------------------------------------------

    def _webhook_list(self) -> list[dict[str, Any]] | None:
        if not self._webhooks_read:
            try:
                self._webhooks = self.api.webhooks()
            except ApiError:
                self._webhooks = None
            self._webhooks_read = True
        return self._webhooks

    def _now(self) -> str:
        return self.wall().replace(microsecond=0).isoformat()

    # --- preflight ------------------------------------------------------------------------------

    def preflight(self, target: Target, obj: Mapping[str, Any] | None = None) -> Preflight:
        """Step 2 of the module doc, for one target (its workload read now unless given)."""
        owner = target.owner
        try:
            workload = obj if obj is not None else self.api.workload(owner)
            if workload is None:
                return Preflight("blocked", f"{owner} no longer exists")
            pod = template_pod(workload)
            created = self.api.dry_run_pod(owner.namespace, pod)
        except ApiError as exc:
            return Preflight("stop", f"a dry-run create of a pod from its template failed: {exc}")
        labels = self.namespace_labels(owner.namespace)
        return judge_dry_run(
            target,
            self.judge(created),
            diagnose=lambda: diagnose_missing(
                self._webhook_list(),
                namespace_labels=labels,
                pod_labels=string_map(as_mapping(pod.get("metadata")).get("labels")),
                configuration=self.options.webhook_configuration,
            ),
        )

    def preflight_all(self) -> dict[Owner, Preflight]:
        """Every target's preflight, before anything is restarted."""
        return {target.owner: self.preflight(target) for target in self.plan.targets}

    def gate_now(self, target: Target) -> Gate:
        """What the disruption gate says now, for the plan (never waits)."""
        if self.options.ignore_pdb:
            return Gate("allowed", "PodDisruptionBudgets ignored (--ignore-pdb)")
        try:
            workload = self.api.workload(target.owner)
            budgets = self.api.budgets(target.owner.namespace)
        except ApiError as exc:
            return Gate("wait", f"PodDisruptionBudgets cannot be read: {exc}")
        gate = disruption_gate(budgets, _template_labels(workload or {}))
        if gate.verdict == "wait":
            return Gate("wait", f"{gate.message}: would wait up to {self.options.timeout:g}s")
        if gate.verdict == "never":
            return Gate("never", gate.message + IGNORE_HINT)
        return Gate("allowed", gate.message or "no PodDisruptionBudget selects its pods")

    # --- the run --------------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop at the next safe point (a signal handler may call this)."""
        self._interrupted = True
        self._wake.set()

    def run(self) -> list[Outcome]:
        """Carry out the plan; every target ends with an outcome."""
        wave, resume_at = 0, 0.0
        if self.plan.waves:
            self._wave_event(wave)
        while not self._interrupted:
            while wave < len(self.plan.waves) and wave_finished(self.plan, self._phases, wave):
                wave += 1
                if wave < len(self.plan.waves) and not self.stopping:
                    resume_at = self.clock() + self.options.pause_between_waves
                    if self.options.pause_between_waves > 0:
                        self.report(
                            Event(
                                "pause", f"pausing {self.options.pause_between_waves:g}s before the next wave"
                            )
                        )
                    self._wave_event(wave)
            if not self.stopping and self.clock() >= resume_at:
                for owner in to_start(self.plan, self._phases, parallel=self.options.parallel, wave=wave):
                    self._begin(owner)
            for owner in [o for o, phase in self._phases.items() if phase == "active"]:
                if self._interrupted:
                    break
                self._step(self._runs[owner])
            active = any(phase == "active" for phase in self._phases.values())
            if not active and (self.stopping or wave >= len(self.plan.waves)):
                break
            if active or self.clock() < resume_at:
                self.sleep(self.options.poll)
        if self._interrupted:
            self._interrupt_all()
        for target in self.plan.targets:
            if target.owner not in self.outcomes:
                why = (
                    "interrupted before it started" if self._interrupted else f"not started: {self.stopping}"
                )
                self.outcomes[target.owner] = Outcome(target, "not-started", why)
        return [self.outcomes[t.owner] for t in self.plan.targets]

    def _wave_event(self, wave: int) -> None:
        namespaces = self.plan.waves[wave]
        self.report(
            Event("wave", f"wave {wave + 1} of {len(self.plan.waves)}: namespace {', '.join(namespaces)}")
        )

    def _begin(self, owner: Owner) -> None:
        target = next(t for t in self.plan.targets if t.owner == owner)
        run = _Run(target, since=self.clock(), started=self._now())
        self._runs[owner], self._phases[owner] = run, "active"
        self.report(Event("start", target.why(), target))
        self._step(run)

    def _finish(self, run: _Run, result: Result, reason: str) -> None:
        outcome = Outcome(run.target, result, reason, run.started, run.stamp, self._now())
        self.outcomes[run.target.owner] = outcome
        self._phases[run.target.owner] = "finished"
        if result == "failed" and not self.stopping:
            self.stopping = f"{run.target.owner.namespace} {run.target.owner} failed"
        self.report(Event("finish", reason, run.target, outcome))

    def _say(self, run: _Run, kind: Literal["wait", "progress"], message: str) -> None:
        if message != run.message:
            run.message = message
            self.report(Event(kind, message, run.target))

    def _step(self, run: _Run) -> None:
        try:
            if run.state == "gate":
                self._gate(run)
            else:
                self._rolling(run)
        except ApiError as exc:
            if exc.status in (HTTP_FORBIDDEN, HTTP_NOT_FOUND):
                self._finish(run, "failed", f"API call refused: {exc}")
            elif self.clock() - run.since > self.options.timeout:
                self._finish(run, "failed", f"the API kept failing for {self.options.timeout:g}s: {exc}")
            else:
                self._say(run, "wait", f"API call failed, retrying: {exc}")

    def _gate(self, run: _Run) -> None:
        owner = run.target.owner
        obj = self.api.workload(owner)
        if obj is None:
            self._finish(run, "blocked", f"{owner} no longer exists")
            return
        reason = cannot_progress(owner.kind, obj)
        if reason:
            self._finish(run, "blocked", reason)
            return
        if not self.options.ignore_pdb:
            gate = disruption_gate(self.api.budgets(owner.namespace), _template_labels(obj))
            if gate.verdict == "never":
                self._finish(run, "blocked", gate.message + IGNORE_HINT)
                return
            if gate.verdict == "wait":
                if self.clock() - run.since > self.options.timeout:
                    self._finish(run, "blocked", f"waited {self.options.timeout:g}s: {gate.message}")
                else:
                    self._say(run, "wait", gate.message)
                return
        check = self.preflight(run.target, obj)
        if check.verdict != "ok":
            self._finish(
                run, "failed" if check.verdict == "stop" else "blocked", f"preflight: {check.message}"
            )
            return
        patch = restart_patch(self.wall())
        stamp = patch["spec"]["template"]["metadata"]["annotations"]
        value = next(iter(stamp.values()))
        if value == restarted_at(obj):
            return  # restarted within this very second already: the same stamp would change nothing
        restarted = self.api.restart(owner, patch)
        run.stamp, run.state, run.since = value, "rolling", self.clock()
        run.generation = int(as_mapping(restarted.get("metadata")).get("generation") or 0)
        self.report(Event("restart", f"restarted ({check.message})", run.target))

    def _rolling(self, run: _Run) -> None:
        owner = run.target.owner
        obj = self.api.workload(owner)
        if obj is None:
            self._finish(run, "failed", f"{owner} was deleted during its rollout")
            return
        status = rollout_status(owner.kind, obj)
        if status.failed:
            self._finish(run, "failed", status.failed)
            return
        observed = int(as_mapping(obj.get("status")).get("observedGeneration") or 0) >= run.generation
        selector = selector_text(as_mapping(obj.get("spec")).get("selector"))
        pods = self.api.pods(owner.namespace, selector)
        replicasets = self.api.replicasets(owner.namespace, selector) if owner.kind == "Deployment" else []
        revisions = self.api.revisions(owner.namespace, selector) if owner.kind == "DaemonSet" else []
        fresh = (
            new_pods(owner.kind, obj, pods, replicasets=replicasets, revisions=revisions) if observed else []
        )
        late = self._first_behind(fresh, run.target)
        if late:
            why = "; pods are being created without the injection (Podgraft down under failurePolicy Ignore?)"
            self._finish(run, "failed", f"new {late}{why}")
            return
        if status.done and observed:
            mine = owned_pods(owner.kind, obj, pods, replicasets)
            late = self._first_behind(mine, run.target)
            if late:
                self._finish(run, "failed", f"rollout complete, but {late}")
            else:
                self._finish(run, "restarted", f"{status.message}; {len(mine)} pods current")
            return
        if self.clock() - run.since > self.options.timeout:
            problem = pod_problems(fresh or pods)
            self._finish(
                run,
                "failed",
                f"not complete within {self.options.timeout:g}s: {status.message}"
                + (f" ({problem})" if problem else ""),
            )
            return
        self._say(run, "progress", status.message)

    def _first_behind(self, pods: Sequence[Mapping[str, Any]], target: Target) -> str:
        """`pod NAME is not current: why` for the first of `pods` the audit finds behind, else ""."""
        for pod in pods:
            why = behind(self.judge(pod), target.policies)
            if why:
                return f"pod {as_mapping(pod.get('metadata')).get('name')} is not current: {why}"
        return ""

    def _interrupt_all(self) -> None:
        for owner, phase in list(self._phases.items()):
            if phase != "active":
                continue
            run = self._runs[owner]
            if run.state == "gate":
                reason = "stopped before its restart" + (f" ({run.message})" if run.message else "")
            else:
                target = f"-n {owner.namespace} {owner.ref()}"
                last = run.message or "started"
                reason = (
                    f"stopped waiting during its rollout (restartedAt {run.stamp}; last: {last}); "
                    f"the controller carries on: kubectl rollout status {target}"
                )
            self.outcomes[owner] = Outcome(
                run.target, "interrupted", reason, run.started, run.stamp, self._now()
            )
            self._phases[owner] = "finished"
            self.report(Event("finish", reason, run.target, self.outcomes[owner]))


def _template_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    template = as_mapping(as_mapping(obj.get("spec")).get("template"))
    return string_map(as_mapping(template.get("metadata")).get("labels"))
