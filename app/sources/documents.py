"""One source text -> validated, compiled policies, and every problem found on the way.

A *source key* is one unit a source reports on its own: a file in directory mode, one data key of
one ConfigMap in cluster mode. Its text is decoded safely (size-limited, no aliases, no tags), and
each document is checked in full: against the `InjectionPolicy` schema, what it injects against the
Kubernetes schema of the cluster's version (`app.sources.kubeschema`), its templates compiled by
the engine (`compile_policy`: every refused construct named), a policy name defined twice. Each
finding is a `Problem` naming document, policy and field; errors keep the source from being used
(a source is used whole or not at all), warnings do not. `podgraft policy validate` runs the very
same `check_source` on every file and ConfigMap key it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import yaml

from app.engine.inputs import source_reads
from app.engine.policyset import CompiledPolicy, compile_policy
from app.engine.render import RenderError, TemplateProblems, compile_tree, render_tree
from app.policy.messages import Problem
from app.policy.model import InjectionPolicy, PolicyError, parse_policy
from app.settings import Settings
from app.sources.kubeschema import check_spec

MAX_DOCUMENTS = 256
DEFAULT_KUBERNETES_VERSION: str = Settings.model_fields["kubernetes_version"].default

SourceText = str | PolicyError | None  # a source's text, an error reading it, or None: removed


def configmap_source_key(namespace: str, name: str, key: str) -> str:
    """The source key of one data key of one ConfigMap (`configmap podgraft/log-shipper key log.yaml`)."""
    return f"configmap {namespace}/{name} key {key}" if namespace else f"configmap {name} key {key}"


def read_source(path: Path) -> SourceText:
    """A file's text, or the reason it cannot be read (a missing file, bytes that are not UTF-8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return PolicyError(f"cannot read the file: {exc.strerror or exc}")
    return decode_source(data)


def decode_source(data: bytes) -> str | PolicyError:
    """UTF-8 text, or where the first byte that is not UTF-8 is."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return PolicyError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}); "
            "policies are UTF-8 YAML or JSON"
        )


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (YAML bombs) outright."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                "while loading a policy",
                None,
                "YAML aliases (*anchor) are not allowed in policies",
                event.start_mark,
            )
        return super().compose_node(parent, index)  # type: ignore[arg-type]


def _yaml_error(exc: yaml.YAMLError) -> str:
    """`line 3, column 8: mapping values are not allowed here` (PyYAML's words, without its snippet)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context and exc.context != "while loading a policy" else ""
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"
    return str(exc).replace("\n", " ")


def load_documents(text: str, *, max_bytes: int, max_documents: int = MAX_DOCUMENTS) -> list[object]:
    """Decode one or more YAML (or JSON) documents safely: size-limited, no aliases, no tags."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise PolicyError(f"{size} bytes is over the {max_bytes}-byte limit for a policy source")
    json_error = None
    if text.lstrip()[:1] in ("{", "["):
        try:  # a JSON document: parse it as JSON (YAML refuses some characters JSON allows)
            document = orjson.loads(text)
            return [document] if document is not None else []
        except orjson.JSONDecodeError as exc:
            json_error = str(exc)  # or YAML flow style: the YAML parser decides
    try:
        documents = [d for d in yaml.load_all(text, Loader=_NoAliasLoader) if d is not None]
    except yaml.YAMLError as exc:
        if json_error is not None:
            raise PolicyError(f"not valid JSON: {json_error}") from None
        raise PolicyError(f"not valid YAML: {_yaml_error(exc)}") from None
    except RecursionError:
        raise PolicyError("not valid YAML: nested too deeply") from None
    if len(documents) > max_documents:
        raise PolicyError(f"{len(documents)} documents; at most {max_documents} per source")
    return documents


class SourceError(PolicyError):
    """Every error of one source, each naming its document; `; `-joined in `str()`."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(problem) for problem in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SourceReport:
    """What one source key holds: the policies of documents without errors, and every problem."""

    source: str
    policies: list[CompiledPolicy] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]


def check_source(
    key: str, text: str, *, max_bytes: int, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
) -> SourceReport:
    """Every problem of one source key (its text, then each document), and its usable policies."""
    try:
        documents = load_documents(text, max_bytes=max_bytes)
    except PolicyError as exc:
        return SourceReport(key, problems=[Problem(str(exc), source=key)])
    return check_documents(enumerate(documents, start=1), source=key, kubernetes_version=kubernetes_version)


def compile_source(
    key: str, text: str, *, max_bytes: int, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
) -> list[CompiledPolicy]:
    """Parse, validate and compile every policy of one source key. Raises `SourceError` listing every
    error (a source is used whole or not at all)."""
    report = check_source(key, text, max_bytes=max_bytes, kubernetes_version=kubernetes_version)
    if report.errors:
        raise SourceError(report.errors)
    return report.policies


def check_documents(
    documents: Iterable[tuple[int, object]], *, source: str, kubernetes_version: str
) -> SourceReport:
    """Check numbered documents as one source: each on its own, then the names they share."""
    report = SourceReport(source)
    first: dict[str, int] = {}
    for number, document in documents:
        compiled, problems = _check_document(document, source=source, kubernetes_version=kubernetes_version)
        for problem in problems:
            report.problems.append(replace(problem, document=number))
        if compiled is None:
            continue
        if compiled.name in first:
            report.problems.append(
                Problem(
                    f"policy {compiled.name!r} is already defined by document {first[compiled.name]}",
                    source=source,
                    document=number,
                )
            )
            continue
        first[compiled.name] = number
        if not any(p.severity == "error" for p in problems):
            report.policies.append(compiled)
    if report.errors:
        report.policies.clear()  # a source is used whole or not at all
    return report


