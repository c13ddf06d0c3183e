"""`podgraft audit`: which running pods miss an injection or run a stale policy version."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    cluster_flags,
    err,
    load_policies,
    settings_from,
    warn,
    without_server_flags,
)
from app.cli.files import NESTED, FileError, Source

if TYPE_CHECKING:
    from app.audit.owners import ParentIndex
    from app.audit.report import AuditedPod
    from app.audit.selector import Selector
    from app.engine.policyset import PolicySet
    from app.settings import Settings

EXIT_AUDIT_FAILED = 2  # the audit could not run (API, files, policies); 1 means something is stale or missing
DUMP = "kubectl get namespaces,replicasets,jobs,pods -A -o yaml"


class Refused(Exception):
    """The audit cannot run; each line of `problems` is printed as an error. `policies`: the ones
    that did load, when the problems are policy sources that did not."""

    def __init__(self, problems: list[str], policies: PolicySet | None = None) -> None:
        super().__init__("; ".join(problems))
        from app.engine.policyset import PolicySet

        self.problems = problems
        self.policies = policies if policies is not None else PolicySet()


@dataclass
class _Listing:
    """What the audit reads, wherever from, and what it has to say about it on stderr."""

    pods: Iterable[Mapping[str, Any]]
    parents: ParentIndex
    namespace_labels: Callable[[str], Mapping[str, str] | None]
    where: str  # "in dump.yaml", "in the cluster's listing"
    hint: str  # how to get what was not there
    notes: list[str] = field(default_factory=list)  # warnings about what was read


# --- from a file ------------------------------------------------------------------------------------


@dataclass
class _FileScan:
    """One pass over a file: the Namespaces' labels, the ReplicaSets and Jobs, and the pods in scope
    (`-n`, `-l`), each once, kept as JSON bytes (a tenth of their size as objects) until audited."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # labels, by Namespace
    owned: dict[str, list[Mapping[str, Any]]] = field(default_factory=lambda: {"ReplicaSet": [], "Job": []})
    pods: list[bytes] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    without_namespace: int = 0
    duplicates: int = 0


def _in_namespace(item: Mapping[str, Any], namespace: Callable[[], str]) -> Mapping[str, Any]:
    """`item` with `metadata.namespace` set when it has none (a manifest, not an apiserver's object)."""
    metadata = item.get("metadata") or {}
    if not isinstance(metadata, dict) or metadata.get("namespace"):
        return item
    return {**item, "metadata": {**metadata, "namespace": namespace()}}


def _scan(
    source: Source, *, namespace: str | None, default: Callable[[], str], selector: Selector
) -> _FileScan:
    import orjson

    from app.engine.podview import string_map

    scan = _FileScan()
    seen: set[tuple[str, str]] = set()
    for found in source.objects():
        kind = str(found.get("kind"))
        scan.kinds[kind] += 1
        metadata = found.get("metadata") or {}
        if kind == "Namespace":
            scan.namespaces[str(metadata.get("name"))] = string_map(metadata.get("labels"))
            continue
        if kind not in ("Pod", *scan.owned):
            continue
        item: Mapping[str, Any] = found
        if not metadata.get("namespace"):
            scan.without_namespace += 1
            item = _in_namespace(found, default)
            metadata = item["metadata"]
        if kind != "Pod":
            scan.owned[kind].append(item)
        elif (namespace is None or metadata["namespace"] == namespace) and selector.matches(
            string_map(metadata.get("labels"))
        ):
            if metadata.get("name"):
                key = (str(metadata["namespace"]), str(metadata["name"]))
                if key in seen:
                    scan.duplicates += 1
                    continue
                seen.add(key)
            scan.pods.append(orjson.dumps(item, default=str, option=orjson.OPT_NON_STR_KEYS))
    return scan


