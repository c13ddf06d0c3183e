"""`podgraft serve | inject | policy validate | certs generate | certs patch-ca-bundle`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import jsonpatch
import yaml

from app.engine.config import EngineConfig
from app.engine.inject import InjectionResult, inject_pod
from app.policy.model import PolicyError
from app.settings import Settings
from app.sources.directory import read_directory
from app.sources.documents import SourceError, SourceText, compile_source
from app.sources.store import PolicyStore

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
WORKLOAD_TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")


def _settings(args: argparse.Namespace, **fixed: Any) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    flags = {
        "host": args.host,
        "port": args.port,
        "policy_dir": args.policies,
        "policy_source": args.policy_source,
        "tls_cert_file": args.tls_cert,
        "tls_key_file": args.tls_key,
        "tls_client_ca_file": args.tls_client_ca,
        "sidecar_mode": args.sidecar_mode,
        "kubernetes_version": args.kubernetes_version,
        "log_level": args.log_level,
        "workers": getattr(args, "workers", None),
        "kubeconfig": getattr(args, "kubeconfig", None),
    }
    return Settings(**{k: v for k, v in {**flags, **fixed}.items() if v is not None})


# --- serve ----------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from app.serve import serve

    return serve(_settings(args))


# --- policy validate ------------------------------------------------------------------------------


def load_policies(directory: Path, *, max_bytes: int) -> tuple[PolicyStore, dict[str, str]]:
    store = PolicyStore(max_bytes=max_bytes)
    errors = store.replace_all(read_directory(directory))
    return store, errors


def _policy_texts(path: Path) -> tuple[Path, dict[str, SourceText]]:
    """The policy sources under a directory, or one file; and the base their keys are relative to."""
    if path.is_dir():
        return path, read_directory(path)
    if path.is_file():
        try:
            return path.parent, {path.name: path.read_text(encoding="utf-8")}
        except (OSError, UnicodeDecodeError) as exc:
            return path.parent, {path.name: PolicyError(f"cannot read the file: {exc}")}
    raise FileNotFoundError(f"{path}: no such file or directory")


def _problems(key: str, text: SourceText, message: str, max_bytes: int) -> list[str]:
    """One line per problem of a rejected source (the store keeps them as one message)."""
    if isinstance(text, str):
        try:
            compile_source(key, text, max_bytes=max_bytes)
        except SourceError as exc:
            return exc.problems
        except PolicyError:
            pass
    return [message]


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    max_bytes = Settings().max_policy_bytes
    for target in args.paths:
        try:
            base, texts = _policy_texts(Path(target))
        except FileNotFoundError as exc:
            _err(f"error: {exc}")
            failed = True
            continue
        store = PolicyStore(max_bytes=max_bytes)
        errors = store.replace_all(texts)
        for key, message in sorted(errors.items()):
            for problem in _problems(key, texts[key], message, max_bytes):
                _err(f"{base / key}: {problem}")
            failed = True
        for name, policy in sorted(store.current().by_name.items()):
            sys.stdout.write(f"ok  {name}  ({base / policy.source}, hash {policy.content_hash})\n")
    return EXIT_ERROR if failed else EXIT_OK


# --- inject ---------------------------------------------------------------------------------------


def _pod_template(document: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """The pod (or pod template) inside a manifest, and where it sits; None for other kinds."""
    if document.get("kind") == "Pod" and document.get("apiVersion") == "v1":
        return document, ()
    path = WORKLOAD_TEMPLATE_PATHS.get(str(document.get("kind")))
    if path is None:
        return None
    node: Any = document
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return (node, path) if isinstance(node, dict) else None


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
    """Run every Pod and pod template through the webhook's engine. Returns documents and denials."""
    output: list[Any] = []
    denials: list[str] = []
    for document in documents:
        found = _pod_template(document) if isinstance(document, dict) else None
        if found is None:
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
        title = (
            f"{document.get('kind')}/{meta.get('name') or meta.get('generateName') or '?'} (namespace {ns})"
        )
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


