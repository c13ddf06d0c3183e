"""The node tier's `podgraft rollout` and `podgraft explain` as a platform team runs them: a
ServiceAccount bound to exactly the RBAC the README documents (examples/rbac/), its token from the
TokenRequest API in a kubeconfig of its own, and the CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

from hack.cluster.processes import REPO
from tests.e2e.kube import INJECT, PODGRAFT_NAMESPACE, eventually, injected

from .conftest import Cluster
from .workloads import policy

RBAC = REPO / "examples" / "rbac"


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def operator(cluster: Cluster, name: str, *files: str) -> Path:
    """A kubeconfig for ServiceAccount podgraft/`name`, bound by `files` (examples/rbac/, subjects and
    the policy Role's namespace swapped for this cluster's: the release namespace, the one Podgraft
    watches for policies)."""
    kube = cluster.kube
    try:
        kube.core.create_namespaced_service_account(PODGRAFT_NAMESPACE, {"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    subject = {"kind": "ServiceAccount", "name": name, "namespace": PODGRAFT_NAMESPACE}
    documents = []
    for file in files:
        for document in yaml.safe_load_all((RBAC / file).read_text()):
            meta = document["metadata"]
            meta["name"] = f"{meta['name']}-{name}"
            if "roleRef" in document:
                document["roleRef"]["name"] = f"{document['roleRef']['name']}-{name}"
                document["subjects"] = [subject]
            if document["kind"] in ("Role", "RoleBinding"):
                meta["namespace"] = cluster.policy_namespace
            documents.append(document)
    kube.create_objects(documents)
    token = kube.core.create_namespaced_service_account_token(
        name, PODGRAFT_NAMESPACE, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    user = f"system:serviceaccount:{PODGRAFT_NAMESPACE}:{name}"
    return cluster.local.plane.kubeconfig_for(user, token, f"{name}.kubeconfig")


def podgraft(kubeconfig: Path, *args: str, timeout: float = 300) -> Run:
    """`podgraft ARGS` with the cluster's policies in force (those of the release namespace)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            *args[:1],
            f"--kubeconfig={kubeconfig}",
            f"--policy-namespaces={PODGRAFT_NAMESPACE}",
            *args[1:],
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=timeout,
    )
    return Run(result.returncode, result.stdout, result.stderr)


def publish(cluster: Cluster, name: str, version: str) -> None:
    """Policy `name`, env-only (it reads no pod field: issue 15), at `version`; waits until served."""
    text = policy(name, env=[{"name": "ROLLED", "value": version}])
    cluster.kube.put_configmap(cluster.policy_namespace, f"{name}-policy", {f"{name}.yaml": text})
    namespace = cluster.namespace("probe")
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "probe-", "annotations": {INJECT: name}},
        "spec": {"containers": [{"name": "app", "image": cluster.image}]},
    }

    def served() -> None:
        body = cluster.kube.create_pod(namespace, probe, dry_run=True).body
        assert injected(body) == [name], body["metadata"]
        assert {"name": "ROLLED", "value": version} in body["spec"]["containers"][0]["env"]

    eventually(served, timeout=30, what=f"Podgraft serves {name} {version}")


def restarted_at(cluster: Cluster, namespace: str, name: str) -> str | None:
    template = cluster.apps.read_namespaced_deployment(name, namespace).spec.template
    return (template.metadata.annotations or {}).get("kubectl.kubernetes.io/restartedAt")


def ready_times(pods: Sequence[dict[str, Any]]) -> list[str]:
    """When each pod became Ready (its Ready condition's lastTransitionTime, RFC 3339 UTC)."""
    return [
        next(c["lastTransitionTime"] for c in p["status"]["conditions"] if c["type"] == "Ready") for p in pods
    ]
