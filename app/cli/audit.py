"""`podgraft audit`: which running pods miss an injection or run a stale policy version."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    err,
    load_policies,
    settings_from,
    warn,
    without_server_flags,
)

EXIT_AUDIT_FAILED = 2  # the audit could not run (API, files); 1 means something is stale or missing


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")


def _skip(text: str, at: int) -> int:
    """Past the white space at `at`."""
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _expect(text: str, at: int, allowed: str) -> int:
    """Past the white space and one of `allowed` (the one found is at the returned index - 1)."""
    at = _skip(text, at)
    if text[at : at + 1] not in tuple(allowed):
        raise json.JSONDecodeError(f"expected one of {allowed!r}", text, at)
    return at + 1


def _json_objects(text: str) -> Iterator[Any]:
    """The objects of a JSON document, decoded one at a time: a List's items (`kubectl get ... -o
    json`) are yielded as they are read, so a dump of many pods is never held as objects all at once.
    Any other document is yielded whole. Broken JSON raises `json.JSONDecodeError`."""
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        yield _DECODER.decode(text)
        return
    other: dict[str, Any] = {}
    listed = False
    at = _skip(text, at + 1)
    while text[at : at + 1] != "}":
        key, at = _DECODER.raw_decode(text, at)
        at = _skip(text, _expect(text, at, ":"))
        if key == "items" and text[at : at + 1] == "[":
            listed, at = True, _skip(text, at + 1)
            while text[at : at + 1] != "]":
                item, at = _DECODER.raw_decode(text, at)
                yield item
                at = _expect(text, at, ",]")
                if text[at - 1] == "]":
                    at -= 1
                at = _skip(text, at)
            at += 1
        else:
            other[key], at = _DECODER.raw_decode(text, at)
        at = _expect(text, at, ",}")
        if text[at - 1] == "}":
            at -= 1
        at = _skip(text, at)
    if not listed:
        yield other


def _file_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every object of a file's text: the items of Lists, decoded one at a time for JSON."""
    documents = _json_objects(text) if text.lstrip().startswith("{") else yaml.safe_load_all(text)
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "List" and "items" in document:
            yield from (item for item in document["items"] or [] if isinstance(item, dict))
        elif isinstance(document, dict):
            yield document


@dataclass(frozen=True, slots=True)
class _FileObjects:
    parents: dict[tuple[str, str, str], tuple[str, str]]
    namespaces: dict[str, dict[str, str]] | None  # labels, when the file holds Namespaces


def _owners_from_file(text: str) -> _FileObjects:
    """The owners of ReplicaSets and Jobs and the Namespaces' labels, from manifests or
    `kubectl get namespaces,replicasets,jobs,pods -A -o yaml|json` Lists (a first pass: the pods are
    read again, one at a time, by the audit)."""
    from app.audit.owners import parent_index

    by_kind: dict[str, list[dict[str, Any]]] = {"Namespace": [], "ReplicaSet": [], "Job": []}
    for item in _file_objects(text):
        if item.get("kind") in by_kind:
            by_kind[str(item["kind"])].append(item)
    namespaces = {
        str((ns.get("metadata") or {}).get("name")): dict((ns.get("metadata") or {}).get("labels") or {})
        for ns in by_kind["Namespace"]
    }
    parents = {**parent_index(by_kind["ReplicaSet"], "ReplicaSet"), **parent_index(by_kind["Job"], "Job")}
    return _FileObjects(parents, namespaces or None)


def cmd_audit(args: argparse.Namespace) -> int:
    from app.admission.engine import engine_config
    from app.audit import report
    from app.audit.owners import ParentIndex

    overrides = {"policy_namespaces": args.policy_namespaces} if args.policy_namespaces else {}
    settings = settings_from(args, **overrides)
    try:
        inventory = None
        if args.policies is None or args.file is None:  # the cluster is asked for what no file gives
            from app.cluster.client import context_namespace, load_configuration
            from app.cluster.discovery import discover_version
            from app.cluster.inventory import Inventory

            configuration = load_configuration(settings.kubeconfig)
            inventory = Inventory(configuration, warn)
            if "kubernetes_version" not in settings.model_fields_set:
                version = discover_version(configuration, deadline_seconds=10)
                settings = settings.model_copy(update={"kubernetes_version": version})
        if args.policies is not None:
            store, errors = load_policies(args.policies, max_bytes=settings.max_policy_bytes)
            policies = store.current()
        else:
            assert inventory is not None
            policies, errors = inventory.policies(
                settings.watched_policy_namespaces(),
                settings.policy_label,
                max_bytes=settings.max_policy_bytes,
            )
        for key, message in sorted(errors.items()):
            warn(f"policy source {key} ignored: {message}")
        labels: Mapping[str, Mapping[str, str]] | None = None
        pods: Iterable[Mapping[str, Any]]
        parents: ParentIndex
        if args.file is not None:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
            found = _owners_from_file(text)
            pods = (item for item in _file_objects(text) if item.get("kind") == "Pod")
            parents, labels = found.parents, found.namespaces
        else:
            assert inventory is not None
            namespace = (
                None if args.all_namespaces else args.namespace or context_namespace(settings.kubeconfig)
            )
            pods, parents = inventory.pods(namespace, args.selector), inventory.parents(namespace)
            labels = inventory.namespace_labels()
        audited = report.audit_pods(
            pods,
            parents=parents,
            namespace_labels=(lambda _namespace: None) if labels is None else labels.get,
            policies=policies,
            config=engine_config(settings),
        )
    except Exception as exc:  # an API, kubeconfig or file error: one line, not a traceback
        err(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
        return EXIT_AUDIT_FAILED
    audited = report.only_policy(audited, args.policy)
    sys.stdout.write(
        report.restart_plan(audited) if args.restart_plan else report.render(audited, args.output)
    )
    return EXIT_ERROR if report.needs_restart(audited) else EXIT_OK


def add_parser(commands: Any) -> None:
    audit = commands.add_parser(
        "audit",
        help="which pods run a stale policy version or miss an injection (exit 1 if any)",
        description="Audit running pods with the webhook's engine: per pod and policy, current, stale, "
        "missing, refused or orphaned. Exit 0 when nothing is stale or missing, 1 when something is, "
        "2 when the audit could not run.",
    )
    scope = audit.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="audit this namespace (default: the kubeconfig context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="audit every namespace")
    audit.add_argument("-l", "--selector", help="only pods with these labels (a label selector)")
    audit.add_argument("--policy", help="only this policy's states")
    audit.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    audit.add_argument(
        "--restart-plan", action="store_true", help="print the kubectl commands that bring pods current"
    )
    audit.add_argument("--kubeconfig", type=Path, help="default: in-cluster, then ~/.kube/config")
    audit.add_argument("--policies", type=Path, help="policy directory instead of the cluster's ConfigMaps")
    audit.add_argument(
        "--policy-namespaces",
        type=lambda value: [v.strip() for v in value.split(",") if v.strip()],
        help="namespaces of the policy ConfigMaps in force (default: PODGRAFT_POLICY_NAMESPACES or podgraft)",
    )
    audit.add_argument(
        "-f", "--file", help="audit the pods in a file (`kubectl get pods,rs,jobs -A -o json`)"
    )
    audit.add_argument("--kubernetes-version", help="what `sidecarMode: auto` compares with (default: asked)")
    audit.set_defaults(func=cmd_audit, sidecar_mode=None)
    without_server_flags(audit)
