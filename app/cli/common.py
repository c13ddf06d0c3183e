"""What the `podgraft` commands share: messages, settings from flags, policy loading (files: `files`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.policy.messages import validation_problems
from app.settings import Settings
from app.sources.directory import read_directory
from app.sources.store import PolicyStore

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
SERVER_ONLY = ("host", "port", "policy_source", "tls_cert", "tls_key", "tls_client_ca", "log_level")


def err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")


def warn(message: str) -> None:
    err(f"warning: {message}")


def cluster_flags(parser: argparse.ArgumentParser) -> None:
    """The flags naming the cluster and the policies in force (as `podgraft audit` has them)."""
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster, then ~/.kube/config")
    parser.add_argument("--policies", type=Path, help="policy directory instead of the cluster's ConfigMaps")
    parser.add_argument(
        "--policy-namespaces",
        type=lambda value: [v.strip() for v in value.split(",") if v.strip()],
        help="namespaces of the policy ConfigMaps in force (default: PODGRAFT_POLICY_NAMESPACES or podgraft)",
    )
    parser.add_argument(
        "--kubernetes-version", help="what `sidecarMode: auto` compares with (default: asked)"
    )
    parser.set_defaults(sidecar_mode=None)
    without_server_flags(parser)


def webhook_flag(parser: argparse.ArgumentParser) -> None:
    """`--webhook`: which MutatingWebhookConfiguration is Podgraft's (rollout, explain)."""
    parser.add_argument(
        "--webhook",
        metavar="NAME",
        help="Podgraft's MutatingWebhookConfiguration (default: the one labelled "
        "app.kubernetes.io/name=podgraft)",
    )


def settings_problems(exc: ValidationError, args: argparse.Namespace | None = None) -> list[str]:
    """One line per setting that does not validate, named as the user set it (the flag given, else
    the PODGRAFT_* variable), never a traceback."""
    lines = []
    for name, message in validation_problems(exc):
        flag = name.replace("_", "-")
        given = args is not None and getattr(args, name, None) is not None
        lines.append(f"error: {'--' + flag if given else 'PODGRAFT_' + name.upper()}: {message}")
    return lines


def settings_from(args: argparse.Namespace, **fixed: Any) -> Settings:
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


def engine_flags(parser: argparse.ArgumentParser) -> None:
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
    without_server_flags(parser)


def without_server_flags(parser: argparse.ArgumentParser) -> None:
    """A command that does not serve: the server's flags read as not given."""
    parser.set_defaults(**dict.fromkeys(SERVER_ONLY))


def load_policies(
    directory: Path, *, max_bytes: int, kubernetes_version: str
) -> tuple[PolicyStore, dict[str, str]]:
    """The policies of a directory, checked as the webhook checks them for that Kubernetes version."""
    store = PolicyStore(max_bytes=max_bytes, kubernetes_version=kubernetes_version)
    errors = store.replace_all(read_directory(directory))
    return store, errors
