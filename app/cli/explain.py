"""`podgraft explain`: why a live pod was (not) injected, or what a workload's next pods would get,
from the live cluster: its namespace, policies, the webhook's engine and the registered webhooks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.cli.common import EXIT_ERROR, EXIT_OK, cluster_flags, err, warn, webhook_flag
from app.cli.files import Source
from app.cli.inject import _as_pod, _pod_template
from app.cli.rollout import first_line, live_audit

KINDS = {  # what `kubectl get` accepts for the kinds with a pod template, and pods
    **dict.fromkeys(("pod", "pods", "po"), "Pod"),
    **dict.fromkeys(("deployment", "deployments", "deploy"), "Deployment"),
    **dict.fromkeys(("statefulset", "statefulsets", "sts"), "StatefulSet"),
    **dict.fromkeys(("daemonset", "daemonsets", "ds"), "DaemonSet"),
    **dict.fromkeys(("replicaset", "replicasets", "rs"), "ReplicaSet"),
    **dict.fromkeys(("job", "jobs"), "Job"),
    **dict.fromkeys(("cronjob", "cronjobs", "cj"), "CronJob"),
}


def parse_target(value: str) -> tuple[str, str]:
    """`pod/NAME`, `deployment/NAME`, ... -> (Kind, name)."""
    kind, sep, name = value.partition("/")
    if not sep or not name or kind.lower() not in KINDS:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected KIND/NAME with KIND one of pod, deployment, statefulset, daemonset, "
            "replicaset, job, cronjob"
        )
    return KINDS[kind.lower()], name


def _running(api: Any, live: Any, kind: str, obj: Mapping[str, Any], labels: Any) -> list[Any]:
    """The audits of a workload's running pods (none for a CronJob, whose Jobs come and go)."""
    from app.audit.classify import audit_pod
    from app.explain.webhooks import selector_text
    from app.rollout.status import owned_pods

    spec = obj.get("spec") or {}
    if kind == "CronJob" or not spec.get("selector"):
        return []
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    selector = selector_text(spec["selector"])
    pods = api.pods(namespace, selector)
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        owner_kind = "Deployment" if kind == "Deployment" else kind
        replicasets = api.replicasets(namespace, selector) if kind == "Deployment" else []
        pods = owned_pods(owner_kind, obj, pods, replicasets)
    return [audit_pod(p, namespace_labels=labels, policies=live.policies, config=live.config) for p in pods]


def _owner_of(api: Any, pod: Mapping[str, Any]) -> str:
    from app.audit.owners import controller_ref, parent_index, resolve_owner

    metadata = pod.get("metadata") or {}
    ref = controller_ref(metadata)
    parents = {}
    if ref is not None and ref[0] in ("ReplicaSet", "Job"):
        found = api.read(ref[0], str(metadata.get("namespace") or ""), ref[1])
        parents = parent_index([found] if found else [], ref[0])
    return str(resolve_owner(pod, parents))


@dataclass(frozen=True)
class _Subject:
    title: str
    namespace: str
    pod: Mapping[str, Any]
    live: bool  # a running pod, else a pod template
    running: list[Any] = field(default_factory=list)  # a workload's running pods' audits


class _NamespaceLabels:
    """Each namespace's labels, read once (None when they cannot be read: Podgraft's own view)."""

    def __init__(self, api: Any) -> None:
        self.api, self.found = api, dict[str, Any]()

    def __call__(self, namespace: str) -> Any:
        from app.cluster.workloads import HTTP_FORBIDDEN
        from app.rollout.runner import ApiError

        if namespace not in self.found:
            try:
                self.found[namespace] = self.api.namespace_labels(namespace)
            except ApiError as exc:
                if exc.status != HTTP_FORBIDDEN:
                    raise
                warn(f"cannot list namespaces ({exc}): namespace {namespace}'s labels are unknown")
                self.found[namespace] = None
        return self.found[namespace]


