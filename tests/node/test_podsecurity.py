"""Issue 10, scenario 9: an injected helper that breaks the namespace's `restricted` Pod Security
level. With `restricted` as the warn level (baseline enforced), the real client shows the warning
and the pod runs; with `restricted` enforced, kubectl shows Podgraft's warning naming the policy and
the container, and the apiserver's refusal."""

from __future__ import annotations

from typing import Any

from tests.e2e.kube import INJECT, injected, names

from .conftest import Cluster
from .workloads import app_container, pod_spec

ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _restricted_pod(image: str) -> dict[str, Any]:
    """A pod whose own container meets `restricted`; it asks for the root-helper policy."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "secure", "labels": {"app": "secure"}, "annotations": {INJECT: "root-helper"}},
        "spec": pod_spec([app_container(image, securityContext=RESTRICTED)]),
    }


def test_restricted_warn_level_the_client_gets_the_warning_and_the_pod_still_runs(cluster: Cluster) -> None:
    ns = cluster.namespace("psa-warn", **{ENFORCE: "baseline", WARN: "restricted"})
    result = cluster.kubectl.apply(ns, _restricted_pod(cluster.image))
    assert 'Warning: would violate PodSecurity "restricted:latest"' in result.stderr
    assert 'container "root-helper"' in result.stderr
    assert 'container "app"' not in result.stderr  # the pod's own container is fine
    (running,) = cluster.wait_pods(ns, "secure", count=1)
    assert injected(running) == ["root-helper"]
    assert names(running["spec"]["initContainers"]) == ["root-helper"]


def test_restricted_enforced_kubectl_shows_podgraft_naming_policy_and_container(cluster: Cluster) -> None:
    ns = cluster.namespace("psa-enforce", **{ENFORCE: "restricted"})
    result = cluster.kubectl.run(
        "apply", f"--namespace={ns}", "-f", "-", manifest=_restricted_pod(cluster.image), check=False
    )
    assert result.returncode != 0
    assert (
        "podgraft: policy 'root-helper': container 'root-helper' violates Pod Security 'restricted' "
        f"enforced in namespace '{ns}'"
    ) in result.stderr
    assert 'violates PodSecurity "restricted:latest"' in result.stderr  # the apiserver's refusal
    assert cluster.pods(ns, "secure") == []
