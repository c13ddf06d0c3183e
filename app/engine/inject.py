"""The pure core used by both the webhook and `podgraft inject`.

`inject_pod` (Pod CREATE) and `graft_ephemeral` (pods/ephemeralcontainers UPDATE) take the raw
pod dict and an immutable `PolicySet` and return an `InjectionResult`: the JSON Patch, the
warnings, a denial if a required policy cannot be honoured, and one decision per policy.

Algorithm of `inject_pod`:
1. drop `managedFields`; select the policies (`select.select_policies`);
2. render each selected policy's templates for this pod as it was first admitted (a pod that comes
   back is shown the values its status recorded; never Podgraft's own status annotation, see
   `inputs`); a render error drops that policy with a warning, or denies the pod when the
   policy is required;
3. apply the rendered policies, in selection order, to a copy of the pod (`mutate.mutate_pod`);
4. diff the original against the copy (`patch.create_patch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from app.engine.config import EngineConfig
from app.engine.inputs import recorded_view, without_status
from app.engine.mutate import PolicyResult, mutate_ephemeral, mutate_pod
from app.engine.patch import create_patch, without_managed_fields
from app.engine.podsecurity import enforced_level, injection_warnings
from app.engine.podview import as_mapping
from app.engine.policyset import CompiledPolicy, PolicySet
from app.engine.render import RenderError
from app.engine.select import PolicyDecision, Selection, select_policies
from app.engine.status import read


class InjectionResult:
    """What the engine decided for one pod (a plain class with `Final` attributes: see `PolicyDecision`)."""

    __slots__ = (
        "decisions",
        "denial",
        "injected",
        "mutated",
        "patch",
        "skip_code",
        "skip_reason",
        "status",
        "warnings",
    )

    def __init__(
        self,
        *,
        patch: list[dict[str, Any]] | None = None,
        warnings: tuple[str, ...] = (),
        denial: str | None = None,
        decisions: tuple[PolicyDecision, ...] = (),
        injected: tuple[str, ...] = (),
        skip_reason: str | None = None,
        skip_code: str | None = None,
        mutated: Mapping[str, Any] | None = None,
        status: str | None = None,
    ) -> None:
        self.patch: Final[list[dict[str, Any]]] = [] if patch is None else patch
        self.warnings: Final = warnings
        self.denial: Final = denial
        self.decisions: Final = decisions
        self.injected: Final = injected  # names of the policies applied by this patch
        self.skip_reason: Final = skip_reason
        self.skip_code: Final = skip_code
        self.mutated: Final = mutated  # the pod after the patch (None when unchanged)
        self.status: Final = status  # the status annotation the patched pod carries (for Events)


def _render_all(
    pod: Mapping[str, Any], namespace: str, policies: tuple[CompiledPolicy, ...]
) -> tuple[list[tuple[CompiledPolicy, Mapping[str, Any]]], list[str], str | None, list[PolicyDecision]]:
    rendered: list[tuple[CompiledPolicy, Mapping[str, Any]]] = []
    warnings: list[str] = []
    denial: str | None = None
    failed: list[PolicyDecision] = []
    for policy in policies:
        try:
            rendered.append((policy, policy.render(pod, namespace)))
        except RenderError as exc:
            message = f"policy {policy.name!r} could not be rendered for this pod: {exc}"
            if policy.required:
                denial = denial or f"podgraft: required {message}"
            warnings.append(f"podgraft: {message}; not injected")
            failed.append(PolicyDecision(policy.name, False, f"render error: {exc}"))
    return rendered, warnings, denial, failed


def _replace_decisions(selection: Selection, final: list[PolicyDecision]) -> tuple[PolicyDecision, ...]:
    by_name = {d.policy: d for d in final}
    return tuple(by_name.get(d.policy, d) for d in selection.decisions)


def _settled(selection: Selection, results: list[PolicyResult], *, explain: bool) -> list[PolicyDecision]:
    """The decisions of the policies that reached mutation, with what became of each (in detail,
    containers and sidecar mode, when explaining)."""
    why = {d.policy: d.reason for d in selection.decisions}
    return [
        PolicyDecision(
            r.policy.name,
            r.state in ("injected", "updated"),
            f"{why[r.policy.name]}; {r.detail() if explain else r.state}",
        )
        for r in results
    ]


def _select(
    pod: Mapping[str, Any],
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    policies: PolicySet,
    config: EngineConfig,
    **options: bool,
) -> tuple[dict[str, Any], Selection]:
    original = without_managed_fields(pod)
    selection = select_policies(
        original,
        namespace=namespace,
        namespace_labels=namespace_labels,
        policies=policies,
        config=config,
        **options,
    )
    return original, selection


def inject_pod(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    policies: PolicySet,
    config: EngineConfig,
    explain: bool = False,
) -> InjectionResult:
    """Decide, render, mutate and diff one pod on CREATE (see the module docstring).

    `explain`: a decision for every loaded policy, and for each applied one the containers it added
    and its sidecar mode (`podgraft inject --explain`)."""
    original, selection = _select(pod, namespace, namespace_labels, policies, config, explain=explain)
    if selection.skip_reason is not None:
        return InjectionResult(skip_reason=selection.skip_reason, skip_code=selection.skip_code)
    annotations = as_mapping(as_mapping(original.get("metadata")).get("annotations"))
    claims, inputs = read(annotations, config.status_annotation)  # the status, parsed once
    shown = recorded_view(original, inputs, config.status_annotation)
    rendered, warnings, denial, failed = _render_all(shown, namespace, selection.policies)
    decisions = _replace_decisions(selection, failed)
    denial = selection.denial or denial
    all_warnings = [*selection.warnings, *warnings]
    if denial is not None or not (rendered or config.status_annotation in annotations):
        return InjectionResult(warnings=tuple(all_warnings), denial=denial, decisions=decisions)
    mutated, outcome = mutate_pod(
        original,
        rendered,
        config=config,
        claims=claims,
        shown=shown,
    )
    decisions = _replace_decisions(
        selection, [*failed, *_settled(selection, outcome.results, explain=explain)]
    )
    all_warnings += outcome.warnings
    level = enforced_level(namespace_labels)
    if level is not None:
        all_warnings += injection_warnings(
            level=level, namespace=namespace, pod_spec=mutated["spec"], injected=outcome.added()
        )
    if outcome.denial is not None:
        return InjectionResult(warnings=tuple(all_warnings), denial=outcome.denial, decisions=decisions)
    patch = create_patch(original, mutated)
    status = mutated["metadata"].get("annotations", {}).get(config.status_annotation) if patch else None
    return InjectionResult(
        patch=patch,
        warnings=tuple(all_warnings),
        decisions=decisions,
        injected=tuple(p.name for p in outcome.injected),
        mutated=mutated if patch else None,
        status=status if isinstance(status, str) else None,
    )


def graft_ephemeral(
    pod: Mapping[str, Any],
    old_pod: Mapping[str, Any],
    *,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    policies: PolicySet,
    config: EngineConfig,
) -> InjectionResult:
    """Apply the `ephemeral` rules of the policies that select this pod to its new ephemeral containers.
    Already-injected policies count too: debug rules apply for the pod's whole life."""
    original, selection = _select(pod, namespace, namespace_labels, policies, config)
    if selection.skip_reason is not None:
        return InjectionResult(skip_reason=selection.skip_reason, skip_code=selection.skip_code)
    with_rules = tuple(p for p in selection.policies if not p.model.spec.ephemeral.is_empty())
    shown = without_status(original, config.status_annotation)  # debug rules: the pod as it is now
    rendered, warnings, denial, failed = _render_all(shown, namespace, with_rules)
    rules = [(policy, spec.get("ephemeral", {})) for policy, spec in rendered]
    decisions = _replace_decisions(selection, failed)
    mutated, outcome = mutate_ephemeral(original, old_pod, rules)
    all_warnings = (*warnings, *outcome.warnings)
    denial = denial or outcome.denial
    if denial is not None:
        return InjectionResult(warnings=all_warnings, denial=denial, decisions=decisions)
    patch = create_patch(original, mutated)
    return InjectionResult(
        patch=patch,
        warnings=all_warnings,
        decisions=decisions,
        injected=tuple(p.name for p in outcome.injected) if patch else (),
        mutated=mutated if patch else None,
    )
