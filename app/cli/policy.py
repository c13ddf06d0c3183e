"""`podgraft policy validate`: every problem of every policy file, one line each, before it ships."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.cli.common import EXIT_ERROR, EXIT_OK, err
from app.policy.model import PolicyError
from app.settings import Settings
from app.sources.directory import read_directory
from app.sources.documents import SourceError, SourceText, compile_source
from app.sources.store import PolicyStore


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
            err(f"error: {exc}")
            failed = True
            continue
        store = PolicyStore(max_bytes=max_bytes)
        errors = store.replace_all(texts)
        for key, message in sorted(errors.items()):
            for problem in _problems(key, texts[key], message, max_bytes):
                err(f"{base / key}: {problem}")
            failed = True
        for name, policy in sorted(store.current().by_name.items()):
            sys.stdout.write(f"ok  {name}  ({base / policy.source}, hash {policy.content_hash})\n")
    return EXIT_ERROR if failed else EXIT_OK


def add_parser(commands: Any) -> None:
    policy = commands.add_parser("policy", help="policy tools").add_subparsers(
        dest="policy_command", required=True
    )
    validate = policy.add_parser(
        "validate", help="validate policy files and directories; every problem on its own line, exit 1 if any"
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="a policy file, or a directory of them")
    validate.set_defaults(func=cmd_validate)
