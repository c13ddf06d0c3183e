"""Audit one pod as it runs: per policy, is its injection current, stale, missing, refused or orphaned?

It asks the webhook's own engine, never a second implementation: `select_policies` says which
policies would apply to the pod (requested or matching, namespace opt-in, `namespaceSelector`), and
`injection_state` whether each one's injection is present in the pod and equal to what the live
policy renders for the pod **as it was admitted**: a controller-made pod had no name then (its
templates saw the `generateName` prefix), and its labels and annotations may have changed since; the
status annotation's `inputs` give the values the templates read then (`engine.inputs.admission_view`;
without them, a generated name is taken for none). The status annotation also tells which policies
Podgraft recorded, with their hashes then: it separates a pod that carries an older version (`stale`)
from one that never got the policy (`missing`), and names what was injected but no longer exists
(`orphaned`). Neither decides whether a policy is injected: the pod's contents do.

| state | meaning |
|---|---|
| `current` | the pod holds what the live policy renders for it |
| `stale` | it holds an earlier version (old hash -> live hash, and what differs) |
| `missing` | asked for or matching now, never injected (webhook down, namespace opted in later, ...) |
| `refused` | the webhook would not inject it now: outside its namespaceSelector, a conflict, no such policy |
| `orphaned` | recorded as injected, but the policy no longer exists or no longer applies |
| `unknown` | not current, and what the pod was admitted with cannot be rebuilt to tell why |
| `unknown` | or: what the namespace's labels decide (its opt-in, a `namespaceSelector`) while unknown |

A pod whose namespace's labels are unknown (`namespace_labels=None`: a dump without its Namespace,
no right to list Namespaces) is never called `missing`, `refused` by a `namespaceSelector` or
`orphaned` by one on that unchecked assumption: those are `unknown`, with what they would be.

A pod that has finished (phase `Succeeded` or `Failed`: a completed Job's pods, evicted pods) or is
being deleted (`deletionTimestamp`: a rollout's old pods while they terminate) is not audited: it
runs nothing or soon will not, no restart changes it, and a Job's next pod is injected anew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from app.audit.changes import item_changes
from app.engine.config import EngineConfig
from app.engine.inputs import View, admission_view
from app.engine.podview import as_mapping, string_map
from app.engine.policyset import CompiledPolicy, PolicySet
from app.engine.presence import InjectionState, injection_state
from app.engine.select import requested_names, select_policies
from app.engine.status import read_inputs, read_status

State = Literal["current", "stale", "missing", "refused", "orphaned", "unknown"]
STATES: tuple[State, ...] = ("current", "stale", "missing", "refused", "orphaned", "unknown")
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


def _what_differs(pod: Mapping[str, Any], state: InjectionState) -> str:
    """What the live policy would change in a pod that carries an earlier version."""
    found: list[str] = []
    for edit in state.edits:
        found += item_changes(pod, edit)
    found += state.conflicts
    return "; ".join(found[:MAX_CHANGES]) or "the pod differs from the policy"


def _unknown_inputs(policy: CompiledPolicy, view: View) -> list[str]:
    """The values this policy's templates read that the view could not rebuild."""
    found = []
    for field, key in view.unknown:
        every, keys = policy.reads.keys(field)
        if every or key in keys:
            found.append(f"{field[:-1]} {key!r}")
    return found


def _classify(
    pod: Mapping[str, Any],
    policy: CompiledPolicy,
    state: InjectionState,
    *,
    recorded: str | None,
    view: View,
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
    unknown = _unknown_inputs(policy, view)
    if recorded is not None and unknown:
        detail = (
            f"{', '.join(unknown)}, which its templates read, changed since admission and was recorded "
            "only as a digest: what the pod was admitted with cannot be rendered again"
        )
        return PolicyState(policy.name, "unknown", detail, **hashes)
    if recorded is not None:
        what = _what_differs(pod, state)
        return PolicyState(policy.name, "stale", f"{recorded} -> {policy.content_hash}: {what}", **hashes)
    if state.conflicts:
        return PolicyState(policy.name, "refused", "; ".join(state.conflicts[:MAX_CHANGES]), **hashes)
    return PolicyState(
        policy.name, "missing", "never injected: " + "; ".join(state.missing[:MAX_CHANGES]), **hashes
    )


def _unchecked(state: PolicyState, namespace: str, policies: PolicySet, selected: set[str]) -> PolicyState:
    """`unknown` for a state the namespace's labels decided, when they are unknown (see the doc)."""
    live = policies.by_name.get(state.policy)
    scoped = live is not None and live.model.spec.namespace_selector is not None
    scoped = scoped and state.policy not in selected
    if state.state == "missing" or (state.state in ("refused", "orphaned") and scoped):
        detail = f"namespace {namespace!r} not checked, its labels are unknown; if opted in: {state.state}"
        return replace(state, state="unknown", detail=f"{detail}, {state.detail}")
    return state


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
    view = admission_view(
        pod, read_inputs(annotations, config.status_annotation), status_key=config.status_annotation
    )
    selection = select_policies(
        view.pod, namespace=namespace, namespace_labels=namespace_labels, policies=policies, config=config
    )
    found: dict[str, PolicyState] = {}
    if selection.skip_reason is None:
        selected: Sequence[CompiledPolicy] = selection.policies
        for policy in selected:
            others = [other for other in selected if other is not policy]
            claimed = recorded.get(policy.name)
            state = injection_state(
                pod,
                policy,
                namespace=namespace,
                config=config,
                alongside=others,
                view=view.pod,
                claimed=claimed is not None,
            )
            found[policy.name] = _classify(pod, policy, state, recorded=claimed, view=view)
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
    states = tuple(found.values())
    if namespace_labels is None and selection.skip_reason is None:
        chosen = {policy.name for policy in selection.policies}
        states = tuple(_unchecked(s, namespace, policies, chosen) for s in states)
    return PodAudit(namespace, name, states, note)