def _from_file(args: argparse.Namespace, settings: Settings, selector: Selector) -> _Listing:
    import orjson

    from app.audit.owners import parent_index

    source = Source(args.file)
    defaults: list[str] = []

    def default() -> str:
        if not defaults:
            defaults.append(args.namespace or _context_namespace(settings))
        return defaults[0]

    scan = _scan(source, namespace=args.namespace, default=default, selector=selector)
    parents = {
        **parent_index(scan.owned["ReplicaSet"], "ReplicaSet"),
        **parent_index(scan.owned["Job"], "Job"),
    }
    pods = (orjson.loads(scan.pods.pop()) for _ in range(len(scan.pods)))  # each freed once read
    listing = _Listing(pods, parents, scan.namespaces.get, f"in {source.name}", f" (dump them too: {DUMP})")
    if not scan.kinds["Pod"]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(scan.kinds.items()))
        what = f"its objects: {kinds}" if kinds else "it holds no objects"
        listing.notes.append(f"no pods in {source.name} ({what})")
    if scan.without_namespace:
        why = "-n" if args.namespace else "the kubeconfig context's namespace"
        listing.notes.append(
            f"{source.name}: {scan.without_namespace} object(s) without metadata.namespace (a manifest,"
            f" not an apiserver's dump) are taken to be in namespace {default()!r} ({why})"
        )
    if scan.duplicates:
        listing.notes.append(
            f"{source.name}: {scan.duplicates} duplicate pod(s) dropped (the same namespace and name"
            " more than once): each pod is audited once"
        )
    return listing


def _context_namespace(settings: Settings) -> str:
    """Where `kubectl apply -f` puts an object without a namespace: the kubeconfig context's, or `default`."""
    from app.cluster.client import context_namespace

    return context_namespace(settings.kubeconfig)


# --- from the cluster ---------------------------------------------------------------------------------


def _from_cluster(args: argparse.Namespace, settings: Settings, inventory: Any) -> _Listing:
    namespace = None if args.all_namespaces else args.namespace or _context_namespace(settings)
    labels = inventory.namespace_labels()
    return _Listing(
        inventory.pods(namespace, args.selector),
        inventory.parents(namespace),
        (lambda _namespace: None) if labels is None else labels.get,
        "in the cluster's listing",
        "",
    )


# --- the command ----------------------------------------------------------------------------------------


def policies_in_force(args: argparse.Namespace, settings: Settings, inventory: Any) -> PolicySet:
    """The policies in force; `Refused` naming every file or ConfigMap key that does not load: the
    audit would judge the pods against a policy set the webhook does not run."""
    if args.policies is not None:
        store, errors = load_policies(
            args.policies, max_bytes=settings.max_policy_bytes, kubernetes_version=settings.kubernetes_version
        )
        policies, where = store.current(), {key: f"policy file {args.policies / key}" for key in errors}
    else:
        policies, errors = inventory.policies(
            settings.watched_policy_namespaces(),
            settings.policy_label,
            max_bytes=settings.max_policy_bytes,
            kubernetes_version=settings.kubernetes_version,
        )
        where = {key: f"policy {key}" for key in errors}
    if errors:
        problems = [f"{where[key]}: {message}" for key, message in sorted(errors.items())]
        problems.append(
            f"{len(errors)} policy source(s) do not load: the audit would judge pods against policies the"
            " webhook does not run; fix them first (podgraft policy validate)"
        )
        raise Refused(problems, policies)
    return policies


def _check_policy_name(name: str | None, policies: PolicySet, audited: Iterable[AuditedPod]) -> None:
    """`--policy NAME` names a policy in force or one recorded in a pod (an orphan); else `Refused`."""
    if name is None:
        return
    known = set(policies.by_name) | {s.policy for pod in audited for s in pod.audit.policies}
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise Refused([f"--policy {name!r}: no such policy in force, and none recorded in a pod{hint}"])


def _notes(listing: _Listing, audited: list[AuditedPod]) -> list[str]:
    """What stderr says about what the audit could not know."""
    notes = list(listing.notes)
    unchecked = sorted(
        {pod.audit.namespace for pod in audited if listing.namespace_labels(pod.audit.namespace) is None}
    )
    if unchecked:
        shown = ", ".join(unchecked[:5]) + (f" and {len(unchecked) - 5} more" if len(unchecked) > 5 else "")
        notes.append(
            f"no Namespace {listing.where} for {shown}: their opt-in and namespaceSelectors were not checked,"
            f" so what would be missing there is `unknown`{listing.hint}"
        )
    unlisted = sum(1 for pod in audited if not pod.owner.listed)
    if unlisted:
        notes.append(
            f"{unlisted} pod(s) are owned by ReplicaSets or Jobs not found {listing.where}: what owns those"
            f" is unknown{listing.hint}"
        )
    return notes