def _read_manifests(source: str) -> Iterator[Any]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    yield from (d for d in yaml.safe_load_all(text) if d is not None)


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

    settings = _settings(args)
    try:
        store, errors = load_policies(settings.policy_dir, max_bytes=settings.max_policy_bytes)
        documents = list(_read_manifests(args.file))
        labels = _labels(args.namespace_label) if args.namespace_label else None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        _err(f"error: {exc}")
        return EXIT_ERROR
    for key, message in sorted(errors.items()):
        _err(f"warning: policy file {key} ignored: {message}")
    output, denials = inject_documents(
        documents,
        store=store,
        config=engine_config(settings),
        namespace=args.namespace,
        namespace_labels=labels,
        explain=sys.stderr if args.explain else None,
    )
    yaml.safe_dump_all(output, sys.stdout, sort_keys=False, default_flow_style=False)
    for denial in denials:
        _err(f"denied: {denial}")
    return EXIT_ERROR if denials else EXIT_OK


# --- audit ----------------------------------------------------------------------------------------

EXIT_AUDIT_FAILED = 2  # the audit could not run (API, files); 1 means something is stale or missing


def _warn(message: str) -> None:
    _err(f"warning: {message}")


@dataclass(frozen=True, slots=True)
class _FileObjects:
    pods: list[dict[str, Any]]
    parents: dict[tuple[str, str, str], tuple[str, str]]
    namespaces: dict[str, dict[str, str]] | None  # labels, when the file holds Namespaces


def _objects_from_file(source: str) -> _FileObjects:
    """Pods, the owners of ReplicaSets and Jobs and the Namespaces' labels, from manifests or
    `kubectl get namespaces,replicasets,jobs,pods -A -o yaml|json` Lists."""
    from app.audit.owners import parent_index

    items: list[Any] = []
    for document in _read_manifests(source):
        if isinstance(document, dict):
            items += document.get("items") or [] if document.get("kind") == "List" else [document]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if isinstance(item, dict):
            by_kind.setdefault(str(item.get("kind")), []).append(item)
    namespaces = {
        str((ns.get("metadata") or {}).get("name")): dict((ns.get("metadata") or {}).get("labels") or {})
        for ns in by_kind.get("Namespace", [])
    }
    parents = {
        **parent_index(by_kind.get("ReplicaSet", []), "ReplicaSet"),
        **parent_index(by_kind.get("Job", []), "Job"),
    }
    return _FileObjects(by_kind.get("Pod", []), parents, namespaces or None)


