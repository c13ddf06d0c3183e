"""`podgraft audit`'s output: rows per pod and policy, a summary per policy, the exit code, and the
restart plan (pure: text and data in, text out)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from app.audit.classify import NEEDS_RESTART, STATES, PodAudit, PolicyState, audit_pod
from app.audit.owners import DEFAULT_NAMESPACE, Owner, ParentIndex, resolve_owner
from app.engine.config import EngineConfig
from app.engine.policyset import PolicySet

ROLLOUT_TIMEOUT = "10m"


@dataclass(frozen=True, slots=True)
class AuditedPod:
    audit: PodAudit
    owner: Owner


def audit_pods(
    pods: Iterable[Mapping[str, Any]],
    *,
    parents: ParentIndex,
    namespace_labels: Callable[[str], Mapping[str, str] | None],
    policies: PolicySet,
    config: EngineConfig,
) -> list[AuditedPod]:
    """Audit every pod (as it comes: a listing page by page) and keep the ones a policy concerns."""
    audited: list[AuditedPod] = []
    for pod in pods:
        namespace = str((pod.get("metadata") or {}).get("namespace") or DEFAULT_NAMESPACE)
        audit = audit_pod(pod, namespace_labels=namespace_labels(namespace), policies=policies, config=config)
        if audit.policies or audit.note:
            audited.append(AuditedPod(audit, resolve_owner(pod, parents)))
    return sorted(audited, key=lambda a: (a.audit.namespace, a.audit.name))


def only_policy(pods: Iterable[AuditedPod], policy: str | None) -> list[AuditedPod]:
    """Keep `policy`'s states (all when None), and the pods that still have one; a pod with no state at
    all but a status annotation that cannot be read is kept in every view (it may have held anything)."""
    kept: list[AuditedPod] = []
    for pod in pods:
        states = (
            pod.audit.policies
            if policy is None
            else tuple(s for s in pod.audit.policies if s.policy == policy)
        )
        if states or (pod.audit.note and not pod.audit.policies):
            audit = PodAudit(pod.audit.namespace, pod.audit.name, states, pod.audit.note)
            kept.append(AuditedPod(audit, pod.owner))
    return kept


def summary(pods: Iterable[AuditedPod]) -> dict[str, Counter[str]]:
    """Pods per state, per policy."""
    found: dict[str, Counter[str]] = {}
    for pod in pods:
        for state in pod.audit.policies:
            found.setdefault(state.policy, Counter())[state.state] += 1
    return dict(sorted(found.items()))


def needs_restart(pods: Iterable[AuditedPod]) -> bool:
    return any(s.state in NEEDS_RESTART for pod in pods for s in pod.audit.policies)


def _pods(count: int) -> str:
    return f"{count} pod{'s' if count != 1 else ''}"


def summary_lines(pods: Sequence[AuditedPod]) -> list[str]:
    lines = []
    for policy, counts in summary(pods).items():
        parts = ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])
        lines.append(f"policy {policy}: {parts} ({_pods(sum(counts.values()))})")
    unreadable = sum(1 for pod in pods if pod.audit.note)
    if unreadable:
        lines.append(f"{_pods(unreadable)} with a status annotation that cannot be read")
    return lines or ["no pod asks for or matches a policy"]


def _state_dict(state: PolicyState) -> dict[str, Any]:
    return {
        "policy": state.policy,
        "state": state.state,
        "detail": state.detail,
        "recordedHash": state.recorded_hash,
        "liveHash": state.live_hash,
    }


def as_data(pods: Sequence[AuditedPod]) -> dict[str, Any]:
    """The `-o json|yaml` document."""
    return {
        "pods": [
            {
                "namespace": pod.audit.namespace,
                "pod": pod.audit.name,
                "owner": str(pod.owner),
                **({} if pod.owner.listed else {"ownerListed": False}),
                **({"note": pod.audit.note} if pod.audit.note else {}),
                "policies": [_state_dict(s) for s in pod.audit.policies],
            }
            for pod in pods
        ],
        "summary": {policy: dict(counts) for policy, counts in summary(pods).items()},
        "needsRestart": needs_restart(pods),
    }


def render(pods: Sequence[AuditedPod], output: str) -> str:
    if output == "json":
        return orjson.dumps(as_data(pods), option=orjson.OPT_INDENT_2).decode() + "\n"
    if output == "yaml":
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: 10,000 pods in a second
        return yaml.dump(as_data(pods), Dumper=dumper, sort_keys=False)
    return table(pods)


def _owner(owner: Owner) -> str:
    return str(owner) if owner.listed else f"{owner} (not listed)"


def _rows(pod: AuditedPod) -> list[tuple[str, ...]]:
    """One row per policy state; a pod with none but an unreadable status gets one saying so."""
    where = (pod.audit.namespace, pod.audit.name, _owner(pod.owner))
    if not pod.audit.policies:
        return [(*where, "-", "-", pod.audit.note)]
    return [(*where, s.policy, s.state, _detail(s, pod.audit.note)) for s in pod.audit.policies]


def table(pods: Sequence[AuditedPod]) -> str:
    header = ("NAMESPACE", "POD", "OWNER", "POLICY", "STATE", "DETAIL")
    rows = [row for pod in pods for row in _rows(pod)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in [header, *rows]
    ]
    return "\n".join([*(line.rstrip() for line in lines), "", *summary_lines(pods)]) + "\n"


def _detail(state: PolicyState, note: str) -> str:
    return "; ".join(part for part in (state.detail, note) if part)


def restart_plan(pods: Sequence[AuditedPod]) -> str:
    """`kubectl` commands that bring the stale and missing pods current, one owner at a time (each
    waits for its rollout, paced by the owner's maxUnavailable and maxSurge; PodDisruptionBudgets do
    not gate a rollout: its controller deletes pods without the Eviction API). `podgraft rollout`
    runs the same plan with a disruption gate of its own; this only prints it. Owners without a
    rollout (bare pods, Jobs, CronJobs) are listed apart, and so are
    ReplicaSets and Jobs that were not listed, whose owner is unknown."""
    behind: dict[Owner, set[str]] = {}
    for pod in pods:
        for state in pod.audit.policies:
            if state.state in NEEDS_RESTART:
                behind.setdefault(pod.owner, set()).add(f"{state.policy} {state.state}")
    rollouts = sorted(owner for owner in behind if owner.has_rollout)
    others = sorted(owner for owner in behind if not owner.has_rollout and owner.listed)
    unlisted = sorted(owner for owner in behind if not owner.listed)
    unknown = sum(1 for pod in pods if any(s.state == "unknown" for s in pod.audit.policies))
    not_judged = (
        [f"# {_pods(unknown)} not judged (state unknown: the labels of their namespaces were not read)"]
        if unknown
        else []
    )
    if not behind:
        return "\n".join(["# nothing is stale or missing: nothing to restart", *not_judged]) + "\n"
    lines = (
        [
            f"# {len(rollouts)} workload(s) to restart, one at a time: each command waits for its rollout,",
            "# paced by its maxUnavailable/maxSurge (PodDisruptionBudgets do not gate a rollout restart;",
            "# `podgraft rollout` runs this plan with a PDB gate of its own).",
        ]
        if rollouts
        else ["# no workload known to restart with a rollout"]
    )
    for owner in rollouts:
        target = f"-n {owner.namespace} {owner.ref()}"
        lines.append(
            f"kubectl rollout restart {target} && kubectl rollout status {target} --timeout={ROLLOUT_TIMEOUT}"
            f"  # {', '.join(sorted(behind[owner]))}"
        )
    if others:
        lines += [
            "",
            "# no rollout for these: re-create the pods (a Job's next run, or a CronJob's, is injected anew)",
        ]
        lines += [f"#   {owner.namespace} {owner}: {', '.join(sorted(behind[owner]))}" for owner in others]
    if unlisted:
        lines += [
            "",
            "# owner unknown: these ReplicaSets and Jobs were not listed (not in the dump, not listable,",
            "# or deleted since); restart what owns each (a Deployment, a CronJob): the command shows it",
        ]
        lines += [
            f"#   {owner.namespace} {owner}: {', '.join(sorted(behind[owner]))}"
            f"  (kubectl get -n {owner.namespace} {owner.ref()} -o jsonpath='{{.metadata.ownerReferences}}')"
            for owner in unlisted
        ]
    if not_judged:
        lines += ["", *not_judged]
    return "\n".join(lines) + "\n"