def _from_file(source: str, namespace: str) -> list[_Subject]:
    subjects = []
    for document in Source(source).objects():  # a kind: List's items in its place
        found = _pod_template(document)
        if isinstance(found, str):  # not a Pod nor a workload with a pod template
            continue
        template, path = found
        meta = document.get("metadata") or {}
        where = str(meta.get("namespace") or namespace)
        title = f"{document.get('kind')} {where}/{meta.get('name') or meta.get('generateName')} ({source})"
        subjects.append(_Subject(title, where, _as_pod(document, template) if path else template, False))
    return subjects


def _from_cluster(
    api: Any, live: Any, target: tuple[str, str], namespace: str, labels: Any
) -> _Subject | None:
    kind, name = target
    obj = api.read(kind, namespace, name)
    if obj is None:
        return None
    if kind == "Pod":
        return _Subject(f"pod {namespace}/{name} (owner {_owner_of(api, obj)})", namespace, obj, True)
    found = _pod_template(obj)
    template = {} if isinstance(found, str) else found[0]  # the API always returns the template
    title = f"{kind.lower()} {namespace}/{name}: the pods its template makes"
    running = _running(api, live, kind, obj, labels(namespace))
    return _Subject(title, namespace, _as_pod(obj, template), False, running)


def cmd_explain(args: argparse.Namespace) -> int:
    from app.cluster.client import context_namespace
    from app.cluster.workloads import Workloads
    from app.explain.report import as_data, explain, text

    try:
        live = live_audit(args, namespace_labels=False, strict=False)
        api = Workloads(live.configuration)
        labels = _NamespaceLabels(api)
        namespace = args.namespace or context_namespace(live.settings.kubeconfig)
        if args.file is not None:
            subjects = _from_file(args.file, namespace)
            if not subjects:
                err(f"error: {args.file}: no Pod nor workload with a pod template")
                return EXIT_ERROR
        else:
            found = _from_cluster(api, live, args.target, namespace, labels)
            if found is None:
                err(f"error: {args.target[0].lower()} {args.target[1]!r} not found in namespace {namespace}")
                return EXIT_ERROR
            subjects = [found]
        webhooks = api.webhooks()
        admission_policies, admission_note = api.admission_policies_listed()
        explanations = [
            explain(
                subject.pod,
                subject=subject.title,
                namespace=subject.namespace,
                namespace_labels=labels(subject.namespace),
                policies=live.policies,
                config=live.config,
                live=subject.live,
                running=subject.running,
                webhooks=webhooks,
                podgraft_configuration=args.webhook,
                admission_policies=admission_policies,
                admission_note=admission_note,
            )
            for subject in subjects
        ]
    except Exception as exc:  # an API, kubeconfig or file error: one line, not a traceback
        err(f"error: {first_line(exc)}")
        return EXIT_ERROR
    if webhooks is None:
        err("warning: no permission to list mutatingwebhookconfigurations: the webhooks are not shown")
    if args.output == "json":
        documents = [as_data(e) for e in explanations]
        sys.stdout.write(
            orjson.dumps(documents if args.file else documents[0], option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        sys.stdout.write("\n".join(text(e) for e in explanations))
    return EXIT_OK


def add_parser(commands: Any) -> None:
    explain = commands.add_parser(
        "explain",
        help="why a live pod was (not) injected, or what a workload's next pods would get",
        description="Explain from the live cluster: the namespace's opt-in, each policy's decision by the "
        "webhook's engine and its audit state, and the mutating webhooks the apiserver calls for the pod, "
        "in its order.",
    )
    explain.add_argument("target", nargs="?", type=parse_target, help="pod/NAME, deployment/NAME, ...")
    explain.add_argument("-f", "--file", help="explain the pods of a manifest file (- for stdin) instead")
    explain.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
    explain.add_argument("-o", "--output", choices=["text", "json"], default="text")
    cluster_flags(explain)
    webhook_flag(explain)
    explain.set_defaults(func=_checked)


def _checked(args: argparse.Namespace) -> int:
    if (args.target is None) == (args.file is None):
        err("error: podgraft explain takes one of KIND/NAME or -f FILE")
        return EXIT_ERROR
    return cmd_explain(args)
