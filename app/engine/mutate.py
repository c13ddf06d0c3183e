"""Apply rendered policies to a pod: pure, on the raw pod dict, copy-on-write.

Each selected policy, in order, is planned against the pod as the policies before it left it
(`presence.plan_policy`) and then applied **whole or not at all**:

- a plan with a conflict is not applied: a `required` policy denies the pod, naming the policy and
  every item in the way; an optional one is skipped with one warning per conflict and is not
  recorded, so no env, mount, label or status is left behind from a policy whose container was not
  injected;
- a plan with nothing to do means the policy is already injected and current;
- anything else is applied: items added, and (for a pod whose status names the policy) the items of
  an older version replaced by the live ones.

The status annotation then lists the policies present and current, with their hashes, and the pod
values their templates read that can change after admission (`inputs`); one the pod brought that
says anything else is replaced (or removed, when no policy is present).

The original pod is never modified. The mutated pod shares every subtree it does not change with
the original (so the patch builder compares little), and each changed container, list or map is a
fresh copy.

Layout of the result (see README, "How injection is laid out"):

    initContainers: [native sidecars] [policy init containers, position first]
                    [the pod's own init containers] [policy init containers, position last]
    containers:     [the pod's own containers] [classic sidecars] [extra containers]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any, Final, Literal

from app.engine.config import EngineConfig
from app.engine.inputs import NOTHING, admission_inputs
from app.engine.podview import as_list, as_mapping, copied_dict, copied_list, names
from app.engine.policyset import CompiledPolicy
from app.engine.presence import Edit, Plan, classic_helpers, plan_policy
from app.engine.sidecars import sidecar_choice
from app.engine.status import status_value

Pod = dict[str, Any]
State = Literal["injected", "updated", "current", "conflict", "nothing"]


class PolicyResult:
    """What became of one policy, and the plan that decided it."""

    __slots__ = ("claimed", "plan", "policy", "state")

    def __init__(self, policy: CompiledPolicy, state: State, plan: Plan, claimed: str | None = None) -> None:
        self.policy: Final = policy
        self.state: Final = state
        self.plan: Final = plan
        self.claimed: Final = claimed  # the hash the pod's status annotation gave for this policy

    def detail(self) -> str:
        """How the policy was applied, for its decision (`inject --explain`, logs)."""
        if self.state == "conflict":
            verb = "cannot be applied" if self.policy.required else "not injected"
            return f"{verb}: {'; '.join(self.plan.conflicts)}"
        if self.state == "current":
            return f"already injected and current (hash {self.policy.content_hash})"
        if self.state == "nothing":
            return "nothing to inject at creation (its ephemeral rules apply to kubectl debug)"
        done = f"updated from version {self.claimed}" if self.state == "updated" else "injected"
        added = [self._describe(edit) for edit in self.plan.edits if edit.kind == "container"]
        return f"{done}: {', '.join(added)}" if added else done

    def _describe(self, edit: Edit) -> str:
        """A container the plan adds, and its role (`mesh-proxy (native sidecar; sidecarMode native)`)."""
        if edit.where in ("first", "last"):
            return f"{edit.key} (init container, {edit.where})"
        if edit.where == "containers":
            return f"{edit.key} (container)"
        return f"{edit.key} ({edit.where} sidecar; {self.plan.sidecars.reason})"


class Outcome:
    """What mutating one pod produced besides the pod itself."""

    __slots__ = ("denial", "injected", "results", "warnings")

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.denial: str | None = None
        self.injected: list[CompiledPolicy] = []  # applied by this mutation
        self.results: list[PolicyResult] = []

    def added(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(policy, kind, item) for each container and volume added or replaced (for Pod Security)."""
        return [
            (result.policy.name, edit.kind, edit.item)
            for result in self.results
            if result.state in ("injected", "updated")
            for edit in result.plan.edits
            if edit.kind in ("container", "volume")
        ]


def working_copy(pod: Mapping[str, Any]) -> Pod:
    """A shallow copy of the pod whose metadata and spec can be edited without touching the original."""
    copy = dict(pod)
    copy["metadata"] = copied_dict(pod.get("metadata"))
    copy["spec"] = copied_dict(pod.get("spec"))
    return copy


