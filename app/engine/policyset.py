"""Compiled policies and the immutable `PolicySet` the engine reads.

A policy is compiled once when it is loaded: templates pre-parsed, its content hash computed, its
match rules indexed. Selection then looks up by requested name (a dict) and only evaluates the
match rules of policies that could fit the pod (indexed by one annotation or label key), so the
cost of a request does not grow with the number of loaded policies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from app.engine.inputs import Reads, match_reads, template_reads
from app.engine.render import RenderError, compile_tree, has_templates, pod_context, render_tree
from app.policy.model import InjectionPolicy, LabelSelector, label_value_problem


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """One validated policy, ready to render: `spec` holds compiled templates."""

    name: str
    source: str  # where it came from: "file.yaml" or "configmap ns/name key"
    model: InjectionPolicy
    spec: Mapping[str, Any]
    tree: Any  # what `spec` shows read-only: the compiled spec that rendering walks
    content_hash: str
    templated: bool
    creates: bool  # injects something when a pod is created (not only `ephemeral` rules)
    reads: Reads  # the pod values that change after admission which its templates or match rules read

    @property
    def required(self) -> bool:
        return self.model.spec.required

    def render(self, pod: Mapping[str, Any], namespace: str) -> Mapping[str, Any]:
        """The spec rendered for `pod` (itself when it has no templates). Raises `RenderError`."""
        if not self.templated:
            return self.spec
        context = pod_context(
            pod=pod, namespace=namespace, parameters=self.model.spec.parameters, policy_name=self.name
        )
        return check_rendered(render_tree(self.tree, context))


def check_rendered(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """What a template can break after validation: label values and images. Raises `RenderError`."""
    for key, value in (spec.get("labels") or {}).items():
        problem = label_value_problem(value)
        if problem:
            raise RenderError(f"label {key!r} rendered to {problem}")
    for group in ("initContainers", "sidecars", "containers"):
        for container in spec.get(group) or []:
            image = container.get("image", "")
            if len(image.split()) != 1 or image.strip() != image:
                raise RenderError(f"container {container['name']!r}: image rendered to {image!r}")
    return spec


# Fields added to the schema after its first release are hashed only when set, so that a new field
# does not change the hash of every policy that does not use it (which would make every injected
# pod look out of date).
HASHED_WHEN_SET = ("podVolumes",)


def content_hash(policy: InjectionPolicy) -> str:
    """A short, stable hash of what the policy injects (name + spec), recorded in the status annotation."""
    spec = policy.spec.model_dump(mode="json", by_alias=True)
    for key in HASHED_WHEN_SET:
        if not spec[key]:
            del spec[key]
    canonical = orjson.dumps({"name": policy.metadata.name, "spec": spec}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


# What a policy puts into a pod when it is created (its `ephemeral` rules wait for `kubectl debug`).
INJECTED_AT_CREATION = (
    "initContainers",
    "sidecars",
    "containers",
    "volumes",
    "volumeMounts",
    "env",
    "annotations",
    "labels",
    "imagePullSecrets",
)


def compile_policy(policy: InjectionPolicy, *, source: str) -> CompiledPolicy:
    """Pre-parse templates and hash the policy. Raises `RenderError` on a template syntax error."""
    raw = policy.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    compiled = compile_tree(raw, parameters=policy.spec.parameters)  # values: constants at load
    return CompiledPolicy(
        name=policy.metadata.name,
        source=source,
        model=policy,
        spec=MappingProxyType(compiled),
        tree=compiled,
        content_hash=content_hash(policy),
        templated=has_templates(compiled),
        creates=any(raw.get(key) for key in INJECTED_AT_CREATION),
        reads=template_reads(compiled) | match_reads(policy.spec.match),
    )


def _index_key(policy: InjectionPolicy) -> tuple[str, str] | None:
    """A key every pod matched by this policy must carry, to narrow the candidates per request."""
    match = policy.spec.match
    if match is None or match.is_empty():
        return None
    if match.annotations:
        return ("annotation", min(match.annotations))
    if match.labels.match_labels:
        return ("label", min(match.labels.match_labels))
    for requirement in match.labels.match_expressions:
        if requirement.operator in ("In", "Exists"):
            return ("label", requirement.key)
    return ("scan", "")


@dataclass(frozen=True, slots=True)
class PolicySet:
    """An immutable set of compiled policies, indexed for selection. Swapped whole, never edited."""

    by_name: Mapping[str, CompiledPolicy] = field(default_factory=dict)
    by_annotation_key: Mapping[str, tuple[CompiledPolicy, ...]] = field(default_factory=dict)
    by_label_key: Mapping[str, tuple[CompiledPolicy, ...]] = field(default_factory=dict)
    scan: tuple[CompiledPolicy, ...] = ()

    @classmethod
    def build(cls, policies: Iterable[CompiledPolicy]) -> PolicySet:
        by_name: dict[str, CompiledPolicy] = {}
        annotations: dict[str, list[CompiledPolicy]] = {}
        labels: dict[str, list[CompiledPolicy]] = {}
        scan: list[CompiledPolicy] = []
        for policy in sorted(policies, key=lambda p: p.name):
            by_name[policy.name] = policy
            key = _index_key(policy.model)
            if key is None:
                continue
            if key[0] == "annotation":
                annotations.setdefault(key[1], []).append(policy)
            elif key[0] == "label":
                labels.setdefault(key[1], []).append(policy)
            else:
                scan.append(policy)
        return cls(
            by_name=MappingProxyType(by_name),
            by_annotation_key=MappingProxyType({k: tuple(v) for k, v in annotations.items()}),
            by_label_key=MappingProxyType({k: tuple(v) for k, v in labels.items()}),
            scan=tuple(scan),
        )

    def __len__(self) -> int:
        return len(self.by_name)

    def match_candidates(
        self, annotations: Mapping[str, str], labels: Mapping[str, str]
    ) -> list[CompiledPolicy]:
        """Policies whose match rules *could* fit: indexed under a key the pod has, or not indexable."""
        found: dict[str, CompiledPolicy] = {}
        _collect(self.by_annotation_key, annotations, found)
        _collect(self.by_label_key, labels, found)
        for policy in self.scan:
            found[policy.name] = policy
        return [found[name] for name in sorted(found)]


def _collect(
    index: Mapping[str, tuple[CompiledPolicy, ...]], keys: Mapping[str, str], found: dict[str, CompiledPolicy]
) -> None:
    """Add the policies indexed under any of `keys`, iterating over whichever side is smaller."""
    if len(index) > len(keys):
        hits = (policy for key in keys for policy in index.get(key, ()))
    else:
        hits = (policy for key, policies in index.items() if key in keys for policy in policies)
    for policy in hits:
        found[policy.name] = policy


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND every matchExpression)."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        found = labels.get(requirement.key)
        if requirement.operator == "In" and (not present or found not in requirement.values):
            return False
        if requirement.operator == "NotIn" and present and found in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True
