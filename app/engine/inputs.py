"""Which pod values a policy's templates read, and the pod as the webhook saw it when it admitted it.

Templates may read the pod's `name`, `generateName`, `namespace`, `labels`, `annotations` and
`serviceAccount`. Some of these change after admission: the apiserver names a pod that had only
`generateName` (the pods of Deployments, Jobs and DaemonSets reach the webhook without a name, so
`pod.name` renders as the prefix), and later webhooks, CNI plugins, controllers and `kubectl
label|annotate` change labels and annotations. The namespace and the service account never change.

- `template_reads` finds, once when a policy is compiled, which of the changing values its templates
  read: `pod.name`, `pod.generateName`; for a map, the keys read by name (`pod.labels.app`,
  `pod.labels['app']`, `pod.labels.get('app', ...)`, `pod.labels.app is defined`), or all of it when
  it is used any other way (`pod.labels | length`, `pod.labels[params.key]`, `'x' in pod.labels`);
  `match_reads` adds the keys its `match` rules read.
- `admission_inputs` records those values, as the pod had them at admission, in the status
  annotation (`inputs`); `admission_view` rebuilds from them the pod the templates saw, so that the
  audit can render a live policy for the pod as it was admitted. The inputs only say which values to
  render with: whether a policy is injected is always decided by the pod's contents.

The webhook renders with the same rebuilt pod (`rendering_view`): a pod that comes back (a
reinvocation after other webhooks or the apiserver's plugins changed it, a re-created copy) is
rendered for the values it was first admitted with, so that a template reading a label its own policy
sets, or a map a later webhook adds to, gives the same answer twice; and the webhook and the audit
agree on what a pod should hold. The values are the pod's own (its author controls them anyway),
never code. Podgraft's own status annotation is never a template input: `without_status` hides it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes

from app.engine.podview import as_mapping, string_map, text
from app.engine.render import Template
from app.engine.status import read_inputs
from app.policy.model import Match

MAP_FIELDS = ("labels", "annotations")
DICT_METHODS = frozenset(["get", "keys", "values", "items"])
MAX_RECORDED_CHARS = 256  # a longer annotation value is recorded as a digest
GENERATED_SUFFIX = 5  # names.SimpleNameGenerator: generateName (cut to 58) + 5 random characters
MAX_PREFIX = 63 - GENERATED_SUFFIX
_GENERATED_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand alphanums
_PARSER = jinja2.Environment(autoescape=True)  # parses only (rendering is the sandbox's, in render)


@dataclass(frozen=True, slots=True)
class Reads:
    """The values of a pod that can change after admission and that templates read."""

    name: bool = False
    generate_name: bool = False
    labels: frozenset[str] = frozenset()
    annotations: frozenset[str] = frozenset()
    all_labels: bool = False
    all_annotations: bool = False

    def __bool__(self) -> bool:
        return self is not NOTHING and self != NOTHING

    def __or__(self, other: Reads) -> Reads:
        if other is NOTHING or other is self:  # the common case, at every admission: nothing to build
            return self
        if self is NOTHING:
            return other
        return Reads(
            name=self.name or other.name,
            generate_name=self.generate_name or other.generate_name,
            labels=self.labels | other.labels,
            annotations=self.annotations | other.annotations,
            all_labels=self.all_labels or other.all_labels,
            all_annotations=self.all_annotations or other.all_annotations,
        )

    def keys(self, field: str) -> tuple[bool, frozenset[str]]:
        """(all of it, the keys read by name) of `labels` or `annotations`."""
        if field == "labels":
            return self.all_labels, self.labels
        return self.all_annotations, self.annotations


NOTHING = Reads()
EVERYTHING = Reads(name=True, generate_name=True, all_labels=True, all_annotations=True)


def _constant_key(node: nodes.Node) -> str | None:
    """The string a `.attr` or `['key']` access names, if it is one."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def _map_read(field: str, parents: list[nodes.Node]) -> Reads:
    """What a use of `pod.labels` (or annotations) reads, from the nodes around it (innermost first)."""
    whole = Reads(all_labels=True) if field == "labels" else Reads(all_annotations=True)
    access = parents[0] if parents else None
    key = _constant_key(access) if access is not None else None
    if key is None:
        return whole
    if isinstance(access, nodes.Getattr) and key in DICT_METHODS:
        call = parents[1] if len(parents) > 1 else None
        if key != "get" or not isinstance(call, nodes.Call) or call.node is not access or not call.args:
            return whole
        first = call.args[0]
        if not (isinstance(first, nodes.Const) and isinstance(first.value, str)):
            return whole
        key = first.value
    return Reads(labels=frozenset([key])) if field == "labels" else Reads(annotations=frozenset([key]))


