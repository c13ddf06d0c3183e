"""`podgraft explain`: why a live pod was (not) injected, or what a workload's next pods would get (pure).

Every answer is the webhook's own: the namespace's opt-in and each policy's decision come from
`app.engine.inject.inject_pod` (`explain=True`, the reasons `podgraft inject --explain` prints), each
policy's state from `app.audit.classify.audit_pod` (for a running pod: is it current; for a pod
template: would it be injected, or refused); which mutating webhooks the apiserver calls, in its
order, from `app.explain.webhooks` over the cluster's MutatingWebhookConfigurations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.audit.classify import STATES, PodAudit, audit_pod
from app.engine.config import EngineConfig
from app.engine.inject import inject_pod
from app.engine.podview import as_mapping, string_map
from app.engine.policyset import PolicySet
from app.explain.webhooks import WebhookMatch, pod_create_webhooks, reinvocation_note

# what a policy's audit state means for a running pod, and for a pod template (its next pods)
LIVE_VERDICTS = {
    "current": "injected",
    "stale": "injected, stale",
    "missing": "not injected",
    "refused": "refused",
    "orphaned": "injected, no longer applies",
    "unknown": "injected, cannot tell",
}
TEMPLATE_VERDICTS = {
    "current": "already in the template",
    "stale": "in the template, stale",
    "missing": "would be injected",
    "refused": "refused",
    "orphaned": "recorded, no longer applies",
    "unknown": "cannot tell",
}


@dataclass(frozen=True, slots=True)
class PolicyLine:
    policy: str
    verdict: str  # injected, would be injected, refused, not selected, ...
    reason: str  # the engine's decision ("requested by podgraft.io/inject; injected: ...")
    state: str = ""  # the audit's state of the pod explained ("" when not selected)
    detail: str = ""  # and what it found (what differs, what is missing, why refused)
    running: str = ""  # a workload's running pods: "2 current, 1 stale"


@dataclass(frozen=True, slots=True)
class Explanation:
    subject: str  # "pod shop/web-7d9f8-a1b2c (owner Deployment/web)"
    live: bool  # a running pod; else a pod template (what its next pods get)
    namespace: str
    namespace_labels: Mapping[str, str] | None
    opt_in: str  # the engine's view of the namespace
    skipped: str  # the engine leaves the whole pod alone, and why ("" if not)
    policies: tuple[PolicyLine, ...]
    warnings: tuple[str, ...]
    denial: str
    webhooks: tuple[WebhookMatch, ...] | None  # None: the configurations could not be listed
    admission_policies: tuple[str, ...]
    notes: tuple[str, ...]  # what was not evaluated, and why


def opt_in(namespace: str, labels: Mapping[str, str] | None, config: EngineConfig) -> str:
    if namespace in config.never_namespaces:
        return "never injected (one of Podgraft's excluded namespaces)"
    if labels is None:
        return "its labels could not be read: taken as opted in, as the webhook does"
    value = labels.get(config.namespace_label)
    if value == "enabled":
        return f"opted in ({config.namespace_label}=enabled)"
    if value == "disabled":
        return f"opted out ({config.namespace_label}=disabled)"
    return f"not opted in (no {config.namespace_label}=enabled label)"


def _running(audits: Sequence[PodAudit]) -> dict[str, str]:
    counts: dict[str, Counter[str]] = {}
    for audit in audits:
        for state in audit.policies:
            counts.setdefault(state.policy, Counter())[state.state] += 1
    return {
        policy: ", ".join(f"{found[s]} {s}" for s in STATES if found[s]) for policy, found in counts.items()
    }


def explain(
    pod: Mapping[str, Any],
    *,
    subject: str,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    policies: PolicySet,
    config: EngineConfig,
    live: bool,
    running: Sequence[PodAudit] = (),
    webhooks: Sequence[Mapping[str, Any]] | None = None,
    podgraft_configuration: str | None = None,
    admission_policies: Sequence[str] = (),
    admission_note: str = "",
) -> Explanation:
    """Explain one pod: a running one (`live`), or a workload's template as a pod (its `running`
    pods' audits summarised per policy)."""
    result = inject_pod(
        pod,
        namespace=namespace,
        namespace_labels=namespace_labels,
        policies=policies,
        config=config,
        explain=True,
    )
    audit = audit_pod(pod, namespace_labels=namespace_labels, policies=policies, config=config)
    states = {s.policy: s for s in audit.policies}
    reasons = {d.policy: d.reason for d in result.decisions}
    verdicts = LIVE_VERDICTS if live else TEMPLATE_VERDICTS
    summary = _running(running)
    lines = []
    for name in [*states, *(n for n in reasons if n not in states)]:
        state = states.get(name)
        verdict = verdicts[state.state] if state is not None else "not selected"
        lines.append(
            PolicyLine(
                name,
                verdict,
                reasons.get(name) or (state.detail if state else ""),  # skipped pods have no decision
                state.state if state else "",
                state.detail if state else "",
                summary.get(name, ""),
            )
        )
    notes = [audit.note] if audit.note else []
    matches: tuple[WebhookMatch, ...] | None = None
    if webhooks is not None:
        metadata = as_mapping(pod.get("metadata"))
        matches = tuple(
            pod_create_webhooks(
                webhooks,
                namespace_labels=namespace_labels,
                pod_labels=string_map(metadata.get("labels")),
                podgraft_configuration=podgraft_configuration,
            )
        )
        conditions = [m for m in matches if m.match_conditions]
        if conditions:
            notes.append(
                "matchConditions (CEL) of "
                + ", ".join(f"{m.webhook} ({m.match_conditions})" for m in conditions)
                + ": not evaluated here; a webhook whose conditions are false is not called"
            )
    if admission_policies:
        notes.append(
            "MutatingAdmissionPolicies (run before the webhooks): "
            + ", ".join(admission_policies)
            + ": not evaluated here (CEL)"
        )
    if admission_note:
        notes.append(admission_note)
    return Explanation(
        subject=subject,
        live=live,
        namespace=namespace,
        namespace_labels=namespace_labels,
        opt_in=opt_in(namespace, namespace_labels, config),
        skipped=result.skip_reason or "",
        policies=tuple(lines),
        warnings=tuple(result.warnings),
        denial=result.denial or "",
        webhooks=matches,
        admission_policies=tuple(admission_policies),
        notes=tuple(notes),
    )