def _check_document(
    document: object, *, source: str, kubernetes_version: str
) -> tuple[CompiledPolicy | None, list[Problem]]:
    """One document's policy (None when it has an error) and every problem of it."""
    try:
        policy = parse_policy(document)
    except PolicyError as exc:
        problems = _policy_problems(exc, source)
        spec = document.get("spec") if isinstance(document, dict) else None
        if isinstance(spec, Mapping):  # what the model accepted may still fail the Kubernetes schema
            reported = {problem.field for problem in problems}
            for path, message in check_spec(spec, kubernetes_version=kubernetes_version):
                if path not in reported:
                    problems.append(Problem(message, source, policy=exc.policy, field=path))
        return None, problems
    name = policy.metadata.name
    spec = policy.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    problems = [
        Problem(message, source, policy=name, field=path)
        for path, message in check_spec(spec, kubernetes_version=kubernetes_version)
    ]
    compiled: CompiledPolicy | None = None
    try:
        compiled = compile_policy(policy, source=source)
    except TemplateProblems as exc:
        problems += [Problem(message, source, policy=name, field=path) for path, message in exc.problems]
    except RenderError as exc:
        problems.append(Problem(str(exc), source, policy=name))
    warnings = _pod_name_warnings(spec, source=source, policy=name)
    warnings += _risk_warnings(policy, spec, source=source)
    return compiled, problems + warnings


def _policy_problems(exc: PolicyError, source: str) -> list[Problem]:
    if exc.fields:
        return [Problem(message, source, policy=exc.policy, field=path) for path, message in exc.fields]
    message = str(exc).removeprefix(f"policy {exc.policy!r}: ") if exc.policy else str(exc)
    return [Problem(message, source, policy=exc.policy)]


# Env lists injected when a pod is created: the pod's own containers', each helper's. (Not
# `ephemeral.env`: `kubectl debug` adds its containers to a pod that has its name.)
def _env_lists(spec: Mapping[str, Any]) -> Iterable[tuple[str, Sequence[Any]]]:
    yield "spec.env", spec.get("env") or []
    for group in ("initContainers", "sidecars", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            yield f"spec.{group}[{index}].env", container.get("env") or []


POD_NAME_WARNING = (
    "renders pod.name: a pod made by a controller has no name yet at admission, so every replica gets "
    "its generateName prefix (and `podgraft inject` bakes in a StatefulSet's name); use "
    "valueFrom: {fieldRef: {fieldPath: metadata.name}}"
)


def _pod_name_warnings(spec: Mapping[str, Any], *, source: str, policy: str) -> list[Problem]:
    """A warning for each env value whose template reads the pod's own name."""
    found = []
    for where, env in _env_lists(spec):
        for index, item in enumerate(env):
            value = item.get("value") if isinstance(item, Mapping) else None
            if isinstance(value, str) and source_reads(value).name:
                found.append(
                    Problem(
                        POD_NAME_WARNING,
                        source,
                        policy=policy,
                        field=f"{where}[{index}].value",
                        severity="warning",
                    )
                )
    return found


# --- legal but risky: warnings ---------------------------------------------------------------------

UNSCOPED_REQUIRED = {
    True: "required, without a namespaceSelector: the pods it matches in every opted-in namespace get "
    "it, and those it cannot be injected into are refused; scope it with spec.namespaceSelector",
    False: "required, without a namespaceSelector: a pod of any opted-in namespace may ask for it, and "
    "is refused when it cannot be injected; scope it with spec.namespaceSelector",
}


def _risk_warnings(policy: InjectionPolicy, spec: Mapping[str, Any], *, source: str) -> list[Problem]:
    """What works but will hurt: a required policy any namespace gets, an image that is not pinned."""
    name = policy.metadata.name
    found = []
    if policy.spec.required and policy.spec.namespace_selector is None:
        matched = policy.spec.match is not None and not policy.spec.match.is_empty()
        message = UNSCOPED_REQUIRED[matched]
        found.append(Problem(message, source, policy=name, field="spec.required", severity="warning"))
    parameters = policy.spec.parameters
    for group in ("initContainers", "sidecars", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            image = _constant_image(container.get("image", ""), parameters, name)
            problem = None if image is None else image_pin_problem(image)
            if problem:
                where = f"spec.{group}[{index}].image"
                found.append(Problem(problem, source, policy=name, field=where, severity="warning"))
    return found


def _constant_image(image: str, parameters: Mapping[str, Any], policy: str) -> str | None:
    """The image as every pod gets it: the text, or what its template renders from the policy's
    parameters alone; None when the pod decides (the template reads `pod`) or it cannot render."""
    try:
        compiled = compile_tree(image, parameters=parameters)
        rendered = render_tree(compiled, {"params": dict(parameters), "policy": {"name": policy}})
    except RenderError:  # a template that does not compile is an error of its own
        return None
    return rendered if isinstance(rendered, str) else None


def image_pin_problem(image: str) -> str | None:
    """Why an image reference is not pinned (no tag, or `:latest`, which moves), or None. A digest
    pins it; a tag other than `latest` is taken as a pin (tags can move, but that is a choice)."""
    if "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]  # a registry's port (registry:5000/app) is not a tag
    tag = last.partition(":")[2]
    unpinned = "each node runs whatever it is when the node pulls it; pin a tag or a digest"
    if not tag:
        return f"image {image!r} has no tag or digest, so it is :latest: {unpinned}"
    if tag == "latest":
        return f"image {image!r} is :latest, which moves: {unpinned}"
    return None