def cmd_audit(args: argparse.Namespace) -> int:
    from app.admission.engine import engine_config
    from app.audit import report
    from app.audit.owners import ParentIndex

    overrides = {"policy_namespaces": args.policy_namespaces} if args.policy_namespaces else {}
    settings = _settings(args, **overrides)
    try:
        inventory = None
        if args.policies is None or args.file is None:  # the cluster is asked for what no file gives
            from app.cluster.client import context_namespace, load_configuration
            from app.cluster.discovery import discover_version
            from app.cluster.inventory import Inventory

            configuration = load_configuration(settings.kubeconfig)
            inventory = Inventory(configuration, _warn)
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
            _warn(f"policy source {key} ignored: {message}")
        labels: Mapping[str, Mapping[str, str]] | None = None
        pods: Iterable[Mapping[str, Any]]
        parents: ParentIndex
        if args.file is not None:
            found = _objects_from_file(args.file)
            pods, parents, labels = found.pods, found.parents, found.namespaces
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
        _err(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
        return EXIT_AUDIT_FAILED
    audited = report.only_policy(audited, args.policy)
    sys.stdout.write(
        report.restart_plan(audited) if args.restart_plan else report.render(audited, args.output)
    )
    return EXIT_ERROR if report.needs_restart(audited) else EXIT_OK


# --- certs ----------------------------------------------------------------------------------------


def cmd_certs_generate(args: argparse.Namespace) -> int:
    from app.certs import generate_bundle, service_hostnames, write_bundle

    hostnames = [*service_hostnames(args.service, args.namespace), *args.host]
    bundle = generate_bundle(hostnames, days=args.days)
    write_bundle(bundle, Path(args.out))
    _err(f"wrote {args.out}/ca.crt, ca.key, tls.crt, tls.key for {', '.join(hostnames)}")
    if args.print_ca_bundle:
        sys.stdout.write(bundle.ca_bundle() + "\n")
    else:
        _err(f"the webhook's caBundle is base64 of {args.out}/ca.crt (--print-ca-bundle prints it)")
    return EXIT_OK


def cmd_certs_patch(args: argparse.Namespace) -> int:
    from app.cluster.cabundle import patch_ca_bundle

    try:
        changed = patch_ca_bundle(args.webhook, Path(args.ca), kubeconfig=args.kubeconfig)
    except Exception as exc:  # report any API or file error as one line
        _err(f"error: {exc}")
        return EXIT_ERROR
    sys.stdout.write(f"{args.webhook}: caBundle {'updated' if changed else 'already current'}\n")
    return EXIT_OK


# --- parser ---------------------------------------------------------------------------------------


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies", type=Path, help="directory of policy YAML files (default examples/policies)"
    )
    parser.add_argument(
        "--sidecar-mode",
        choices=["native", "classic", "auto"],
        help="how sidecars of policies without spec.sidecarMode are injected: native (init containers "
        "with restartPolicy Always, Kubernetes >= 1.29), classic (extra containers), or auto (default: "
        "native when --kubernetes-version is 1.29 or later, else classic). Under auto, a pod that must "
        "complete (restartPolicy Never or OnFailure: Jobs, CronJobs) never gets a classic sidecar",
    )
    parser.add_argument(
        "--kubernetes-version", help="cluster version `auto` sidecars compare with (e.g. 1.30)"
    )
    for name in ("host", "port", "policy_source", "tls_cert", "tls_key", "tls_client_ca", "log_level"):
        parser.set_defaults(**{name: None})


def _audit_parser(commands: Any) -> None:
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
    for name in ("host", "port", "policy_source", "tls_cert", "tls_key", "tls_client_ca", "log_level"):
        audit.set_defaults(**{name: None})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podgraft", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the webhook server (HTTPS)")
    _engine_flags(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--policy-source", choices=["directory", "configmaps"])
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA")
    serve.add_argument("--kubeconfig", type=Path, help="configmaps mode outside a cluster")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default 1)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    inject = commands.add_parser("inject", help="apply policies to manifests offline (a webhook dry run)")
    _engine_flags(inject)
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

    _audit_parser(commands)

    policy = commands.add_parser("policy", help="policy tools").add_subparsers(
        dest="policy_command", required=True
    )
    validate = policy.add_parser(
        "validate", help="validate policy files and directories; every problem on its own line, exit 1 if any"
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="a policy file, or a directory of them")
    validate.set_defaults(func=cmd_validate)

    certs = commands.add_parser("certs", help="certificate tools").add_subparsers(
        dest="certs_command", required=True
    )
    generate = certs.add_parser("generate", help="write a CA and a serving certificate for a Service")
    generate.add_argument("--service", default="podgraft")
    generate.add_argument("--namespace", default="podgraft")
    generate.add_argument("--out", default="certs")
    generate.add_argument("--host", action="append", default=[], help="extra DNS name or IP (repeatable)")
    generate.add_argument("--days", type=int, default=365)
    generate.add_argument(
        "--print-ca-bundle", action="store_true", help="print the base64 caBundle (alone) on stdout"
    )
    generate.set_defaults(func=cmd_certs_generate)
    patch = certs.add_parser("patch-ca-bundle", help="set the caBundle of a MutatingWebhookConfiguration")
    patch.add_argument("--webhook", required=True, help="MutatingWebhookConfiguration name")
    patch.add_argument("--ca", default="certs/ca.crt")
    patch.add_argument("--kubeconfig", type=Path)
    patch.set_defaults(func=cmd_certs_patch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
