"""Which policies apply to a pod: one pure decision function, `select_policies`.

Precedence, first hit wins for the whole pod:

1. the namespace is never injected (system namespaces and Podgraft's own);
2. the namespace is not opted in (only checked when its labels are known: cluster mode keeps a
   namespace cache; otherwise the webhook configuration's namespaceSelector is trusted);
3. the pod is a static (mirror) pod, which the kubelet owns and the API cannot change;
4. the pod opts out with `podgraft.io/inject: "false"` - nothing is injected, matching policies neither.

Then per policy, for the union of the policies the pod requests by name (in the order given) and the
policies whose `match` rules fit it (by name):

5. a requested name that no policy has is a warning;
6. a policy whose `namespaceSelector` does not fit the namespace is refused with a warning, or
   denies the pod when the policy is `required`;
7. everything left is applied (`mutate`): whether a policy is already injected is decided there,
   from what the pod contains; the status annotation is written by Podgraft but, on CREATE, it is
   whatever the pod's author wrote, so selection never reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from app.engine.config import EngineConfig
from app.engine.podview import as_mapping, string_map
from app.engine.policyset import CompiledPolicy, PolicySet, selector_matches
from app.policy.model import DNS1123_LABEL, Match

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
OPT_OUT_VALUES = frozenset(["false", "no", "off", "disabled"])
ENABLE_VALUES = frozenset(["", "true", "yes", "on", "enabled"])
MAX_REQUESTED = 32


class PolicyDecision:
    """What happened to one policy, and why (for warnings, metrics and `inject --explain`).

    (This and the engine's other per-request values are plain classes with `Final` attributes, not
    frozen dataclasses: mypy refuses an assignment, the compiled form refuses it at run time too, and
    building one costs a tenth of a frozen dataclass, whose generated `__init__` is interpreted.)"""

    __slots__ = ("applied", "policy", "reason")

    def __init__(self, policy: str, applied: bool, reason: str) -> None:
        self.policy: Final = policy
        self.applied: Final = applied
        self.reason: Final = reason

    def __repr__(self) -> str:
        return f"PolicyDecision({self.policy!r}, {self.applied!r}, {self.reason!r})"


class Selection:
    """The policies chosen for a pod, in order, or why the whole pod is left alone."""

    __slots__ = ("decisions", "denial", "policies", "skip_code", "skip_reason", "warnings")

    def __init__(
        self,
        *,
        policies: tuple[CompiledPolicy, ...] = (),
        decisions: tuple[PolicyDecision, ...] = (),
        warnings: tuple[str, ...] = (),
        skip_reason: str | None = None,
        skip_code: str | None = None,
        denial: str | None = None,
    ) -> None:
        self.policies: Final = policies
        self.decisions: Final = decisions
        self.warnings: Final = warnings
        self.skip_reason: Final = skip_reason  # the whole pod is left alone, and why
        self.skip_code: Final = skip_code  # short metric label for skip_reason
        self.denial: Final = denial  # a required policy cannot be honoured


def requested_names(value: str) -> tuple[list[str], list[str]]:
    """Split the request annotation into policy names, and warnings for names that cannot be policies."""
    names: list[str] = []
    warnings: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if name.lower() in ENABLE_VALUES or name in names:
            continue
        if not DNS1123_LABEL.match(name):
            warnings.append(f"podgraft: {name[:64]!r} is not a valid policy name; ignored")
            continue
        names.append(name)
    if len(names) > MAX_REQUESTED:
        warnings.append(f"podgraft: only the first {MAX_REQUESTED} requested policies are considered")
        names = names[:MAX_REQUESTED]
    return names, warnings


def match_fits(match: Match | None, annotations: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when a policy's `match` rules select the pod. No rules: never selected implicitly."""
    if match is None or match.is_empty():
        return False
    if any(annotations.get(key) != value for key, value in match.annotations.items()):
        return False
    return selector_matches(match.labels, labels)


def _pod_skip(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    annotations: Mapping[str, str],
    config: EngineConfig,
) -> tuple[str, str] | None:
    """Steps 1-4: a reason (code, text) to leave the whole pod alone, or None."""
    if namespace in config.never_namespaces:
        return "namespace-excluded", f"namespace {namespace!r} is never injected"
    if namespace_labels is not None:
        opt_in = namespace_labels.get(config.namespace_label)
        if opt_in != "enabled":
            state = "opted out" if opt_in == "disabled" else "not opted in"
            return (
                "namespace-not-enabled",
                f"namespace {namespace!r} is {state} (label {config.namespace_label}=enabled)",
            )
    if MIRROR_ANNOTATION in annotations:
        return "mirror-pod", "static (mirror) pods are managed by the kubelet and never injected"
    if annotations.get(config.inject_annotation, "").strip().lower() in OPT_OUT_VALUES:
        return "opt-out", f"the pod opts out ({config.inject_annotation}: false)"
    return None


def select_policies(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    policies: PolicySet,
    config: EngineConfig,
    explain: bool = False,
) -> Selection:
    """Decide which policies apply to `pod` (see the module docstring for the precedence).

    `namespace_labels` is None when the namespace's labels are unknown (no namespace cache).
    `explain` also records a decision for every policy that was not a candidate (costs a full scan).
    """
    metadata = as_mapping(pod.get("metadata"))
    annotations = string_map(metadata.get("annotations"))
    labels = string_map(metadata.get("labels"))

    skip = _pod_skip(
        pod, namespace=namespace, namespace_labels=namespace_labels, annotations=annotations, config=config
    )
    if skip is not None:
        return Selection(skip_code=skip[0], skip_reason=skip[1])

    names, warnings = requested_names(annotations.get(config.inject_annotation, ""))
    decisions: list[PolicyDecision] = []
    candidates: dict[str, tuple[CompiledPolicy, str]] = {}
    for name in names:
        policy = policies.by_name.get(name)
        if policy is None:
            warnings.append(f"podgraft: requested policy {name!r} does not exist; nothing injected for it")
            decisions.append(PolicyDecision(name, False, "requested, but no such policy"))
        else:
            candidates[name] = (policy, f"requested by {config.inject_annotation}")
    for policy in policies.match_candidates(annotations, labels):
        if policy.name not in candidates and match_fits(policy.model.spec.match, annotations, labels):
            candidates[policy.name] = (policy, "selected by its match rules")

    scope_labels = dict(namespace_labels or {})
    scope_labels.setdefault(METADATA_NAME_LABEL, namespace)
    chosen: list[CompiledPolicy] = []
    denial: str | None = None
    for name, (policy, why) in candidates.items():
        selector = policy.model.spec.namespace_selector
        if selector is not None and not selector_matches(selector, scope_labels):
            message = f"policy {name!r} may not be used in namespace {namespace!r} (namespaceSelector)"
            if policy.required:
                denial = denial or f"podgraft: required {message}"
            warnings.append(f"podgraft: {message}; not injected")
            decisions.append(PolicyDecision(name, False, f"{why}; {message}"))
        else:
            chosen.append(policy)
            decisions.append(PolicyDecision(name, True, why))
    for name in sorted(set(policies.by_name) - set(candidates)) if explain else ():
        decisions.append(PolicyDecision(name, False, "not requested and its match rules do not fit"))
    return Selection(
        policies=tuple(chosen),
        decisions=tuple(decisions),
        warnings=tuple(warnings),
        denial=denial,
    )
