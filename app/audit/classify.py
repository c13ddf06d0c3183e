"""Audit one pod as it runs: per policy, is its injection current, stale, missing, refused or orphaned?

It asks the webhook's own engine, never a second implementation: `select_policies` says which
policies would apply to the pod now (requested or matching, namespace opt-in, `namespaceSelector`),
and `injection_state` whether each one's injection is present in the pod and equal to what the
policy renders for it now. The status annotation only tells which policies Podgraft recorded, with
their hashes then: it separates a pod that carries an older version (`stale`) from one that never
got the policy (`missing`), and names what was injected but no longer exists (`orphaned`).

| state | meaning |
|---|---|
| `current` | the pod holds what the live policy renders for it |
| `stale` | it holds an earlier version (old hash -> live hash, and what differs) |
| `missing` | asked for or matching now, never injected (webhook down, namespace opted in later, ...) |
| `refused` | the webhook would not inject it now: outside its namespaceSelector, a conflict, no such policy |
| `orphaned` | recorded as injected, but the policy no longer exists or no longer applies |

A pod that has finished (phase `Succeeded` or `Failed`: a completed Job's pods, evicted pods) or is
being deleted (`deletionTimestamp`: a rollout's old pods while they terminate) is not audited: it
runs nothing or soon will not, no restart changes it, and a Job's next pod is injected anew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.engine.config import EngineConfig
from app.engine.podview import as_list, as_mapping, string_map
from app.engine.policyset import CompiledPolicy, PolicySet
from app.engine.presence import InjectionState, injection_state
from app.engine.render import RenderError
from app.engine.select import requested_names, select_policies
from app.engine.status import read_status

State = Literal["current", "stale", "missing", "refused", "orphaned"]
STATES: tuple[State, ...] = ("current", "stale", "missing", "refused", "orphaned")
NEEDS_RESTART: tuple[State, ...] = ("stale", "missing")  # what `podgraft audit` exits 1 for
MAX_CHANGES = 6
FINISHED_PHASES = frozenset(["Succeeded", "Failed"])  # pods that run nothing any more


@dataclass(frozen=True, slots=True)
class PolicyState:
    policy: str
    state: State
    detail: str = ""
    recorded_hash: str | None = None  # what the status annotation says was injected
    live_hash: str | None = None  # the policy in force now


@dataclass(frozen=True, slots=True)
class PodAudit:
    namespace: str
    name: str
    policies: tuple[PolicyState, ...]
    note: str = ""  # about the pod itself: an unreadable status annotation


def status_problem(annotations: Mapping[str, str], key: str) -> str:
    """Why the status annotation cannot be read ("" when it is absent or fine): a pod whose
    annotation was hand-edited or corrupted is reported as such, and audited by its contents."""
    raw = annotations.get(key)
    if raw is None:
        return ""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return f"the {key} annotation is not JSON"
    entries = data.get("policies") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("hash"), str)
        for e in entries
    ):
        return f"the {key} annotation is not a Podgraft status (hand-edited?)"
    return ""


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def container_changes(pod: Mapping[str, Any], rendered: Mapping[str, Any]) -> list[str]:
    """What differs between the pod's containers and the same-named ones the policy renders now, field by
    field for the fields the policy sets ("log-shipper image fluent-bit:3.1.9 -> fluent-bit:3.2.0")."""
    spec = as_mapping(pod.get("spec"))
    in_pod = {
        c.get("name"): c
        for group in ("initContainers", "containers")
        for c in as_list(spec.get(group))
        if isinstance(c, Mapping)
    }
    changes: list[str] = []
    for group in ("initContainers", "sidecars", "containers"):
        for wanted in rendered.get(group) or []:
            have = in_pod.get(wanted.get("name"))
            if have is None:
                changes.append(f"{wanted.get('name')} not in the pod")
                continue
            for key, value in wanted.items():
                if key == "name" or have.get(key) == value:
                    continue
                if key in ("command", "args") or not isinstance(
                    value, list | dict
                ):  # what reads as one value
                    changes.append(f"{wanted['name']} {key} {_value(have.get(key))} -> {_value(value)}")
    return changes[:MAX_CHANGES]


def _what_differs(
    pod: Mapping[str, Any], policy: CompiledPolicy, namespace: str, state: InjectionState
) -> str:
    try:
        changes = container_changes(pod, policy.render(pod, namespace))
    except RenderError:
        changes = []
    found = changes or [*state.conflicts, *state.missing]
    return "; ".join(found[:MAX_CHANGES]) or "the pod differs from the policy"


def _classify(
    pod: Mapping[str, Any],
    policy: CompiledPolicy,
    state: InjectionState,
    *,
    namespace: str,
    recorded: str | None,
) -> PolicyState:
    hashes = {"recorded_hash": recorded, "live_hash": policy.content_hash}
    if state.current:
        if recorded is None:
            detail = "present, but not recorded in the status annotation"
        elif recorded != policy.content_hash:
            detail = f"recorded as {recorded}; the pod already holds what {policy.content_hash} renders"
        else:
            detail = ""
        return PolicyState(policy.name, "current", detail, **hashes)
    if recorded is not None:
        what = _what_differs(pod, policy, namespace, state)
        return PolicyState(policy.name, "stale", f"{recorded} -> {policy.content_hash}: {what}", **hashes)
    if state.conflicts:
        return PolicyState(policy.name, "refused", "; ".join(state.conflicts[:MAX_CHANGES]), **hashes)
    return PolicyState(
        policy.name, "missing", "never injected: " + "; ".join(state.missing[:MAX_CHANGES]), **hashes
    )


def audit_pod(
    pod: Mapping[str, Any],
    *,
    namespace_labels: Mapping[str, str] | None,
    policies: PolicySet,
    config: EngineConfig,
) -> PodAudit:
    """The audit of one pod as the API returns it (see the module doc)."""
    metadata = as_mapping(pod.get("metadata"))
    namespace = str(metadata.get("namespace") or "default")
    name = str(metadata.get("name") or "")
    if as_mapping(pod.get("status")).get("phase") in FINISHED_PHASES or metadata.get("deletionTimestamp"):
        return PodAudit(namespace, name, ())
    annotations = string_map(metadata.get("annotations"))
    recorded = read_status(annotations, config.status_annotation)
    selection = select_policies(
        pod, namespace=namespace, namespace_labels=namespace_labels, policies=policies, config=config
    )
    found: dict[str, PolicyState] = {}
    if selection.skip_reason is None:
        selected: Sequence[CompiledPolicy] = selection.policies
        for policy in selected:
            others = [other for other in selected if other is not policy]
            state = injection_state(pod, policy, namespace=namespace, config=config, alongside=others)
            found[policy.name] = _classify(
                pod, policy, state, namespace=namespace, recorded=recorded.get(policy.name)
            )
        for decision in selection.decisions:
            if not decision.applied and decision.policy not in found and decision.policy not in recorded:
                live = policies.by_name.get(decision.policy)
                found[decision.policy] = PolicyState(
                    decision.policy, "refused", decision.reason, live_hash=live.content_hash if live else None
                )
    elif selection.skip_code == "namespace-not-enabled":  # the pod asks, its namespace does not let it
        names, _ = requested_names(annotations.get(config.inject_annotation, ""))
        for requested in names:
            if requested not in recorded:
                live = policies.by_name.get(requested)
                found[requested] = PolicyState(
                    requested, "refused", selection.skip_reason, live_hash=live.content_hash if live else None
                )
    for policy_name, recorded_hash in recorded.items():
        if policy_name in found:
            continue
        live = policies.by_name.get(policy_name)
        why = "the policy no longer exists" if live is None else "it no longer applies to this pod"
        if live is not None and selection.skip_reason is not None:
            why += f" ({selection.skip_reason})"
        found[policy_name] = PolicyState(
            policy_name,
            "orphaned",
            why,
            recorded_hash=recorded_hash,
            live_hash=live.content_hash if live else None,
        )
    note = status_problem(annotations, config.status_annotation)
    return PodAudit(namespace, name, tuple(found.values()), note)
