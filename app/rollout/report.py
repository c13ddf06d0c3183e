"""`podgraft rollout`'s output (pure): the plan of a dry run, a line per event, the progress bar,
the summary, the `-o json` document and the exit code."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.rollout.disruption import Gate
from app.rollout.plan import Plan, Target
from app.rollout.runner import Event, Outcome, Preflight, Result

RESULTS: tuple[Result, ...] = (
    "restarted",
    "current",
    "blocked",
    "failed",
    "not-started",
    "interrupted",
    "planned",
)
EXIT_OK, EXIT_BEHIND = 0, 1
BAR_WIDTH = 20


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a run (or a dry run) ends with."""

    plan: Plan
    outcomes: tuple[Outcome, ...]  # one per workload: the targets', then the others'
    dry_run: bool  # the plan is shown, nothing was restarted
    stopped: str = ""
    notes: Mapping[Any, tuple[str, str]] | None = None  # dry run: owner -> (preflight, disruption)
    acting: bool = False  # `--yes` was given (a plan shown with it: stopped before the first restart)


def workload(target: Target) -> str:
    return f"{target.owner.namespace} {target.owner.ref()}"


def settled(plan: Plan) -> list[Outcome]:
    """What the plan decided without running anything: the current and the blocked workloads."""
    return [
        *(Outcome(t, "current", "") for t in plan.current),
        *(Outcome(b.target, "blocked", b.reason) for b in plan.cannot),
    ]


def planned(plan: Plan, checks: Mapping[Any, Preflight], gates: Mapping[Any, Gate]) -> list[Outcome]:
    """A dry run's targets: `planned`, or what their preflight or their PodDisruptionBudget says."""
    found = []
    for target in plan.targets:
        check, gate = checks.get(target.owner), gates.get(target.owner)
        if gate is not None and gate.verdict == "never":  # whatever the webhook does now
            found.append(Outcome(target, "blocked", gate.message))
        elif check is not None and check.verdict != "ok":
            result: Result = "failed" if check.verdict == "stop" else "blocked"
            found.append(Outcome(target, result, f"preflight: {check.message}"))
        else:
            found.append(Outcome(target, "planned", target.why()))
    return found


def event_line(event: Event, stamp: str) -> str:
    """One line of a run as it happens (`HH:MM:SS shop deployment/web: restarted (...)`)."""
    if event.target is None:
        return f"{stamp} {event.message}"
    prefix = f"{stamp} {workload(event.target)}"
    if event.kind == "start":
        return f"{prefix}: starting ({event.message})"
    if event.kind == "finish" and event.outcome is not None:
        return f"{prefix}: {event.outcome.result}: {event.message}"
    return f"{prefix}: {event.message}"


def progress_bar(done: int, total: int, doing: str) -> str:
    """`[########------------] 2/5 workloads  shop deployment/web: Waiting for ...` (one line)."""
    filled = BAR_WIDTH * done // total if total else BAR_WIDTH
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done}/{total} workloads  {doing}"


def _behind(target: Target) -> list[dict[str, Any]]:
    return [{"policy": p, "state": s, "pods": n} for p, s, n in target.behind]


def as_data(report: Report) -> dict[str, Any]:
    """The `-o json` document."""
    notes = report.notes or {}
    workloads = []
    for outcome in report.outcomes:
        owner = outcome.target.owner
        item: dict[str, Any] = {
            "namespace": owner.namespace,
            "kind": owner.kind,
            "name": owner.name,
            "result": outcome.result,
            "reason": outcome.reason,
            "pods": outcome.target.pods,
            "behind": _behind(outcome.target),
        }
        if owner in notes:
            item["preflight"], item["disruption"] = notes[owner]
        for key, value in (
            ("startedAt", outcome.started),
            ("restartedAt", outcome.restarted),
            ("finishedAt", outcome.finished),
        ):
            if value:
                item[key] = value
        workloads.append(item)
    untouched = [
        {"namespace": t.owner.namespace, "owner": str(t.owner), "pods": t.pods, "behind": _behind(t)}
        for t in report.plan.untouched
    ]
    counts = Counter(o.result for o in report.outcomes)
    return {
        "dryRun": report.dry_run and not report.acting,
        "workloads": workloads,
        "notTouched": untouched,
        "summary": {**{r: counts[r] for r in RESULTS if counts[r]}, "notTouched": len(untouched)},
        "stopped": report.stopped or None,
    }


