"""The validating webhook on policy ConfigMaps (`POST /validate-policies`): a broken policy refused
at apply time, with the very check of `podgraft policy validate` (`inspect_configmap`).

One request, in this order:
- a review that is not about a ConfigMap (another resource, an object of another kind, metadata
  that is not a mapping) is a broken webhook configuration or request: `BadReview`, a 4xx;
- anything but CREATE and UPDATE is allowed unlooked-at (the chart's rules send neither DELETE nor
  CONNECT: a policy can always be deleted);
- a new object without the policy label is allowed unlooked-at: the objectSelector matches when the
  old *or* the new object carries the label, and removing the label (which unloads the policies) is
  never refused;
- a labelled ConfigMap in a namespace this Podgraft does not watch is allowed with a warning (it is
  never loaded);
- otherwise every data key is checked as the loader checks it: any error refuses the write
  (`allowed: false`, 403, every problem one line of `status.message` as `podgraft policy validate`
  prints it, and one `status.details.causes` entry each), and warnings become the response's
  `warnings`, which kubectl prints.

Checks that depend on the live policies (a name another live ConfigMap defines, a container or
volume another live policy injects differently) warn and never refuse: each replica holds its own
copy of the live set (`PolicyStore.current()`), which may lag behind the others by a watch event.
In local mode (`make run`, directory policies) the route is served too, for trying it out: any
namespace is checked, and nothing against the live set (no ConfigMap ever joins a directory).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.admission.responses import AdmissionResponse, Cause, allowed, denied
from app.admission.review import AdmissionRequest, BadReview
from app.engine.canonical import same_container, same_volume
from app.engine.podview import as_mapping
from app.engine.policyset import CompiledPolicy, PolicySet
from app.policy.messages import Problem, kind_of, problem_line
from app.settings import Settings
from app.sources.documents import configmap_source_key
from app.sources.manifests import inspect_configmap

Outcome = Literal["allowed", "warned", "denied", "ignored"]
MAX_LINES = 50  # problems in one refusal; `podgraft policy validate` lists them all
MAX_LINE_CHARS = 1000


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """What the check needs of the settings."""

    policy_label: str
    kubernetes_version: str
    max_bytes: int
    # cluster mode: the watched policy namespaces. None in local mode: any namespace is checked, and
    # nothing against the live set (directory policies, which no ConfigMap ever joins)
    namespaces: frozenset[str] | None

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyCheck:
        watched = settings.policy_source == "configmaps"
        return cls(
            policy_label=settings.policy_label,
            kubernetes_version=settings.kubernetes_version,
            max_bytes=settings.max_policy_bytes,
            namespaces=frozenset(settings.watched_policy_namespaces()) if watched else None,
        )


@dataclass(frozen=True, slots=True)
class Validation:
    """What the check decided, for the HTTP layer (response) and for metrics and logs."""

    response: AdmissionResponse
    outcome: Outcome
    configmap: str  # "podgraft/log-shipper"
    why: str  # one line for the log
    errors: int = 0
    warnings: int = 0


def validate_policy_configmap(
    request: AdmissionRequest, *, live: PolicySet, check: PolicyCheck
) -> Validation:
    """Decide one review of `/validate-policies` (see the module doc). Raises `BadReview`."""
    obj = _configmap(request)
    uid = request.uid
    metadata = as_mapping(obj.get("metadata"))
    namespace = request.namespace or str(metadata.get("namespace") or "")
    name = request.name or str(metadata.get("name") or metadata.get("generateName") or "")
    where = f"{namespace}/{name}"
    if request.operation not in ("CREATE", "UPDATE"):
        return Validation(allowed(uid), "ignored", where, f"{request.operation} is never refused")
    if as_mapping(metadata.get("labels")).get(check.policy_label) != "true":
        return Validation(allowed(uid), "ignored", where, f"not labelled {check.policy_label}=true")
    if check.namespaces is not None and namespace not in check.namespaces:
        watched = ", ".join(sorted(check.namespaces))
        warning = (
            f"podgraft: namespace {namespace!r} is not one Podgraft watches for policies ({watched}): "
            f"this ConfigMap is never loaded"
        )
        return Validation(
            allowed(uid, warnings=[warning]), "warned", where, "namespace not watched", warnings=1
        )
    named = {**obj, "metadata": {**metadata, "namespace": namespace, "name": name}}
    found = inspect_configmap(
        named,
        kubernetes_version=check.kubernetes_version,
        policy_label=check.policy_label,
        max_bytes=check.max_bytes,
    )
    prefix = configmap_source_key(namespace, name, "")
    warnings = [_warning(problem, prefix) for problem in found.problems if problem.severity == "warning"]
    if check.namespaces is not None:
        warnings += live_set_warnings(found.policies, live=live, own_prefix=prefix)
    errors = found.errors
    if errors:
        response = denied(
            uid,
            _refusal(where, errors),
            details={"name": name, "kind": "ConfigMap", "causes": list(_causes(errors, prefix))},
            warnings=warnings,
        )
        return Validation(response, "denied", where, "refused", len(errors), len(warnings))
    outcome: Outcome = "warned" if warnings else "allowed"
    why = f"{len(found.policies)} policies would load"
    return Validation(allowed(uid, warnings=warnings), outcome, where, why, 0, len(warnings))


def _configmap(request: AdmissionRequest) -> Mapping[str, Any]:
    """The object under review, which must be a ConfigMap. Raises `BadReview`."""
    resource = request.resource
    if resource.get("group", "") != "" or resource.get("resource") != "configmaps" or request.sub_resource:
        got = "/".join(str(part) for part in (resource.get("group"), resource.get("resource")) if part)
        got += f"/{request.sub_resource}" if request.sub_resource else ""
        raise BadReview(
            f"/validate-policies reviews ConfigMaps (resource configmaps), got {got[:80]!r}: "
            "check the ValidatingWebhookConfiguration's rules",
            api_version=request.api_version,
            uid=request.uid,
        )
    obj = request.object if request.operation in ("CREATE", "UPDATE") else request.old_object
    obj = obj or {}
    kind = obj.get("kind", "ConfigMap")
    if kind != "ConfigMap" or not isinstance(obj.get("metadata", {}), dict):
        what = (
            f"kind {str(kind)[:40]!r}" if kind != "ConfigMap" else f"metadata {kind_of(obj.get('metadata'))}"
        )
        raise BadReview(
            f"request.object is not a ConfigMap: {what}", api_version=request.api_version, uid=request.uid
        )
    return obj


def _refusal(where: str, errors: Sequence[Problem]) -> str:
    """The status message: a header, then one line per error as `podgraft policy validate` prints
    it (kubectl shows the lines as they are)."""
    count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
    lines = [f"podgraft: {count} in policy ConfigMap {where}, which would not load:"]
    for problem in errors[:MAX_LINES]:
        lines.append(_bounded(problem_line(problem.source, problem)))
    if len(errors) > MAX_LINES:
        lines.append(f"... {len(errors) - MAX_LINES} more (podgraft policy validate lists them all)")
    return "\n".join(lines)


def _causes(errors: Sequence[Problem], prefix: str) -> Iterator[Cause]:
    """`status.details.causes`: the field is the data key (`data[log.yaml]`), the message the rest."""
    for problem in errors[:MAX_LINES]:
        key = problem.source.removeprefix(prefix) if problem.source.startswith(prefix) else ""
        yield {
            "reason": "FieldValueInvalid",
            "field": f"data[{key}]" if key else "data",
            "message": _bounded(str(problem)),
        }


def _warning(problem: Problem, prefix: str) -> str:
    """A warning as kubectl prints it (`Warning: ...`): short, since the apiserver cuts each at 256
    characters, so the key stands for the ConfigMap the user is applying."""
    source = problem.source
    where = f"key {source.removeprefix(prefix)}" if source.startswith(prefix) else ""
    return "podgraft: " + (f"{where}: {problem}" if where else str(problem))


def _bounded(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 3] + "..."


# --- checks against the live set: warnings only ----------------------------------------------------


def live_set_warnings(policies: Sequence[CompiledPolicy], *, live: PolicySet, own_prefix: str) -> list[str]:
    """Warnings for what the new policies would meet in the live set (whose policies of this very
    ConfigMap, named by `own_prefix`, are its old version and left out): a name another live source
    defines (the first source key in name order wins, as in the store), and a container or volume
    another policy injects under the same name, differently, which a pod given both cannot hold."""
    others = [p for p in live.by_name.values() if not p.source.startswith(own_prefix)]
    warnings = []
    for policy in policies:
        twin = live.by_name.get(policy.name)
        if twin is not None and not twin.source.startswith(own_prefix):
            if twin.source < policy.source:
                effect = "which stays in force: this definition is ignored"
            else:
                effect = "and this definition replaces it (of two keys, the first in name order wins)"
            warnings.append(f"podgraft: policy {policy.name!r} is already defined by {twin.source}, {effect}")
    candidates = [(f"live policy {p.name!r} ({p.source})", p) for p in others]
    for policy in policies:
        for whose, other in candidates:
            if other.name == policy.name:
                continue
            for kind, item in _clashes(policy, other):
                warnings.append(
                    f"podgraft: policy {policy.name!r} and {whose} both inject {kind} {item!r}, "
                    "differently: a pod given both gets one, the other is skipped (refused, if required)"
                )
        candidates.insert(0, (f"policy {policy.name!r}", policy))
    return warnings


def _clashes(one: CompiledPolicy, other: CompiledPolicy) -> Iterable[tuple[str, str]]:
    """(kind, name) of each container and volume both policies inject under one name, differently."""
    mine, theirs = _items(one), _items(other)
    for key in sorted(mine.keys() & theirs.keys()):
        kind, name = key
        (group, item), (other_group, other_item) = mine[key], theirs[key]
        if kind == "container":
            same = group == other_group and same_container(item, other_item, host_network=False)
        else:
            same = same_volume(item, other_item)
        if not same:
            yield kind, name


def _items(policy: CompiledPolicy) -> dict[tuple[str, str], tuple[str, Any]]:
    """Each container (with its group) and volume a policy injects, by kind and name, as written."""
    spec = policy.model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    found: dict[tuple[str, str], tuple[str, Any]] = {}
    for group in ("initContainers", "sidecars", "containers"):
        for container in spec.get(group) or []:
            found[("container", container["name"])] = (group, container)
    for volume in spec.get("volumes") or []:
        found[("volume", volume["name"])] = ("volumes", volume)
    return found
