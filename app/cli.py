"""`podgraft serve | inject | policy validate | certs generate | certs patch-ca-bundle`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import jsonpatch
import yaml

from app.engine.config import EngineConfig
from app.engine.inject import InjectionResult, inject_pod
from app.settings import Settings
from app.sources.directory import read_directory
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


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for directory in args.dirs:
        try:
            store, errors = load_policies(Path(directory), max_bytes=Settings().max_policy_bytes)
        except FileNotFoundError as exc:
            _err(f"error: {exc}")
            return EXIT_ERROR
        for key, message in sorted(errors.items()):
            _err(f"{Path(directory) / key}: {message}")
            failed = True
        for name, policy in sorted(store.current().by_name.items()):
            sys.stdout.write(f"ok  {name}  ({Path(directory) / policy.source}, hash {policy.content_hash})\n")
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
    from app.server import engine_config

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


# --- certs ----------------------------------------------------------------------------------------


def cmd_certs_generate(args: argparse.Namespace) -> int:
    from app.certs import generate_bundle, service_hostnames, write_bundle

    hostnames = [*service_hostnames(args.service, args.namespace), *args.host]
    bundle = generate_bundle(hostnames, days=args.days)
    write_bundle(bundle, Path(args.out))
    _err(f"wrote {args.out}/ca.crt, ca.key, tls.crt, tls.key for {', '.join(hostnames)}")
    sys.stdout.write(bundle.ca_bundle() + "\n")
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

    policy = commands.add_parser("policy", help="policy tools").add_subparsers(
        dest="policy_command", required=True
    )
    validate = policy.add_parser("validate", help="validate policy directories; non-zero exit on any error")
    validate.add_argument("dirs", nargs="+")
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