def summary_line(report: Report) -> str:
    counts = Counter(o.result for o in report.outcomes)
    planned = report.dry_run and not report.acting
    head = f"{counts['planned']} to restart" if planned else f"{counts['restarted']} restarted"
    parts = [
        head,
        f"{counts['current']} already current",
        f"{counts['blocked']} blocked",
        f"{counts['failed']} failed",
    ]
    extra = [f"{counts[r]} {r}" for r in ("not-started", "interrupted") if counts[r]]
    if report.plan.untouched:
        extra.append(f"{len(report.plan.untouched)} without a rollout, not touched")
    return "summary: " + ", ".join(parts) + (f" ({', '.join(extra)})" if extra else "")


def _table(outcomes: Sequence[Outcome]) -> list[str]:
    rows = [(o.result, o.target.owner.namespace, o.target.owner.ref(), o.reason) for o in outcomes]
    header = ("RESULT", "NAMESPACE", "WORKLOAD", "DETAIL")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in [header, *rows]
    ]


def text(report: Report) -> str:
    """The human report: a dry run's plan, or a run's results; then what was not touched, the summary."""
    lines: list[str] = []
    notes = report.notes or {}
    if report.dry_run:
        lines.append(
            "nothing is restarted: the preflight failed before the first restart (the plan, in this order)"
            if report.acting
            else "dry run: nothing is restarted (--yes restarts, in this order)"
        )
        order = 0
        by_owner = {o.target.owner: o for o in report.outcomes}
        for number, namespaces in enumerate(report.plan.waves, 1):
            lines.append(f"wave {number} of {len(report.plan.waves)}: namespace {', '.join(namespaces)}")
            for namespace in namespaces:
                for target in report.plan.in_namespace(namespace):
                    order += 1
                    outcome = by_owner[target.owner]
                    lines.append(f"  {order}. {workload(target)}: {target.why()}")
                    if target.detail:
                        lines.append(f"       {target.detail}")
                    preflight, disruption = notes.get(target.owner, ("", ""))
                    if outcome.result != "planned":
                        lines.append(f"       {outcome.result}: {outcome.reason}")
                        continue
                    if preflight:
                        lines.append(f"       preflight: {preflight}")
                    if disruption:
                        lines.append(f"       disruption: {disruption}")
        others = [o for o in report.outcomes if o.target not in report.plan.targets and o.result != "current"]
        if others:
            lines += ["", "cannot be rolled out by a restart (reported, never waited on):"]
            lines += [f"  {workload(o.target)}: {o.reason} ({o.target.why()})" for o in others]
    elif report.outcomes:
        lines += _table([o for o in report.outcomes if o.result != "current"] or list(report.outcomes))
    current = [o.target for o in report.outcomes if o.result == "current"]
    if current:
        lines += ["", f"already current: {', '.join(workload(t) for t in current)}"]
    if report.plan.untouched:
        lines += ["", "no rollout, not touched (re-create these pods; a Job's next run is injected anew):"]
        lines += [f"  {t.owner.namespace} {t.owner}: {t.why()}" for t in report.plan.untouched]
    if report.stopped:
        lines += ["", f"stopped: {report.stopped}"]
    lines += ["", summary_line(report)]
    return "\n".join(lines).lstrip("\n") + "\n"


def exit_code(report: Report) -> int:
    """0 when every workload with stale or missing pods was restarted and nothing else is behind;
    1 when something is left (a dry run's plan, blocked, failed, not started, not touched)."""
    if report.plan.untouched:
        return EXIT_BEHIND
    return EXIT_OK if all(o.result in ("restarted", "current") for o in report.outcomes) else EXIT_BEHIND
