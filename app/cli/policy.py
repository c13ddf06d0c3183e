"""`podgraft policy validate`: every problem of every policy, as Podgraft would load it, before it ships.

Each PATH is a policy file, a directory of them, or a file of manifests (policy ConfigMaps, Lists of
them, `helm template` output), `-` for standard input; every file is checked by
`app.sources.manifests.check_text`, the very check the webhook runs when it loads a file or a
ConfigMap key. Errors, warnings and notes go to
stderr, one line each naming file (and ConfigMap and key), document, policy and field; the policies
that load and a summary go to stdout. Exit 0 when nothing is wrong (warnings allowed), 1 on any
error (or warning, with --strict), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.cli.common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, err, settings_problems
from app.engine.policyset import CompiledPolicy
from app.policy.messages import Problem, problem_line
from app.settings import Settings
from app.sources.directory import POLICY_SUFFIXES, list_directory
from app.sources.documents import SourceReport, decode_source, read_source
from app.sources.kubeschema import schema_version
from app.sources.manifests import check_text, first_definitions


@dataclass
class _Run:
    """What one `policy validate` found, in the order the paths were given."""

    files: int = 0
    lines: list[tuple[str, Problem]] = field(default_factory=list)  # (where, problem)
    policies: list[tuple[str, CompiledPolicy]] = field(default_factory=list)  # (where, policy)
    configmaps: set[str] = field(default_factory=set)

    def add(self, where: str, reports: Sequence[SourceReport]) -> None:
        for report in reports:
            place = where if report.source == where else f"{where}: {report.source}"
            if report.source.startswith("configmap ") and " key " in report.source:
                self.configmaps.add(report.source.rsplit(" key ", 1)[0])
            self.lines += [(place, problem) for problem in report.problems]
            self.policies += [(place, policy) for policy in report.policies]

    def count(self, severity: str) -> int:
        return sum(1 for _, problem in self.lines if problem.severity == severity)


def _targets(run: _Run, target: str) -> list[Path]:
    """The files a PATH stands for; a path that gives none is an error of the run."""
    path = Path(target)
    if path.is_file():
        return [path]
    if not path.is_dir():
        run.lines.append((target, Problem("no such file or directory")))
        return []
    files, others = list_directory(path)
    if others:
        names = ", ".join(str(p.relative_to(path)) for p in others[:5]) + (", ..." if len(others) > 5 else "")
        note = f"{len(others)} file(s) skipped, not {'/'.join(POLICY_SUFFIXES)}: {names}"
        run.lines.append((target, Problem(note, severity="note")))
    if not files:
        run.lines.append(
            (target, Problem(f"no policy files ({', '.join(POLICY_SUFFIXES)}) in this directory"))
        )
    return files


def _duplicates(run: _Run) -> None:
    """A policy name defined by two sources (files, ConfigMap keys, across every PATH) is an error:
    the webhook would keep one of them only."""
    run.policies, problems = first_definitions(run.policies)
    run.lines += [(problem.source, problem) for problem in problems]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        settings = Settings()
    except ValidationError as exc:  # a PODGRAFT_* variable of the environment
        for line in settings_problems(exc):
            err(line)
        return EXIT_USAGE
    version = args.kubernetes_version or settings.kubernetes_version
    try:
        minor, note = schema_version(version)
    except ValueError as exc:
        err(f"error: --kubernetes-version: {exc}")
        return EXIT_USAGE
    run = _Run()
    if note is not None:
        run.lines.append(("--kubernetes-version", Problem(note, severity="note")))
    for target in args.paths:
        for path in [Path("-")] if target == "-" else _targets(run, target):
            run.files += 1
            text = decode_source(sys.stdin.buffer.read()) if target == "-" else read_source(path)
            reports = check_text(
                text,
                source=str(path),
                kubernetes_version=version,
                policy_label=settings.policy_label,
                max_bytes=settings.max_policy_bytes,
            )
            run.add(str(path), reports)
    _duplicates(run)
    for where, problem in run.lines:
        err(problem_line(where, problem))
    for where, policy in sorted(run.policies, key=lambda item: item[1].name):
        sys.stdout.write(f"ok  {policy.name}  ({where}, hash {policy.content_hash})\n")
    errors, warnings = run.count("error"), run.count("warning")
    read = (
        f"{_plural(run.files, 'file')}, {_plural(len(run.policies), 'policy').replace('policys', 'policies')}"
    )
    if run.configmaps:
        read += f" from {_plural(len(run.configmaps), 'ConfigMap')}"
    verdict = (
        "ok" if not errors and not warnings else f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
    )
    sys.stdout.write(f"{read}: {verdict} (checked against Kubernetes {minor})\n")
    failed = errors > 0 or (args.strict and warnings > 0)
    return EXIT_ERROR if failed else EXIT_OK


def add_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="policy tools").add_subparsers(
        dest="policy_command", required=True
    )
    validate = policy.add_parser(
        "validate",
        help="check policy files, directories and manifests (ConfigMaps, Lists, helm template output) "
        "as Podgraft loads them; every problem on its own line, exit 1 on any error",
    )
    validate.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a policy file, a directory of them (.yaml, .yml, .json in any case), a file of manifests, "
        "or - for standard input (`helm template ... | podgraft policy validate -`)",
    )
    validate.add_argument(
        "--kubernetes-version",
        help="the cluster's version, whose schema the containers, volumes and env a policy injects "
        "are checked against (default PODGRAFT_KUBERNETES_VERSION, else 1.29, as the webhook)",
    )
    validate.add_argument(
        "--strict", action="store_true", help="warnings fail the run too (exit 1), as errors do"
    )
    validate.set_defaults(func=cmd_validate)