class _PodEditor:
    """Applies plans to one working copy, copying each list or map it edits once."""

    def __init__(self, pod: Pod) -> None:
        self.meta: dict[str, Any] = pod["metadata"]
        self.spec: dict[str, Any] = pod["spec"]
        self._made: list[Any] = []  # the copies made so far, kept so that their ids stay unique
        self._made_ids: set[int] = set()
        self.native_count = 0  # native sidecars injected at the front of initContainers
        self.first_count = 0  # init containers injected after them, before the pod's own

    def keep(self, value: Any) -> Any:
        """Remember `value` as a copy this editor made (it may then be edited in place)."""
        self._made.append(value)
        self._made_ids.add(id(value))
        return value

    def fresh(self, parent: dict[str, Any], key: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
        """`parent[key]` as a copy this editor made, so that it may be edited in place."""
        value = parent.get(key)
        if id(value) not in self._made_ids:
            value = parent[key] = self.keep(copied_list(value) if kind is list else copied_dict(value))
        return value

    def apply(self, plan: Plan) -> None:
        containers = []  # applied last: env and mounts address app containers by index
        for edit in plan.edits:
            kind = edit.kind
            if kind in ("env", "mount"):
                self.app_container_item(edit)
            elif kind == "container":
                containers.append(edit)
            elif kind in ("label", "annotation"):
                self.fresh(self.meta, f"{kind}s", dict)[edit.key] = edit.item
            else:
                key = "volumes" if kind == "volume" else "imagePullSecrets"
                _put(self.fresh(self.spec, key, list), "name", edit)
        for edit in containers:
            self.container(edit)

    def app_container_item(self, edit: Edit) -> None:
        """An env var or a mount of an app container (the bulk of an injection: kept inline)."""
        made = self._made_ids
        containers = self.spec["containers"]  # a list: the plan found the app containers there
        if id(containers) not in made:
            containers = self.spec["containers"] = self.keep(list(containers))
        container = containers[edit.slot]
        if id(container) not in made:
            container = containers[edit.slot] = self.keep(dict(container))
        field_name, key = ("env", "name") if edit.kind == "env" else ("volumeMounts", "mountPath")
        items = container.get(field_name)
        if id(items) not in made:
            items = container[field_name] = self.keep(copied_list(items))
        _put(items, key, edit)

    def container(self, edit: Edit) -> None:
        target = "containers" if edit.where in ("containers", "classic") else "initContainers"
        if edit.replaces:
            for group in ("initContainers", "containers"):
                items = as_list(self.spec.get(group))
                index = _index(items, "name", edit.key)
                if index is None:
                    continue
                if group == target:  # keep its place
                    self.fresh(self.spec, group, list)[index] = edit.item
                    return
                del self.fresh(self.spec, group, list)[index]
        items = self.fresh(self.spec, target, list)
        if edit.where == "native":
            items.insert(self.native_count, edit.item)
            self.native_count += 1
        elif edit.where == "first":
            items.insert(self.native_count + self.first_count, edit.item)
            self.first_count += 1
        else:
            items.append(edit.item)


def _index(items: list[Any], key: str, value: str) -> int | None:
    return next(
        (i for i, item in enumerate(items) if isinstance(item, dict) and item.get(key) == value), None
    )


def _put(items: list[Any], key: str, edit: Edit) -> None:
    """Replace the item whose `key` is the edit's, or append the edit's item."""
    index = _index(items, key, edit.key) if edit.replaces else None
    if index is None:
        items.append(edit.item)
    else:
        items[index] = edit.item


def _settle(
    policy: CompiledPolicy, plan: Plan, claimed: str | None, outcome: Outcome, status_key: str
) -> State:
    """Record a plan's warnings or denial; the state of the policy."""
    name = policy.name
    if plan.conflicts:
        if policy.required:
            outcome.denial = outcome.denial or (
                f"podgraft: required policy {name!r} cannot be applied: {'; '.join(plan.conflicts)}"
            )
        else:
            outcome.warnings += [f"podgraft: policy {name!r} not injected: {c}" for c in plan.conflicts]
        return "conflict"
    if plan.current:
        return "current"
    outcome.warnings += [f"podgraft: policy {name!r}: {note}" for note in plan.notes]
    if claimed is None:
        return "injected"
    if claimed != policy.content_hash:
        outcome.warnings.append(
            f"podgraft: policy {name!r}: the pod carries version {claimed}, the live one is "
            f"{policy.content_hash}; updated to the live one"
        )
        return "updated"
    outcome.warnings.append(
        f"podgraft: policy {name!r}: {status_key} lists it, but the pod does not contain it; injected"
    )
    return "injected"


def _rendered_containers(spec: Mapping[str, Any]) -> list[str]:
    return [c["name"] for group in ("initContainers", "sidecars", "containers") for c in spec.get(group, [])]


def mutate_pod(
    pod: Mapping[str, Any],
    rendered: list[tuple[CompiledPolicy, Mapping[str, Any]]],
    *,
    config: EngineConfig,
    claims: Mapping[str, str],
    shown: Mapping[str, Any] | None = None,
) -> tuple[Pod, Outcome]:
    """Apply every rendered policy, in order, whole or not at all, to a copy of `pod`; record the
    ones present and current in the status annotation, and nothing else (a claim the pod brought
    goes). `claims`: what the pod's status annotation says was injected (name -> hash). `shown`:
    the pod the policies were rendered for (`inputs.rendering_view`), whose values the status
    records; default `pod`."""
    outcome = Outcome()
    copy = working_copy(pod)
    editor = _PodEditor(copy)
    helpers = classic_helpers(rendered, config)
    applied: list[Mapping[str, Any]] = []  # the rendered specs applied so far
    present: dict[str, str] = {}
    containers: list[str] = []
    reads = NOTHING
    for policy, spec in rendered:
        if not policy.creates:
            outcome.results.append(PolicyResult(policy, "nothing", Plan(sidecar_choice(policy, config))))
            continue
        claimed = claims.get(policy.name)
        plan = plan_policy(
            copy, policy, spec, config=config, claimed=claimed is not None, earlier=applied, helpers=helpers
        )
        state = _settle(policy, plan, claimed, outcome, config.status_annotation)
        outcome.results.append(PolicyResult(policy, state, plan, claimed))
        if state == "conflict":
            continue
        editor.apply(plan)
        applied.append(spec)
        present[policy.name] = policy.content_hash
        containers += _rendered_containers(spec)
        reads |= policy.reads
        if state != "current":
            outcome.injected.append(policy)
    key = config.status_annotation
    inputs = admission_inputs(pod if shown is None else shown, reads, status_key=key)
    status = status_value(present, containers, inputs) if present else None
    _write_status(editor, key, status)
    return copy, outcome


def _write_status(editor: _PodEditor, key: str, value: str | None) -> None:
    """Set (or, with nothing present, remove) the status annotation, unless it already says that."""
    if as_mapping(editor.meta.get("annotations")).get(key) == value:
        return
    annotations = editor.fresh(editor.meta, "annotations", dict)
    if value is None:
        annotations.pop(key, None)
    else:
        annotations[key] = value


def image_allowed(image: str, patterns: list[str]) -> bool:
    """Glob match (`registry.example.com/debug/*`, `busybox:1.*`); no patterns: any image."""
    return not patterns or any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def mutate_ephemeral(
    pod: Mapping[str, Any],
    old_pod: Mapping[str, Any],
    rules: list[tuple[CompiledPolicy, Mapping[str, Any]]],
) -> tuple[Pod, Outcome]:
    """Apply the policies' ephemeral rules to the ephemeral containers added by this update.

    Only `spec.ephemeralContainers` may change on this subresource, so nothing else is touched.
    """
    outcome = Outcome()
    copy = working_copy(pod)
    old_names = names(copied_list(copied_dict(old_pod.get("spec")).get("ephemeralContainers")))
    volumes = names(copied_list(copy["spec"].get("volumes")))
    containers = copied_list(copy["spec"].get("ephemeralContainers"))
    for index, container in enumerate(containers):
        if not isinstance(container, dict) or container.get("name") in old_names:
            continue
        updated = dict(container)
        for policy, spec in rules:
            allowed = list(spec.get("allowedImages", []))
            image = str(container.get("image", ""))
            if not image_allowed(image, allowed):
                outcome.denial = outcome.denial or (
                    f"podgraft: policy {policy.name!r} does not allow image {image!r} for ephemeral "
                    f"container {container.get('name')!r}; allowed: {', '.join(allowed)}"
                )
                continue
            _apply_rules_to_container(updated, policy, spec, volumes, outcome)
        if updated != container:
            containers[index] = updated
            copy["spec"]["ephemeralContainers"] = containers
    outcome.injected = [policy for policy, _ in rules]
    return copy, outcome


def _apply_rules_to_container(
    container: dict[str, Any],
    policy: CompiledPolicy,
    spec: Mapping[str, Any],
    volumes: set[str],
    outcome: Outcome,
) -> None:
    name = container.get("name")
    mounts = copied_list(container.get("volumeMounts"))
    paths = {m.get("mountPath") for m in mounts if isinstance(m, dict)}
    for mount in spec.get("volumeMounts", []):
        if mount["name"] not in volumes:
            outcome.warnings.append(
                f"podgraft: policy {policy.name!r}: volumeMount {mount['name']!r} names no "
                f"volume of the pod; not mounted into {name!r}"
            )
        elif mount["mountPath"] not in paths:
            mounts.append(mount)
            paths.add(mount["mountPath"])
    if mounts:
        container["volumeMounts"] = mounts
    env = copied_list(container.get("env"))
    present = names(env)
    env += [var for var in spec.get("env", []) if var["name"] not in present]
    if env:
        container["env"] = env
