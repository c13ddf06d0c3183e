"""Policies as they ship, checked as Podgraft will load them: `podgraft policy validate`'s check.

A file holds bare `InjectionPolicy` documents (what a policy directory serves in local mode), or
Kubernetes manifests: ConfigMaps labelled `podgraft.io/policy=true` (cluster mode), `kind: List`s of
them (`kubectl get -o yaml`), a Helm-rendered stream (`helm template`). A file of bare policies is
one source, checked as the directory source loads it; each data key of each policy ConfigMap is one
source, checked as the ConfigMap source loads it (`check_source`); `check_text` reads a file so.
ConfigMaps without the label and objects of other kinds are noted, not checked: Podgraft never
reads them.

`validate_configmap` (`inspect_configmap`, with the policies) is the check of one ConfigMap object,
pure: what the validating webhook on policy ConfigMaps (`app.admission.policies`) runs on CREATE and
UPDATE to refuse a policy that would never go live.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.engine.podview import as_mapping
from app.engine.policyset import CompiledPolicy
from app.policy.messages import Problem
from app.policy.model import PolicyError
from app.settings import Settings
from app.sources.documents import (
    DEFAULT_KUBERNETES_VERSION,
    SourceReport,
    SourceText,
    check_documents,
    check_source,
    configmap_source_key,
    load_documents,
)

DEFAULT_POLICY_LABEL: str = Settings.model_fields["policy_label"].default
DEFAULT_MAX_BYTES: int = Settings.model_fields["max_policy_bytes"].default
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # a whole `kubectl get configmaps -o yaml` or `helm template` output
MAX_MANIFEST_DOCUMENTS = 10_000


def is_policy_document(document: object) -> bool:
    """Whether a document is meant as a policy (so a broken one is told what a policy needs), rather
    than a Kubernetes object of another kind."""
    if not isinstance(document, Mapping) or "kind" not in document or "apiVersion" not in document:
        return True
    return document["kind"] == "InjectionPolicy" or str(document["apiVersion"]).startswith("podgraft.io/")


def check_configmap(
    obj: Mapping[str, Any],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    policy_label: str = DEFAULT_POLICY_LABEL,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[SourceReport]:
    """One report per data key of a policy ConfigMap, checked as cluster mode loads it; a note
    (a report without policies) for a ConfigMap Podgraft does not read."""
    metadata = as_mapping(obj.get("metadata"))
    namespace, name = str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
    where = f"configmap {namespace}/{name}" if namespace else f"configmap {name}"
    if as_mapping(metadata.get("labels")).get(policy_label) != "true":
        note = f"not labelled {policy_label}=true, so Podgraft does not read it; skipped"
        return [SourceReport(where, problems=[Problem(note, where, severity="note")])]
    data = obj.get("data")
    reports: list[SourceReport] = []
    problems: list[Problem] = []
    if data is not None and not isinstance(data, Mapping):
        problems.append(Problem("data must be a mapping of keys to policy texts", where))
    binary = obj.get("binaryData")
    if isinstance(binary, Mapping) and binary:
        keys = ", ".join(sorted(map(str, binary)))
        problems.append(
            Problem(f"binaryData is never read (policies are text): {keys}", where, severity="warning")
        )
    if isinstance(data, Mapping):
        for key, text in data.items():
            source = configmap_source_key(namespace, name, str(key))
            if not isinstance(text, str):
                problem = Problem(
                    "a data value must be a string (the apiserver refuses this ConfigMap)", source
                )
                reports.append(SourceReport(source, problems=[problem]))
                continue
            reports.append(
                check_source(source, text, max_bytes=max_bytes, kubernetes_version=kubernetes_version)
            )
    if not reports and not problems:
        problems.append(Problem("holds no policy (no data keys)", where, severity="warning"))
    if problems:
        reports.insert(0, SourceReport(where, problems=problems))
    return reports


@dataclass(frozen=True, slots=True)
class ConfigMapCheck:
    """What one ConfigMap object holds: every problem, and the policies that would go live."""

    problems: list[Problem]
    policies: list[CompiledPolicy]

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]


def inspect_configmap(
    obj: Mapping[str, Any],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    policy_label: str = DEFAULT_POLICY_LABEL,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ConfigMapCheck:
    """Every problem of one ConfigMap object (each data key checked as cluster mode loads it, then a
    policy name that two of its keys define), and the policies of the keys that load."""
    reports = check_configmap(
        obj, kubernetes_version=kubernetes_version, policy_label=policy_label, max_bytes=max_bytes
    )
    kept, duplicates = first_definitions(
        [(report.source, policy) for report in reports for policy in report.policies]
    )
    problems = [problem for report in reports for problem in report.problems] + duplicates
    return ConfigMapCheck(problems, [policy for _, policy in kept])


def validate_configmap(
    obj: Mapping[str, Any],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    policy_label: str = DEFAULT_POLICY_LABEL,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Problem]:
    """Every problem of one ConfigMap object: errors (a key Podgraft would refuse, keeping its last
    good version in force), warnings and notes, each naming ConfigMap, key, document and field."""
    return inspect_configmap(
        obj, kubernetes_version=kubernetes_version, policy_label=policy_label, max_bytes=max_bytes
    ).problems


def first_definitions(
    policies: Iterable[tuple[str, CompiledPolicy]],
) -> tuple[list[tuple[str, CompiledPolicy]], list[Problem]]:
    """A policy name defined by two sources (files, ConfigMap keys) is an error, the webhook would
    keep one of them only: the first definition of each name (with where it is), and a problem
    (whose source is where) for each later one."""
    first: dict[str, str] = {}
    kept: list[tuple[str, CompiledPolicy]] = []
    problems: list[Problem] = []
    for where, policy in policies:
        if policy.name in first:
            problems.append(
                Problem(f"policy {policy.name!r} is already defined by {first[policy.name]}", where)
            )
            continue
        first[policy.name] = where
        kept.append((where, policy))
    return kept, problems


def validate_documents(
    documents: list[object],
    *,
    source: str,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    policy_label: str = DEFAULT_POLICY_LABEL,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[SourceReport]:
    """The decoded documents of one file of manifests: its bare policies as one source (`source`),
    each policy ConfigMap's keys (also inside Lists), and a note naming the kinds skipped."""
    bare: list[tuple[int, object]] = []
    reports: list[SourceReport] = []
    skipped: Counter[str] = Counter()
    for number, document in enumerate(documents, start=1):
        for item in _objects(document):
            if is_policy_document(item):
                bare.append((number, item))
            elif item.get("kind") == "ConfigMap" and item.get("apiVersion") == "v1":
                reports += check_configmap(
                    item,
                    kubernetes_version=kubernetes_version,
                    policy_label=policy_label,
                    max_bytes=max_bytes,
                )
            else:
                skipped[str(item.get("kind"))] += 1
    if bare:
        reports.insert(0, check_documents(bare, source=source, kubernetes_version=kubernetes_version))
    if skipped:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(skipped.items()))
        reports.append(
            SourceReport(
                source, problems=[Problem(f"not policies, skipped: {kinds}", source, severity="note")]
            )
        )
    return reports