def _pod_read(pod: nodes.Name, parents: list[nodes.Node]) -> Reads:
    """What one use of the name `pod` reads, from the nodes around it (innermost first)."""
    access = parents[0] if parents else None
    if not isinstance(access, nodes.Getattr | nodes.Getitem) or access.node is not pod:
        return EVERYTHING  # `{{ pod }}`, `pod | length`, `x[pod]`: all of it
    field = _constant_key(access)
    if field is None:
        return EVERYTHING  # `pod[params.field]`
    if field == "name":
        return Reads(name=True)
    if field == "generateName":
        return Reads(generate_name=True)
    if field in MAP_FIELDS:
        return _map_read(field, parents[1:])
    return NOTHING  # namespace and serviceAccount never change (anything else fails at render)


def _walk(node: nodes.Node, parents: list[nodes.Node]) -> Iterator[tuple[nodes.Node, list[nodes.Node]]]:
    yield node, parents
    for child in node.iter_child_nodes():
        yield from _walk(child, [node, *parents])


def source_reads(source: str) -> Reads:
    """What one template string reads (see the module doc). A string that does not parse reads nothing
    (compiling the policy refuses it)."""
    try:
        tree = _PARSER.parse(source)
    except jinja2.TemplateSyntaxError:
        return NOTHING
    found = NOTHING
    for node, parents in _walk(tree, []):
        if isinstance(node, nodes.Name) and node.name == "pod" and node.ctx == "load":
            found |= _pod_read(node, parents)
    return found


