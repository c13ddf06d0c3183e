"""The rollout plan (pure): the audit's restart plan, as data, in the order it is carried out.

From the audited pods (`app.audit.report.audit_pods`, the audit's own test) each workload gets one of:

- `targets`: a Deployment, StatefulSet or DaemonSet with stale or missing pods, to restart;
- `current`: one whose audited pods are all current (nothing to do);
- `cannot`: one a restart would not roll out (paused, `OnDelete`, a StatefulSet partition; or it is
  gone), reported at once and never waited on;
- `untouched`: pods without a rollout (bare pods, Jobs, CronJobs, other controllers): listed only.

Targets run namespace by namespace in waves of `wave_size` namespaces (sorted by name); inside a
namespace, in the audit's order (kind, then name), `parallel` at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from app.audit.classify import NEEDS_RESTART
from app.audit.owners import Owner
from app.audit.report import AuditedPod

MAX_DETAIL = 150


@dataclass(frozen=True, slots=True)
class Target:
    """A workload and why it is in the plan."""

    owner: Owner
    pods: int  # its audited pods
    behind: tuple[tuple[str, str, int], ...]  # (policy, state, pods) for the stale and missing ones
    detail: str = ""  # the first stale or missing pod's detail (what differs)

    @property
    def policies(self) -> frozenset[str]:
        """The policies its pods are behind on."""
        return frozenset(policy for policy, _, _ in self.behind)

    def why(self) -> str:
        """`log-shipper stale on 2 of 3 pods, tracing missing on 1 of 3`."""
        parts = [f"{policy} {state} on {count} of {self.pods} pods" for policy, state, count in self.behind]
        return ", ".join(parts) or f"{self.pods} pods, all current"


@dataclass(frozen=True, slots=True)
class Blocked:
    target: Target
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    targets: tuple[Target, ...] = ()
    current: tuple[Target, ...] = ()
    cannot: tuple[Blocked, ...] = ()
    untouched: tuple[Target, ...] = ()
    waves: tuple[tuple[str, ...], ...] = ()

    def in_namespace(self, namespace: str) -> list[Target]:
        return [t for t in self.targets if t.owner.namespace == namespace]


def _short(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def by_owner(pods: Iterable[AuditedPod]) -> dict[Owner, Target]:
    """One `Target` per owner of audited pods: how many, and which policies are behind on how many."""
    counts: dict[Owner, Counter[tuple[str, str]]] = {}
    totals: Counter[Owner] = Counter()
    details: dict[Owner, str] = {}
    for pod in pods:
        totals[pod.owner] += 1
        found = counts.setdefault(pod.owner, Counter())
        for state in pod.audit.policies:
            if state.state in NEEDS_RESTART:
                found[(state.policy, state.state)] += 1
                details.setdefault(pod.owner, _short(f"{pod.audit.name}: {state.detail}"))
    return {
        owner: Target(
            owner,
            totals[owner],
            tuple((policy, state, n) for (policy, state), n in sorted(found.items())),
            details.get(owner, ""),
        )
        for owner, found in counts.items()
    }


def waves(namespaces: Iterable[str], wave_size: int) -> tuple[tuple[str, ...], ...]:
    """Namespaces, sorted, in groups of `wave_size`."""
    ordered = sorted(set(namespaces))
    size = max(1, wave_size)
    return tuple(tuple(ordered[i : i + size]) for i in range(0, len(ordered), size))


def build_plan(
    pods: Iterable[AuditedPod],
    *,
    workload: Callable[[Owner], str | None],
    wave_size: int = 1,
) -> Plan:
    """The plan for the audited pods. `workload(owner)` reads the owner from the cluster and says why
    a restart would not roll it out ("" when it would; None when it does not exist)."""
    targets: list[Target] = []
    current: list[Target] = []
    cannot: list[Blocked] = []
    untouched: list[Target] = []
    for owner, target in sorted(by_owner(pods).items()):
        if not owner.has_rollout:
            if target.behind:
                untouched.append(target)
            continue
        if not target.behind:
            current.append(target)
            continue
        reason = workload(owner)
        if reason is None:
            cannot.append(Blocked(target, f"{owner} no longer exists"))
        elif reason:
            cannot.append(Blocked(target, reason))
        else:
            targets.append(target)
    return Plan(
        tuple(targets),
        tuple(current),
        tuple(cannot),
        tuple(untouched),
        waves((t.owner.namespace for t in targets), wave_size),
    )


Phase = str  # "pending" | "active" | "finished"


def to_start(plan: Plan, phases: Mapping[Owner, Phase], *, parallel: int, wave: int) -> list[Owner]:
    """Which pending targets of wave number `wave` may start now: in each of its namespaces, the next
    ones in order while fewer than `parallel` are active."""
    if wave >= len(plan.waves):
        return []
    starting: list[Owner] = []
    for namespace in plan.waves[wave]:
        queue = [t.owner for t in plan.in_namespace(namespace)]
        active = sum(1 for owner in queue if phases.get(owner) == "active")
        pending = [owner for owner in queue if phases.get(owner, "pending") == "pending"]
        starting += pending[: max(0, max(1, parallel) - active)]
    return starting


def wave_finished(plan: Plan, phases: Mapping[Owner, Phase], wave: int) -> bool:
    return all(
        phases.get(t.owner) == "finished"
        for namespace in plan.waves[wave]
        for t in plan.in_namespace(namespace)
    )