def _objects(document: object) -> Iterable[Any]:
    """A document, or the items of a `kind: List` (`kubectl get -o yaml`), Lists in Lists included."""
    if (
        isinstance(document, Mapping)
        and str(document.get("kind", "")).endswith("List")
        and not is_policy_document(document)
    ):
        items = document.get("items")
        for item in items if isinstance(items, list) else []:
            yield from _objects(item)
        return
    yield document


def check_text(
    text: SourceText,
    *,
    source: str,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    policy_label: str = DEFAULT_POLICY_LABEL,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[SourceReport]:
    """One file's text (or why it could not be read), named `source` in every problem: bare
    policies checked exactly as the directory source loads the file; manifests as cluster mode
    loads their ConfigMaps."""
    if isinstance(text, PolicyError) or text is None:
        return [SourceReport(source, problems=[Problem(str(text), source)])]
    try:
        documents = load_documents(text, max_bytes=MAX_MANIFEST_BYTES, max_documents=MAX_MANIFEST_DOCUMENTS)
    except PolicyError as exc:
        return [SourceReport(source, problems=[Problem(str(exc), source)])]
    if all(is_policy_document(document) for document in documents):
        return [check_source(source, text, max_bytes=max_bytes, kubernetes_version=kubernetes_version)]
    return validate_documents(
        documents,
        source=source,
        kubernetes_version=kubernetes_version,
        policy_label=policy_label,
        max_bytes=max_bytes,
    )
