"""`podgraft rollout`: carry out the audit's restart plan, one workload at a time, safely.

Also what `podgraft explain` shares with it: the flags that name the cluster and its policies, and
`live_audit` (the policies in force, the namespaces' labels and the audit's engine settings).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from app.cli.audit import Refused, policies_in_force
from app.cli.common import cluster_flags, err, settings_from, warn, webhook_flag

if TYPE_CHECKING:  # the Kubernetes client is loaded only when a command runs against a cluster
    from app.cluster.inventory import Inventory
    from app.engine.config import EngineConfig
    from app.engine.policyset import PolicySet
    from app.settings import Settings

EXIT_COULD_NOT_RUN = 2  # as `podgraft audit`: the cluster could not be read, permissions, preflight
EXIT_INTERRUPTED = 130
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def duration(value: str) -> float:
    """Seconds from `90`, `90s`, `10m`, `1h30m` (kubectl's --timeout style)."""
    match = _DURATION.match(value.strip())
    if not value.strip() or match is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration (e.g. 90s, 10m, 1h)")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return number


@dataclass(frozen=True)
class Live:
    """What the audit's engine needs from the cluster."""

    configuration: Any  # the client's Configuration
    settings: Settings
    config: EngineConfig
    policies: PolicySet
    namespace_labels: Mapping[str, Mapping[str, str]] | None
    inventory: Inventory

    def labels(self, namespace: str) -> Mapping[str, str] | None:
        return None if self.namespace_labels is None else self.namespace_labels.get(namespace)


def live_settings(args: argparse.Namespace) -> Settings:
    overrides = {"policy_namespaces": args.policy_namespaces} if args.policy_namespaces else {}
    return settings_from(args, **overrides)


def live_audit(args: argparse.Namespace, *, namespace_labels: bool = True, strict: bool = True) -> Live:
    """The policies in force (ConfigMaps, or --policies), the Kubernetes version, the namespaces'
    labels: everything `audit_pod` is called with, read as `podgraft audit` reads it. `strict`: a
    policy source that does not load stops the command (never act on a set the webhook does not
    run); else it is left out with a warning."""
    from app.admission.engine import engine_config
    from app.cluster.client import load_configuration
    from app.cluster.discovery import discover_version
    from app.cluster.inventory import Inventory

    settings = live_settings(args)
    configuration = load_configuration(settings.kubeconfig)
    inventory = Inventory(configuration, warn)
    if "kubernetes_version" not in settings.model_fields_set:
        version = discover_version(configuration, deadline_seconds=10)
        settings = settings.model_copy(update={"kubernetes_version": version})
    try:
        policies = policies_in_force(args, settings, inventory)
    except Refused as refused:
        if strict:
            raise
        for problem in refused.problems[:-1]:
            warn(f"{problem}: left out")
        policies = refused.policies
    labels = inventory.namespace_labels() if namespace_labels else None
    return Live(configuration, settings, engine_config(settings), policies, labels, inventory)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- permissions -----------------------------------------------------------------------------------


def read_needs(
    args: argparse.Namespace, namespace: str | None, policy_namespaces: Sequence[str]
) -> list[Any]:
    """What the audit half of a rollout reads (`podgraft audit`'s permissions, ReplicaSets required)."""
    from app.cluster.access import Need

    where = namespace or ""
    needs = [
        Need("list", "pods", namespace=where, why="the audit"),
        Need("list", "replicasets", "apps", where, "the owners of Deployments' pods"),
        Need(
            "list", "jobs", "batch", where, "the owners of CronJobs' pods", "Job pods show the Job as owner"
        ),
        Need("list", "namespaces", why="opt-in labels", without="namespaces are taken as opted in"),
    ]
    if args.policies is None:
        needs += [
            Need("list", "configmaps", namespace=ns, why="the policies in force") for ns in policy_namespaces
        ]
    return needs


def act_needs(targets: Sequence[Any], *, act: bool, ignore_pdb: bool) -> list[Any]:
    """What restarting `targets` (Owners) takes, per namespace and kind."""
    from app.cluster.access import Need

    resources = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
    needs = [
        Need(
            "list",
            "mutatingwebhookconfigurations",
            "admissionregistration.k8s.io",
            why="why a preflight pod was not injected",
            without="a failed preflight cannot tell a Podgraft that is down from a webhook that does "
            "not select the pod",
        )
    ]
    for owner in sorted(targets):
        resource, ns = resources[owner.kind], owner.namespace
        needs.append(Need("get", resource, "apps", ns, "read the workload"))
        if act:
            needs.append(Need("patch", resource, "apps", ns, "restart the workload"))
        needs.append(Need("create", "pods", namespace=ns, why="the preflight's dry-run create (dryRun=All)"))
        if owner.kind == "DaemonSet":
            needs.append(Need("list", "controllerrevisions", "apps", ns, "a DaemonSet's new pods"))
        if not ignore_pdb:
            needs.append(
                Need(
                    "list",
                    "poddisruptionbudgets",
                    "policy",
                    ns,
                    "the disruption gate (--ignore-pdb skips it)",
                )
            )
    return needs


def check_access(configuration: Any, needs: Sequence[Any]) -> bool:
    """Ask for every need; warn about the optional ones missing, say all the required ones missing."""
    from app.cluster.access import denied

    missing = denied(configuration, needs)
    for need in missing:
        if need.without:
            warn(f"no permission to {need.text()}: {need.without}")
    required = [need for need in missing if not need.without]
    if required:
        err("error: missing permissions (see the README's RBAC for podgraft rollout):")
        for need in required:
            err(f"  {need.text()} ({need.why})")
    return not required


# --- output ----------------------------------------------------------------------------------------


class Progress:
    """Events as lines (a log, a pipe) or, on a terminal, finished workloads as lines under a progress
    bar redrawn in place."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total, self.done = stream, total, 0
        self.tty = stream.isatty()
        self.doing: dict[Any, str] = {}

    def __call__(self, event: Any) -> None:
        from app.rollout.report import event_line, progress_bar, workload

        line = event_line(event, time.strftime("%H:%M:%S"))
        if event.kind == "finish":
            self.done += 1
            self.doing.pop(event.target.owner, None)
        elif event.target is not None:
            self.doing[event.target.owner] = f"{workload(event.target)}: {event.message}"
        if not self.tty:
            self.stream.write(line + "\n")
        else:
            if event.kind in ("finish", "wave", "pause", "restart"):
                self.stream.write("\r\x1b[K" + line + "\n")
            doing = next(iter(self.doing.values()), "")
            self.stream.write("\r\x1b[K" + progress_bar(self.done, self.total, doing)[:200])
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _write(report: Any, output: str) -> None:
    from app.rollout.report import as_data, text

    if output == "json":
        sys.stdout.write(orjson.dumps(as_data(report), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(text(report))


# --- the command -----------------------------------------------------------------------------------


def _judge(live: Live, policy: str | None) -> Callable[[Mapping[str, Any]], list[Any]]:
    from app.audit.classify import audit_pod

    def judge(pod: Mapping[str, Any]) -> list[Any]:
        namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
        audit = audit_pod(
            pod, namespace_labels=live.labels(namespace), policies=live.policies, config=live.config
        )
        return [s for s in audit.policies if policy is None or s.policy == policy]

    return judge


def cmd_rollout(args: argparse.Namespace) -> int:
    from app.audit import report as audit_report
    from app.cluster.client import context_namespace, load_configuration
    from app.cluster.workloads import Workloads
    from app.rollout import report
    from app.rollout.plan import build_plan
    from app.rollout.runner import Options, Runner
    from app.rollout.status import cannot_progress

    try:
        settings = live_settings(args)
        namespace = None if args.all_namespaces else args.namespace or context_namespace(settings.kubeconfig)
        if not check_access(
            load_configuration(settings.kubeconfig),
            read_needs(args, namespace, settings.watched_policy_namespaces()),
        ):
            return EXIT_COULD_NOT_RUN
        live = live_audit(args)
        audited = audit_report.only_policy(
            audit_report.audit_pods(
                live.inventory.pods(namespace, args.selector),
                parents=live.inventory.parents(namespace),
                namespace_labels=live.labels,
                policies=live.policies,
                config=live.config,
            ),
            args.policy,
        )
        api = Workloads(live.configuration)
        behind = {p.owner for p in audited if p.owner.has_rollout and audit_report.needs_restart([p])}
        if not check_access(
            live.configuration, act_needs(sorted(behind), act=args.yes, ignore_pdb=args.ignore_pdb)
        ):
            return EXIT_COULD_NOT_RUN

        def workload(owner: Any) -> str | None:
            obj = api.workload(owner)
            return None if obj is None else cannot_progress(owner.kind, obj)

        plan = build_plan(audited, workload=workload, wave_size=args.wave_size)
    except Exception as exc:  # an API, kubeconfig or file error: one line, not a traceback
        err(f"error: {first_line(exc)}")
        return EXIT_COULD_NOT_RUN
    options = Options(
        timeout=args.timeout,
        parallel=args.parallel,
        pause_between_waves=args.pause_between_waves,
        ignore_pdb=args.ignore_pdb,
        webhook_configuration=args.webhook,
    )
    events = sys.stderr if args.output == "json" else sys.stdout
    progress = Progress(events, len(plan.targets))
    runner = Runner(
        plan,
        api,
        judge=_judge(live, args.policy),
        namespace_labels=live.labels,
        options=options,
        report=progress,
    )
    checks = runner.preflight_all()
    stopped = [
        f"{owner.namespace} {owner}: {c.message}" for owner, c in checks.items() if c.verdict == "stop"
    ]
    if not args.yes or stopped:
        gates = {t.owner: runner.gate_now(t) for t in plan.targets}
        notes = {t.owner: (checks[t.owner].message, gates[t.owner].message) for t in plan.targets}
        outcomes = (*report.planned(plan, checks, gates), *report.settled(plan))
        why = f"the preflight failed, nothing was restarted: {stopped[0]}" if stopped else ""
        result = report.Report(plan, outcomes, dry_run=True, stopped=why, notes=notes, acting=args.yes)
        _write(result, args.output)
        return EXIT_COULD_NOT_RUN if stopped else report.exit_code(result)
    finished, interrupted = _run_interruptibly(runner)
    progress.close()
    events.write("\n")
    result = report.Report(plan, (*finished, *report.settled(plan)), dry_run=False, stopped=runner.stopping)
    _write(result, args.output)
    return EXIT_INTERRUPTED if interrupted else report.exit_code(result)


def _run_interruptibly(runner: Any) -> tuple[list[Any], bool]:
    """Run with Ctrl-C turned into `runner.interrupt()` (a second one quits at once): the outcomes,
    and whether it was interrupted."""
    interrupted: list[bool] = []

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(True)
        err("\ninterrupted: finishing the step in flight, then reporting (Ctrl-C again quits at once)")
        runner.interrupt()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        outcomes = runner.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    return outcomes, bool(interrupted)


def add_parser(commands: Any) -> None:
    rollout = commands.add_parser(
        "rollout",
        help="restart the workloads whose pods are stale or missing, one at a time (dry run unless --yes)",
        description="Carry out the audit's restart plan: per Deployment, StatefulSet or DaemonSet with stale "
        "or missing pods, a rollout restart, then wait until its rollout is complete (kubectl rollout "
        "status's rules) and its pods are current by the audit, before the next. A preflight dry-run "
        "create shows the webhook injects the live version first; PodDisruptionBudgets must allow a "
        "disruption. Exit 0 when everything behind was restarted, 1 when something is left, 2 when it "
        "could not run.",
    )
    scope = rollout.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="this namespace (default: the kubeconfig context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    rollout.add_argument("-l", "--selector", help="only pods with these labels (a label selector)")
    rollout.add_argument("--policy", help="only pods behind on this policy")
    act = rollout.add_mutually_exclusive_group()
    act.add_argument("--dry-run", action="store_true", help="print the plan and why (the default)")
    act.add_argument("--yes", action="store_true", help="restart")
    rollout.add_argument(
        "--parallel", type=positive, default=1, help="workloads at a time per namespace (default 1)"
    )
    rollout.add_argument("--wave-size", type=positive, default=1, help="namespaces at a time (default 1)")
    rollout.add_argument("--pause-between-waves", type=duration, default=0.0, metavar="DURATION")
    rollout.add_argument(
        "--timeout",
        type=duration,
        default=600.0,
        metavar="DURATION",
        help="per workload: how long its PodDisruptionBudget may block it, and how long its rollout may "
        "take (default 10m)",
    )
    rollout.add_argument(
        "--ignore-pdb", action="store_true", help="restart whatever PodDisruptionBudgets say"
    )
    rollout.add_argument("-o", "--output", choices=["text", "json"], default="text")
    cluster_flags(rollout)
    webhook_flag(rollout)
    rollout.set_defaults(func=cmd_rollout)
