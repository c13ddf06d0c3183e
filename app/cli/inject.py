"""`podgraft inject`: the webhook's engine on manifests, offline (Pods and the pod templates of workloads)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import jsonpatch
import yaml

from app.cli.common import EXIT_ERROR, EXIT_OK, engine_flags, err, load_policies, settings_from
from app.cli.files import NESTED, FileError, Source, is_list
from app.engine.config import EngineConfig
from app.engine.inject import InjectionResult, inject_pod
from app.sources.store import PolicyStore

WORKLOAD_TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def _pod_template(document: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]] | str:
    """The pod (or pod template) inside a manifest, and where it sits; for other documents, why none."""
    kind = document.get("kind")
    if kind == "Pod":
        if document.get("apiVersion") == "v1":
            return document, ()
        return f"apiVersion {document.get('apiVersion')!r} is not a Pod's (v1)"
    path = WORKLOAD_TEMPLATE_PATHS.get(str(kind))
    if path is None:
        return "not a Pod or a workload with a pod template"
    node: Any = document
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return (node, path) if isinstance(node, dict) else f"no pod template at {'.'.join(path)}"


def _name(document: dict[str, Any]) -> str:
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return f"{document.get('kind')}/{metadata.get('name') or metadata.get('generateName') or '?'}"


def _as_pod(document: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    metadata = dict(template.get("metadata") or {})
    if not metadata.get("name"):
        metadata.setdefault("generateName", f"{(document.get('metadata') or {}).get('name', 'pod')}-")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec") or {}}


def _explain(out: TextIO, title: str, result: InjectionResult, *, opt_in_checked: bool) -> None:
    out.write(f"{title}:\n")
    if not opt_in_checked and not result.skip_reason:
        out.write("  (the namespace opt-in was not checked: no --namespace-label given)\n")
    if result.skip_reason:
        out.write(f"  skipped: {result.skip_reason}\n")
    for decision in result.decisions:
        out.write(f"  {'+' if decision.applied else '-'} {decision.policy}: {decision.reason}\n")
    for warning in result.warnings:
        out.write(f"  ! {warning}\n")
    if result.denial:
        out.write(f"  x denied: {result.denial}\n")


def inject_documents(
    documents: list[Any],
    *,
    store: PolicyStore,
    config: EngineConfig,
    namespace: str,
    namespace_labels: Mapping[str, str] | None,
    explain: TextIO | None,
) -> tuple[list[Any], list[str]]:
    """Run every Pod and pod template through the webhook's engine, the items of a `kind: List` too.
    Returns documents and denials; `explain` also names what passed through untouched, and why."""
    output: list[Any] = []
    denials: list[str] = []
    for number, document in enumerate(documents, start=1):
        if is_list(document):
            items, more = inject_documents(
                document["items"],
                store=store,
                config=config,
                namespace=namespace,
                namespace_labels=namespace_labels,
                explain=explain,
            )
            output.append({**document, "items": items})
            denials += more
            continue
        found = (
            _pod_template(document)
            if isinstance(document, dict)
            else f"a {type(document).__name__}, not an object"
        )
        if isinstance(found, str):
            if explain is not None:
                what = _name(document) if isinstance(document, dict) else f"document {number}"
                explain.write(f"{what}: passed through untouched ({found})\n")
            output.append(document)
            continue
        template, path = found
        pod = _as_pod(document, template) if path else template
        meta = document.get("metadata") or {}
        ns = meta.get("namespace") or namespace
        result = inject_pod(
            pod,
            namespace=ns,
            namespace_labels=namespace_labels,
            policies=store.current(),
            config=config,
            explain=explain is not None,
        )
        title = f"{_name(document)} (namespace {ns})"
        if explain is not None:
            _explain(explain, title, result, opt_in_checked=namespace_labels is not None)
        if result.denial:
            denials.append(f"{title}: {result.denial}")
        if not result.patch or result.denial:
            output.append(document)
            continue
        # The very patch the webhook would return, applied to the manifest's pod.
        output.append(_put_back(document, template, path, jsonpatch.apply_patch(pod, result.patch)))
    return output, denials


def _put_back(
    document: dict[str, Any], template: dict[str, Any], path: tuple[str, ...], mutated: Mapping[str, Any]
) -> dict[str, Any]:
    if not path:
        return dict(mutated)
    metadata = dict(mutated.get("metadata") or {})
    if not (template.get("metadata") or {}).get("generateName"):
        metadata.pop("generateName", None)
    new_template = {**template, "metadata": metadata, "spec": mutated.get("spec")}
    result = dict(document)
    node = result
    for key in path[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[path[-1]] = new_template
    return result


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """libyaml's safe dumper when present; never an anchor: every object is written where it is."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _labels(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--namespace-label expects KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


def cmd_inject(args: argparse.Namespace) -> int:
    from app.admission.engine import engine_config

    settings = settings_from(args)
    try:
        store, errors = load_policies(settings.policy_dir, max_bytes=settings.max_policy_bytes)
        labels = _labels(args.namespace_label) if args.namespace_label else None
        source = Source(args.file)
        documents = source.documents()
    except (OSError, FileError, ValueError) as exc:  # a FileError names the file, and the line
        err(f"error: {exc}")
        return EXIT_ERROR
    for key, message in sorted(errors.items()):
        err(f"warning: policy file {settings.policy_dir / key} ignored: {message}")
    try:
        output, denials = inject_documents(
            documents,
            store=store,
            config=engine_config(settings),
            namespace=args.namespace,
            namespace_labels=labels,
            explain=sys.stderr if args.explain else None,
        )
        text = yaml.dump_all(output, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    except RecursionError:
        err(f"error: {source.name}: {NESTED}")
        return EXIT_ERROR
    sys.stdout.write(text)
    for denial in denials:
        err(f"denied: {denial}")
    return EXIT_ERROR if denials else EXIT_OK


def add_parser(commands: Any) -> None:
    inject = commands.add_parser("inject", help="apply policies to manifests offline (a webhook dry run)")
    engine_flags(inject)
    inject.add_argument("-f", "--file", required=True, help="manifest file, or - for stdin")
    inject.add_argument("-n", "--namespace", default="default", help="namespace for manifests without one")
    inject.add_argument(
        "--namespace-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="labels of the namespace (enables opt-in and namespaceSelector checks)",
    )
    inject.add_argument(
        "--explain",
        action="store_true",
        help="say on stderr, per pod, why each policy applied or not and which containers it added",
    )
    inject.set_defaults(func=cmd_inject)