def _audit(args: argparse.Namespace, settings: Settings) -> tuple[list[AuditedPod], list[str]]:
    from app.admission.engine import engine_config
    from app.audit import report
    from app.audit.selector import SelectorError, parse_selector

    try:
        selector = parse_selector(args.selector or "")
    except SelectorError as exc:
        raise Refused([f"-l {args.selector!r}: {exc}"]) from None
    inventory = None
    if args.policies is None or args.file is None:  # the cluster is asked for what no file gives
        from app.cluster.client import load_configuration
        from app.cluster.discovery import discover_version
        from app.cluster.inventory import Inventory

        configuration = load_configuration(settings.kubeconfig)
        inventory = Inventory(configuration, warn)
        if "kubernetes_version" not in settings.model_fields_set:
            version = discover_version(configuration, deadline_seconds=10)
            settings = settings.model_copy(update={"kubernetes_version": version})
    policies = policies_in_force(args, settings, inventory)
    listing = (
        _from_file(args, settings, selector)
        if args.file is not None
        else _from_cluster(args, settings, inventory)
    )
    audited = report.audit_pods(
        listing.pods,
        parents=listing.parents,
        namespace_labels=listing.namespace_labels,
        policies=policies,
        config=engine_config(settings),
    )
    _check_policy_name(args.policy, policies, audited)
    return report.only_policy(audited, args.policy), _notes(listing, audited)


def cmd_audit(args: argparse.Namespace) -> int:
    from app.audit import report

    overrides = {"policy_namespaces": args.policy_namespaces} if args.policy_namespaces else {}
    settings = settings_from(args, **overrides)
    try:
        audited, notes = _audit(args, settings)
    except Refused as exc:
        for problem in exc.problems:
            err(f"error: {problem}")
        return EXIT_AUDIT_FAILED
    except FileError as exc:
        err(f"error: {exc}")
        return EXIT_AUDIT_FAILED
    except RecursionError:
        err(f"error: {args.file or 'a pod'}: {NESTED}")
        return EXIT_AUDIT_FAILED
    except Exception as exc:  # an API or kubeconfig error: one line, not a traceback
        err(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
        return EXIT_AUDIT_FAILED
    for note in notes:
        warn(note)
    sys.stdout.write(
        report.restart_plan(audited) if args.restart_plan else report.render(audited, args.output)
    )
    return EXIT_ERROR if report.needs_restart(audited) else EXIT_OK


def add_parser(commands: Any) -> None:
    audit = commands.add_parser(
        "audit",
        help="which pods run a stale policy version or miss an injection (exit 1 if any)",
        description="Audit running pods with the webhook's engine: per pod and policy, current, stale, "
        "missing, refused, orphaned or unknown. Exit 0 when nothing is known to be stale or missing, 1 "
        "when something is, 2 when the audit could not run (no cluster, a broken file or policy, a bad "
        "flag).",
    )
    scope = audit.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        help="audit this namespace (default: the kubeconfig context's; with -f, every namespace of the file)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="audit every namespace")
    audit.add_argument(
        "-l",
        "--selector",
        help="only pods with these labels, as kubectl reads them: app=web,tier!=db, env in (a,b), !canary",
    )
    audit.add_argument("--policy", help="only this policy's states")
    audit.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    audit.add_argument(
        "--restart-plan", action="store_true", help="print the kubectl commands that bring pods current"
    )
    cluster_flags(audit)
    audit.add_argument("-f", "--file", help=f"audit the pods in a file, or - for stdin (`{DUMP}`)")
    audit.set_defaults(func=cmd_audit, sidecar_mode=None)
    without_server_flags(audit)
