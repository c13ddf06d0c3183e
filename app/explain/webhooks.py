"""Which mutating webhooks the apiserver calls for a Pod CREATE, in its order (pure).

The apiserver's MutatingAdmissionWebhook plugin (k8s.io/apiserver v0.35.4, plugin/webhook) sorts the
MutatingWebhookConfigurations by name and calls their webhooks in the order listed. A webhook is
called when its `namespaceSelector` selects the pod's namespace (by its labels), its
`objectSelector` selects the pod (by its labels), and one of its `rules` covers CREATE of `pods`
(operations, apiGroups, apiVersions, resources with `*` wildcards, and a scope that is not
`Cluster`); then its `matchConditions` (CEL), which are not evaluated here. A webhook with
`reinvocationPolicy: IfNeeded` is called once more when a later webhook changed the pod. The
MutatingAdmissionPolicy plugin runs before the webhooks.

Caveat: the objectSelector sees the pod as earlier webhooks left it; this judges the pod as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app.engine.podview import as_list, as_mapping, string_map
from app.engine.policyset import selector_matches
from app.policy.model import LabelSelector

PODGRAFT_LABEL = ("app.kubernetes.io/name", "podgraft")  # the chart labels its configuration so


@dataclass(frozen=True, slots=True)
class WebhookMatch:
    configuration: str
    webhook: str
    called: bool
    reasons: tuple[str, ...]  # what decided it: each selector and the rules, matched or not
    failure_policy: str
    reinvocation: str
    match_conditions: int  # CEL conditions, not evaluated here
    podgraft: bool

    @property
    def title(self) -> str:
        return f"{self.configuration} / {self.webhook}"


def selector_text(raw: Any) -> str:
    """A label selector as kubectl and the API's `labelSelector` parameter write it
    (`app=web,tier in (a,b),!canary`); `everything` for an empty one."""
    selector = as_mapping(raw)
    parts = [f"{key}={value}" for key, value in sorted(string_map(selector.get("matchLabels")).items())]
    for item in as_list(selector.get("matchExpressions")):
        expression = as_mapping(item)
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(str(v) for v in as_list(expression.get("values")))
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": f"{key}"}.get(
                str(operator), f"!{key}" if operator == "DoesNotExist" else f"{key} {operator} ({values})"
            )
        )
    return ",".join(parts) or "everything"


def selector_fits(raw: Any, labels: Mapping[str, str]) -> bool | None:
    """Whether a label selector as the API returns it selects `labels` (a missing or empty selector
    selects everything); None when it cannot be read."""
    if raw is None:
        return True
    try:
        return selector_matches(LabelSelector.model_validate(raw), labels)
    except ValidationError:
        return None


def _covers(items: Any, wanted: str) -> bool:
    return any(item in ("*", wanted) for item in as_list(items))


def rule_covers_pod_create(rule: Mapping[str, Any]) -> bool:
    """One rule of a webhook against CREATE of core/v1 pods (no subresource, namespaced)."""
    resources = [str(r) for r in as_list(rule.get("resources"))]
    resource_fits = any(
        res in ("*", "pods") and sub in ("", "*")
        for res, _, sub in (item.partition("/") for item in resources)
    )
    return (
        rule.get("scope") in (None, "*", "Namespaced")
        and _covers(rule.get("operations"), "CREATE")
        and _covers(rule.get("apiGroups"), "")
        and _covers(rule.get("apiVersions"), "v1")
        and resource_fits
    )


def is_podgraft(configuration: Mapping[str, Any], name: str | None) -> bool:
    """Podgraft's own configuration: the one named `name`, else the one the chart labels."""
    metadata = as_mapping(configuration.get("metadata"))
    if name:
        return metadata.get("name") == name
    key, value = PODGRAFT_LABEL
    return string_map(metadata.get("labels")).get(key) == value


def _judge(
    webhook: Mapping[str, Any], namespace_labels: Mapping[str, str] | None, pod_labels: Mapping[str, str]
) -> tuple[bool, list[str]]:
    reasons: list[str] = []
    called = True
    for field, labels, what in (
        ("namespaceSelector", namespace_labels, "the namespace's labels"),
        ("objectSelector", pod_labels, "the pod's labels"),
    ):
        raw = webhook.get(field)
        text = selector_text(raw)
        if labels is None:
            reasons.append(f"{field} {text}: not checked ({what} are unknown)")
            continue
        fits = selector_fits(raw, labels)
        if fits is None:
            reasons.append(f"{field} {text}: cannot be read")
        else:
            reasons.append(f"{field} {text}: {'matches' if fits else 'does not match'}")
        called = called and fits is True
    rules = [as_mapping(r) for r in as_list(webhook.get("rules"))]
    covered = any(rule_covers_pod_create(rule) for rule in rules)
    reasons.append(f"rules: {'cover' if covered else 'do not cover'} CREATE of pods")
    return called and covered, reasons


def pod_create_webhooks(
    configurations: Iterable[Mapping[str, Any]],
    *,
    namespace_labels: Mapping[str, str] | None,
    pod_labels: Mapping[str, str],
    podgraft_configuration: str | None = None,
) -> list[WebhookMatch]:
    """Every mutating webhook, in the apiserver's calling order, and whether it is called for a pod
    with `pod_labels` created in a namespace with `namespace_labels` (None: not known)."""
    ordered = sorted(configurations, key=lambda c: str(as_mapping(c.get("metadata")).get("name") or ""))
    found: list[WebhookMatch] = []
    for configuration in ordered:
        name = str(as_mapping(configuration.get("metadata")).get("name") or "")
        ours = is_podgraft(configuration, podgraft_configuration)
        for item in as_list(configuration.get("webhooks")):
            webhook = as_mapping(item)
            called, reasons = _judge(webhook, namespace_labels, pod_labels)
            found.append(
                WebhookMatch(
                    configuration=name,
                    webhook=str(webhook.get("name") or ""),
                    called=called,
                    reasons=tuple(reasons),
                    failure_policy=str(webhook.get("failurePolicy") or "Fail"),
                    reinvocation=str(webhook.get("reinvocationPolicy") or "Never"),
                    match_conditions=len(as_list(webhook.get("matchConditions"))),
                    podgraft=ours,
                )
            )
    return found


def reinvocation_note(matches: Sequence[WebhookMatch], index: int) -> str:
    """Whether the webhook at `index` (called) may be called again: IfNeeded, and a later called
    webhook could change the pod."""
    match = matches[index]
    later = [m for m in matches[index + 1 :] if m.called]
    if match.reinvocation != "IfNeeded":
        return ""
    if later:
        names = ", ".join(m.webhook for m in later)
        return f"called again if {names} change the pod (reinvocationPolicy IfNeeded)"
    return "reinvocationPolicy IfNeeded: called again if a later admission plugin changes the pod"
