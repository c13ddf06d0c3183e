"""`podgraft certs generate | patch-ca-bundle`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.cli.common import EXIT_ERROR, EXIT_OK, err


def cmd_certs_generate(args: argparse.Namespace) -> int:
    from app.certs import generate_bundle, service_hostnames, write_bundle

    hostnames = [*service_hostnames(args.service, args.namespace), *args.host]
    bundle = generate_bundle(hostnames, days=args.days)
    write_bundle(bundle, Path(args.out))
    err(f"wrote {args.out}/ca.crt, ca.key, tls.crt, tls.key for {', '.join(hostnames)}")
    if args.print_ca_bundle:
        sys.stdout.write(bundle.ca_bundle() + "\n")
    else:
        err(f"the webhook's caBundle is base64 of {args.out}/ca.crt (--print-ca-bundle prints it)")
    return EXIT_OK


def cmd_certs_patch(args: argparse.Namespace) -> int:
    from app.cluster.cabundle import patch_ca_bundle

    try:
        changed = patch_ca_bundle(args.webhook, Path(args.ca), kubeconfig=args.kubeconfig)
    except Exception as exc:  # report any API or file error as one line
        err(f"error: {exc}")
        return EXIT_ERROR
    sys.stdout.write(f"{args.webhook}: caBundle {'updated' if changed else 'already current'}\n")
    return EXIT_OK


def add_parser(commands: Any) -> None:
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