def _labels_text(labels: Mapping[str, str] | None) -> str:
    if labels is None:
        return "unknown"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"


def _webhook_lines(matches: Sequence[WebhookMatch]) -> list[str]:
    lines: list[str] = []
    order = 0
    for index, match in enumerate(matches):
        title = match.title + (" (Podgraft)" if match.podgraft else "")
        if match.called:
            order += 1
            extra = [f"failurePolicy {match.failure_policy}"]
            note = reinvocation_note(matches, index)
            if note:
                extra.append(note)
            if match.match_conditions:
                extra.append(f"if its {match.match_conditions} matchConditions hold (not evaluated here)")
            lines.append(f"  {order}. {title}: called; {'; '.join(extra)}")
        else:
            lines.append(f"  -  {title}: not called")
        if match.podgraft or not match.called:
            lines += [f"       {reason}" for reason in match.reasons]
    return lines


def text(explanation: Explanation) -> str:
    e = explanation
    lines = [
        e.subject,
        "",
        f"namespace {e.namespace}: {e.opt_in}",
        f"  labels: {_labels_text(e.namespace_labels)}",
        "",
        "policies, by the webhook's engine:",
    ]
    if e.skipped:
        lines.append(f"  the whole pod is skipped: {e.skipped}")
    concerned = [p for p in e.policies if p.verdict != "not selected"]
    width = max((len(p.policy) for p in concerned), default=0)
    verdict_width = max((len(p.verdict) for p in concerned), default=0)
    pad = f"  {''.ljust(width)}  {''.ljust(verdict_width)}  "
    for line in concerned:
        lines.append(
            f"  {line.policy.ljust(width)}  {line.verdict.ljust(verdict_width)}  {line.reason}".rstrip()
        )
        shown = line.detail and line.detail != line.reason
        if shown and (e.live or line.state != "missing"):  # a template's policies are all missing
            lines.append(pad + f"{line.state}: {line.detail}")
        if line.running:
            lines.append(pad + f"its running pods: {line.running}")
    others: dict[str, list[str]] = {}
    for line in e.policies:
        if line.verdict == "not selected":
            others.setdefault(line.reason, []).append(line.policy)
    for reason, names in others.items():
        lines.append(f"  not selected: {', '.join(names)} ({reason})")
    if not e.policies and not e.skipped:
        lines.append("  no policy is requested by or matches this pod")
    if e.live and (e.warnings or e.denial):
        lines.append("  were this pod created now:")
    lines += [f"  ! {warning}" for warning in e.warnings]
    if e.denial:
        lines.append(f"  x the webhook would deny the pod: {e.denial}")
    lines += ["", "mutating webhooks, in the order the apiserver calls them for this pod:"]
    if e.webhooks is None:
        lines.append("  (the MutatingWebhookConfigurations cannot be listed: no permission)")
    elif not e.webhooks:
        lines.append("  none registered")
    else:
        lines += _webhook_lines(e.webhooks)
        ours = [m for m in e.webhooks if m.podgraft]
        if not ours:
            lines.append(
                "  ! no configuration of Podgraft's found "
                "(labelled app.kubernetes.io/name=podgraft; --webhook NAME)"
            )
        elif not any(m.called for m in ours) and any(p.verdict != "not selected" for p in e.policies):
            lines.append(
                "  ! Podgraft's webhook is not called for this pod: nothing above is injected at its creation"
            )
    if e.notes:
        lines += ["", "not evaluated here:"] + [f"  {note}" for note in e.notes]
    return "\n".join(lines) + "\n"


def as_data(explanation: Explanation) -> dict[str, Any]:
    e = explanation
    return {
        "subject": e.subject,
        "live": e.live,
        "namespace": {"name": e.namespace, "labels": e.namespace_labels, "optIn": e.opt_in},
        "skipped": e.skipped or None,
        "policies": [
            {
                "policy": p.policy,
                "verdict": p.verdict,
                "reason": p.reason,
                "state": p.state,
                "runningPods": p.running,
            }
            for p in e.policies
        ],
        "warnings": list(e.warnings),
        "denial": e.denial or None,
        "webhooks": None
        if e.webhooks is None
        else [
            {
                "configuration": m.configuration,
                "webhook": m.webhook,
                "called": m.called,
                "podgraft": m.podgraft,
                "failurePolicy": m.failure_policy,
                "reinvocationPolicy": m.reinvocation,
                "matchConditions": m.match_conditions,
                "reasons": list(m.reasons),
            }
            for m in e.webhooks
        ],
        "mutatingAdmissionPolicies": list(e.admission_policies),
        "notEvaluated": list(e.notes),
    }
