"""`podgraft serve | inject | audit | rollout | explain | policy validate | certs generate | patch-ca-bundle`.

One module per command (`inject`, `audit`, `rollout`, `explain`, `policy`, `certs`), each with its
`add_parser`; what they share is in `common`. `serve` is here: it only hands the settings to `app.serve`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app import __version__
from app.cli import audit, certs, explain, inject, policy, rollout
from app.cli.common import EXIT_USAGE, engine_flags, err, settings_from, settings_problems
from app.cli.inject import inject_documents

__all__ = ["build_parser", "inject_documents", "main"]


def cmd_serve(args: argparse.Namespace) -> int:
    from app.serve import serve

    return serve(settings_from(args))


def _serve_parser(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the webhook server (HTTPS)")
    engine_flags(serve)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="podgraft", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"podgraft {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(commands)
    for command in (inject, audit, rollout, explain, policy, certs):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:  # a setting from the environment or a flag: a usage error
        for line in settings_problems(exc, args):
            err(line)
        return EXIT_USAGE
    return code
