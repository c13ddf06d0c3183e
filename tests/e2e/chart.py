"""The Helm chart as the e2e tier uses it: `helm template` (the pinned helm binary) of the chart's
webhook configurations, RBAC and policy ConfigMaps, with tls.mode=secret, our CA and the running audit."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from hack.cluster.release import CHART, helm_binary

from .kube import PODGRAFT_NAMESPACE

RELEASE = "pg"


@dataclass
class ChartObjects:
    webhook: dict[str, Any]
    rbac: list[dict[str, Any]]
    service_account: tuple[str, str] = ("", "")  # (namespace, name) the RBAC binds
    policies: list[dict[str, Any]] = field(default_factory=list)  # ConfigMaps from policies.definitions
    validating: dict[str, Any] = field(default_factory=dict)  # the ValidatingWebhookConfiguration (policies)

    def user(self) -> str:
        return f"system:serviceaccount:{self.service_account[0]}:{self.service_account[1]}"


def render_chart(
    *, ca_bundle: str, watch_namespaces: Sequence[str], policies: Mapping[str, Any] | None = None
) -> ChartObjects:
    """`helm template` the chart's webhook configuration, RBAC and policy ConfigMaps (from
    `policies.definitions`), with tls.mode=secret and our CA."""
    argv = [
        str(helm_binary()),
        "template",
        RELEASE,
        str(CHART),
        f"--namespace={PODGRAFT_NAMESPACE}",
        "--set=tls.mode=secret",
        "--set=tls.secret.name=podgraft-e2e-tls",
        f"--set=tls.secret.caBundle={ca_bundle}",
        f"--set-json=policies.watchNamespaces={json.dumps(list(watch_namespaces))}",
        f"--set-json=policies.definitions={json.dumps(dict(policies or {}))}",
        "--set=audit.enabled=true",  # the running audit: the server watches pods with the chart's RBAC
        "--show-only=templates/webhook.yaml",
        "--show-only=templates/rbac.yaml",
        *(["--show-only=templates/policies.yaml"] if policies else []),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed:\n{result.stderr}")
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    webhooks = [d for d in documents if d["kind"] == "MutatingWebhookConfiguration"]
    rbac = [d for d in documents if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    assert len(webhooks) == 1, f"expected one MutatingWebhookConfiguration, got {len(webhooks)}"
    binding = next(d for d in rbac if d["kind"] == "ClusterRoleBinding")
    subject = binding["subjects"][0]
    configmaps = [d for d in documents if d["kind"] == "ConfigMap"]
    (validating,) = [d for d in documents if d["kind"] == "ValidatingWebhookConfiguration"]
    return ChartObjects(webhooks[0], rbac, (subject["namespace"], subject["name"]), configmaps, validating)
