"""Podgraft's disruption gate (pure): may a workload be restarted now, by its PodDisruptionBudgets?

The controllers delete a rollout's old pods directly, not through the Eviction API, so a
PodDisruptionBudget never slows `kubectl rollout restart`. `podgraft rollout` asks the budgets itself,
before each restart, from what the disruption controller wrote in their status:

- `disruptionsAllowed > 0` on every budget that selects the workload's pods: go;
- a budget that can never allow one, because it wants every expected pod healthy
  (`desiredHealthy >= expectedPods`: one replica with `minAvailable: 1`, or `maxUnavailable: 0`):
  blocked at once, waiting would not help;
- otherwise (pods not healthy now, or a status not yet computed for the budget's generation): wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from app.engine.podview import as_mapping
from app.engine.policyset import selector_matches
from app.policy.model import LabelSelector

Verdict = Literal["allowed", "wait", "never"]
_RANK: dict[Verdict, int] = {"allowed": 0, "wait": 1, "never": 2}


@dataclass(frozen=True, slots=True)
class Gate:
    verdict: Verdict
    message: str  # "" when no budget selects the pods


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _wants(spec: Mapping[str, Any]) -> str:
    for key in ("minAvailable", "maxUnavailable"):
        if key in spec:
            return f"{key} {spec[key]}"
    return "no minAvailable or maxUnavailable"


def selects(pdb: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a budget's selector selects pods with these labels (policy/v1: an empty selector
    selects every pod of the namespace, a missing one none)."""
    raw = as_mapping(pdb.get("spec")).get("selector")
    if raw is None:
        return False
    try:
        selector = LabelSelector.model_validate(raw)
    except ValidationError:
        return False  # the apiserver validates selectors; nothing else reaches here
    return selector_matches(selector, labels)


def budget_verdict(pdb: Mapping[str, Any]) -> Gate:
    """One budget's answer, from its status."""
    metadata, spec, status = (as_mapping(pdb.get(k)) for k in ("metadata", "spec", "status"))
    name = f"PodDisruptionBudget {metadata.get('name')}"
    if _count(status.get("observedGeneration")) < _count(metadata.get("generation")) or not status:
        return Gate("wait", f"{name}: its status is not computed yet")
    allowed, expected = _count(status.get("disruptionsAllowed")), _count(status.get("expectedPods"))
    healthy, desired = _count(status.get("currentHealthy")), _count(status.get("desiredHealthy"))
    if allowed > 0:
        return Gate("allowed", f"{name} allows {allowed} disruption{'s' if allowed != 1 else ''}")
    if expected > 0 and desired >= expected:
        return Gate(
            "never",
            f"{name} can never allow a disruption: it wants {desired} of {expected} pods healthy "
            f"({_wants(spec)}); a restart would take one down",
        )
    return Gate(
        "wait", f"{name} allows no disruption now: {healthy} of {expected} pods healthy, {desired} needed"
    )


def disruption_gate(pdbs: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> Gate:
    """The gate for a workload whose pods carry `labels`: the strictest of the budgets that select
    them (`allowed` with an empty message when none does)."""
    verdicts = [budget_verdict(pdb) for pdb in pdbs if selects(pdb, labels)]
    if not verdicts:
        return Gate("allowed", "")
    worst = max(verdicts, key=lambda gate: _RANK[gate.verdict])
    if worst.verdict == "allowed":
        return Gate("allowed", "; ".join(gate.message for gate in verdicts))
    return worst