def _templates(tree: Any) -> Iterator[Template]:
    if isinstance(tree, Template):
        yield tree
    elif isinstance(tree, Mapping):
        for value in tree.values():
            yield from _templates(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _templates(value)


def template_reads(spec: Mapping[str, Any]) -> Reads:
    """What the templates of a compiled policy spec read when a pod is created (the `ephemeral`
    rules render later, for `kubectl debug`, with the pod as it is then)."""
    found = NOTHING
    for key, value in spec.items():
        if key != "ephemeral":
            for template in _templates(value):
                found |= source_reads(template.source)
    return found


def match_reads(match: Match | None) -> Reads:
    """The labels and annotations a policy's `match` rules read (so that the audit selects the pod
    as the webhook did, when a label it matched on was removed later)."""
    if match is None:
        return NOTHING
    selector = match.labels
    labels = {*selector.match_labels, *(requirement.key for requirement in selector.match_expressions)}
    return Reads(labels=frozenset(labels), annotations=frozenset(match.annotations))


# --- the inputs recorded at admission, and the pod rebuilt from them -------------------------------


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


def _recorded(value: str | None) -> Any:
    if value is not None and len(value) > MAX_RECORDED_CHARS:
        return {"digest": _digest(value)}
    return value


def _map_inputs(values: Mapping[str, str], every: bool, keys: Iterable[str]) -> dict[str, Any]:
    wanted = sorted(values) if every else sorted(keys)
    return {key: _recorded(values.get(key)) for key in wanted}


def admission_inputs(pod: Mapping[str, Any], reads: Reads, *, status_key: str) -> dict[str, Any] | None:
    """The values `reads` names, as `pod` has them now (at admission), for the status annotation:
    `name`, `generateName`, and `labels`/`annotations` maps of key -> value (null: absent; a long
    value as `{"digest": ...}`), with `"*": true` in a map when all of it was read. None when the
    templates read nothing that can change."""
    if not reads:
        return None
    metadata = as_mapping(pod.get("metadata"))
    inputs: dict[str, Any] = {}
    if reads.name:
        inputs["name"] = text(metadata.get("name"))
    if reads.generate_name:
        inputs["generateName"] = text(metadata.get("generateName"))
    for field in MAP_FIELDS:
        every, keys = reads.keys(field)
        values = string_map(metadata.get(field))
        values.pop(status_key, None)
        if every or keys:
            recorded = _map_inputs(values, every, keys)
            inputs[field] = {"*": True, **recorded} if every else recorded
    return inputs


def without_status(pod: Mapping[str, Any], status_key: str) -> Mapping[str, Any]:
    """The pod without Podgraft's status annotation (itself when it has none)."""
    metadata = as_mapping(pod.get("metadata"))
    annotations = as_mapping(metadata.get("annotations"))
    if status_key not in annotations:
        return pod
    kept = {key: value for key, value in annotations.items() if key != status_key}
    return {**pod, "metadata": {**metadata, "annotations": kept}}


def generated_name(metadata: Mapping[str, Any]) -> bool:
    """Whether the apiserver made the pod's name from its `generateName` (as it does for every pod a
    controller creates): the prefix, cut to 58 characters, and 5 characters of its alphabet."""
    prefix, name = text(metadata.get("generateName")), text(metadata.get("name"))
    if not prefix:
        return False
    pattern = re.escape(prefix[:MAX_PREFIX]) + f"[{_GENERATED_CHARS}]{{{GENERATED_SUFFIX}}}"
    return re.fullmatch(pattern, name) is not None


@dataclass(frozen=True, slots=True)
class View:
    """The pod as its templates saw it at admission, and what could not be rebuilt."""

    pod: Mapping[str, Any]
    recorded: bool  # rebuilt from the status annotation's inputs (else: from the name alone)
    # (labels | annotations, key) of values recorded only as a digest that have changed since
    unknown: tuple[tuple[str, str], ...] = ()


def _rebuilt_map(
    current: Mapping[str, Any], recorded: Mapping[str, Any], field: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    every = recorded.get("*") is True
    rebuilt: dict[str, Any] = {} if every else dict(current)
    unknown: list[tuple[str, str]] = []
    for key, value in recorded.items():
        if key == "*" and every:
            continue
        if isinstance(value, str):
            rebuilt[key] = value
        elif isinstance(value, dict):  # a digest: the value is known only when it has not changed
            now = current.get(key)
            if isinstance(now, str) and _digest(now) == value.get("digest"):
                rebuilt[key] = now
            else:
                unknown.append((field, key))
                if isinstance(now, str):
                    rebuilt[key] = now
        else:
            rebuilt.pop(key, None)
    return rebuilt, unknown


def admission_view(pod: Mapping[str, Any], inputs: Mapping[str, Any] | None, *, status_key: str) -> View:
    """The pod as its templates saw it when it was admitted: the recorded `inputs` put back (see
    `admission_inputs`); without them (a pod admitted by an older Podgraft, or never injected: what a
    new pod from the same owner would look like), the name a controller-made pod had, which was none."""
    shown = without_status(pod, status_key)
    metadata = dict(as_mapping(shown.get("metadata")))
    if inputs is None:
        if not generated_name(metadata):
            return View(shown, recorded=False)
        metadata.pop("name", None)
        return View({**shown, "metadata": metadata}, recorded=False)
    unknown: list[tuple[str, str]] = []
    for field in ("name", "generateName"):
        value = inputs.get(field)
        if isinstance(value, str):
            if value:
                metadata[field] = value
            else:
                metadata.pop(field, None)
    for field in MAP_FIELDS:
        recorded = inputs.get(field)
        if isinstance(recorded, dict):
            rebuilt, missing = _rebuilt_map(as_mapping(metadata.get(field)), recorded, field)
            metadata[field] = rebuilt
            unknown += missing
    return View({**shown, "metadata": metadata}, recorded=True, unknown=tuple(unknown))


def rendering_view(pod: Mapping[str, Any], status_key: str) -> Mapping[str, Any]:
    """What the webhook renders policies for: the pod as first admitted when its status recorded
    inputs (see the module doc), else the pod itself; never showing the status annotation."""
    annotations = as_mapping(as_mapping(pod.get("metadata")).get("annotations"))
    return recorded_view(pod, read_inputs(annotations, status_key), status_key)


def recorded_view(
    pod: Mapping[str, Any], inputs: Mapping[str, Any] | None, status_key: str
) -> Mapping[str, Any]:
    """`rendering_view` for the `inputs` the pod's status recorded (read by the caller)."""
    if inputs is None:
        return without_status(pod, status_key)
    return admission_view(pod, inputs, status_key=status_key).pod
