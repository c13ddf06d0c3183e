"""Issue 18: `podgraft rollout` with the real controllers, run by a ServiceAccount that holds exactly
examples/rbac/podgraft-rollout.yaml. A policy edit, then: two Deployments restarted one after the
other until their new pods are Ready and current; a Deployment whose PodDisruptionBudget can never
allow a disruption, and one whose budget allows none now, blocked and left alone; Podgraft down
under failurePolicy Ignore (the release's webhook patched to Ignore, its Deployment scaled to zero,
then both put back) stops the run at the preflight, before anything is restarted."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.e2e.kube import eventually, injected

from .conftest import Cluster
from .operators import operator, podgraft, publish, ready_times, restarted_at
from .workloads import app_container, deployment, pod_spec

POLICY = "rolled"


@pytest.fixture(scope="module")
def rollout_kubeconfig(cluster: Cluster) -> Path:
    return operator(cluster, "rollout-operator", "podgraft-rollout.yaml", "podgraft-policies-reader.yaml")


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _apps(cluster: Cluster, namespace: str, *names: str, replicas: int = 1, spec: Any = None) -> None:
    for name in names:
        body = spec or pod_spec([app_container(cluster.image)])
        cluster.create(namespace, deployment(name, replicas=replicas, spec=body, inject=POLICY))


def test_two_deployments_restarted_one_after_the_other_until_every_pod_is_current(
    cluster: Cluster, rollout_kubeconfig: Path
) -> None:
    publish(cluster, POLICY, "v1")
    ns = cluster.namespace("roll")
    _apps(cluster, ns, "alpha", "beta", replicas=2)
    for name in ("alpha", "beta"):
        cluster.wait_pods(ns, name, count=2)
    publish(cluster, POLICY, "v2")

    planned = podgraft(rollout_kubeconfig, "rollout", "-n", ns, "--policy", POLICY)
    assert planned.code == 1, planned.stderr
    assert "dry run: nothing is restarted" in planned.stdout
    assert planned.stdout.index("deployment/alpha") < planned.stdout.index("deployment/beta")
    assert "preflight: a dry-run pod from its template gets rolled " in planned.stdout
    assert restarted_at(cluster, ns, "alpha") is None

    run = podgraft(
        rollout_kubeconfig, "rollout", "-n", ns, "--policy", POLICY, "--yes", "--timeout=120s", "-o", "json"
    )
    assert run.code == 0, run.stdout + run.stderr
    report = run.json()
    assert [(w["name"], w["result"]) for w in report["workloads"]] == [
        ("alpha", "restarted"),
        ("beta", "restarted"),
    ]
    alpha, beta = report["workloads"]
    assert _stamp(alpha["finishedAt"]) <= _stamp(beta["startedAt"])  # the run's own clock: no overlap
    assert report["summary"] == {"restarted": 2, "notTouched": 0}

    # the cluster's clock agrees: beta was restarted after every new pod of alpha was Ready
    alpha_pods = cluster.wait_pods(ns, "alpha", count=2)
    beta_pods = cluster.wait_pods(ns, "beta", count=2)
    assert restarted_at(cluster, ns, "beta") == beta["restartedAt"]
    assert max(_stamp(t) for t in ready_times(alpha_pods)) <= _stamp(beta["restartedAt"])
    for pod in [*alpha_pods, *beta_pods]:
        assert injected(pod) == [POLICY]
        assert {"name": "ROLLED", "value": "v2"} in pod["spec"]["containers"][0]["env"]

    audit = podgraft(rollout_kubeconfig, "audit", "-n", ns, "--policy", POLICY, "-o", "json")
    assert audit.code == 0, audit.stdout + audit.stderr
    assert {s["state"] for p in audit.json()["pods"] for s in p["policies"]} == {"current"}
    again = podgraft(rollout_kubeconfig, "rollout", "-n", ns, "--policy", POLICY, "--yes")
    assert again.code == 0
    assert "summary: 0 restarted, 2 already current, 0 blocked, 0 failed" in again.stdout


def _budget(cluster: Cluster, namespace: str, app: str, **rule: Any) -> None:
    body = {"metadata": {"name": app}, "spec": {"selector": {"matchLabels": {"app": app}}, **rule}}
    client.PolicyV1Api(cluster.kube.api).create_namespaced_pod_disruption_budget(namespace, body)

    def computed() -> None:
        found = client.PolicyV1Api(cluster.kube.api).read_namespaced_pod_disruption_budget(app, namespace)
        assert found.status is not None, "no status yet"
        assert found.status.expected_pods, found.status

    eventually(computed, timeout=60, what=f"the disruption controller counted {app}'s pods")


def test_a_budget_that_can_never_allow_a_disruption_blocks_its_deployment_and_the_run_goes_on(
    cluster: Cluster, rollout_kubeconfig: Path
) -> None:
    publish(cluster, POLICY, "v1")
    ns = cluster.namespace("guarded")
    _apps(cluster, ns, "free", "guarded")
    for name in ("free", "guarded"):
        cluster.wait_pods(ns, name, count=1)
    _budget(cluster, ns, "guarded", minAvailable=1)
    publish(cluster, POLICY, "v2")

    run = podgraft(
        rollout_kubeconfig, "rollout", "-n", ns, "--policy", POLICY, "--yes", "--timeout=120s", "-o", "json"
    )
    assert run.code == 1, run.stdout + run.stderr
    results = {w["name"]: (w["result"], w["reason"]) for w in run.json()["workloads"]}
    assert results["free"][0] == "restarted"
    assert results["guarded"] == (
        "blocked",
        "PodDisruptionBudget guarded can never allow a disruption: it wants 1 of 1 pods healthy "
        "(minAvailable 1); a restart would take one down (--ignore-pdb restarts it anyway)",
    )
    assert restarted_at(cluster, ns, "guarded") is None
    assert restarted_at(cluster, ns, "free") is not None


def test_a_budget_that_allows_no_disruption_now_is_waited_on_then_blocked(
    cluster: Cluster, rollout_kubeconfig: Path
) -> None:
    publish(cluster, POLICY, "v1")
    ns = cluster.namespace("sick")
    _apps(
        cluster,
        ns,
        "sick",
        replicas=2,
        spec=pod_spec([app_container(cluster.image, command=["sleep", "3600"])]),
    )
    eventually(lambda: _count(cluster, ns, "sick", 2), timeout=60, what="two (never Ready) pods of sick")
    _budget(cluster, ns, "sick", minAvailable=1)
    publish(cluster, POLICY, "v2")

    run = podgraft(
        rollout_kubeconfig, "rollout", "-n", ns, "--policy", POLICY, "--yes", "--timeout=5s", "-o", "json"
    )
    assert run.code == 1, run.stdout + run.stderr
    [sick] = run.json()["workloads"]
    assert (sick["result"], sick["reason"]) == (
        "blocked",
        "waited 5s: PodDisruptionBudget sick allows no disruption now: 0 of 2 pods healthy, 1 needed",
    )
    assert restarted_at(cluster, ns, "sick") is None


def _count(cluster: Cluster, namespace: str, app: str, count: int) -> None:
    assert len(cluster.pods(namespace, app)) == count


def test_podgraft_down_under_ignore_fails_the_preflight_and_restarts_nothing(
    cluster: Cluster, rollout_kubeconfig: Path
) -> None:
    publish(cluster, POLICY, "v1")
    ns = cluster.namespace("down")
    _apps(cluster, ns, "web")
    cluster.wait_pods(ns, "web", count=1)
    publish(cluster, POLICY, "v2")
    with cluster.podgraft_down("Ignore"):
        run = podgraft(rollout_kubeconfig, "rollout", "-n", ns, "--policy", POLICY, "--yes")
    assert run.code == 2, run.stdout + run.stderr
    assert (
        f"stopped: the preflight failed, nothing was restarted: {ns} Deployment/web: the webhook did not "
        f"inject {POLICY}: the apiserver calls podgraft / podgraft.podgraft.io for it, so Podgraft did "
        "not answer and failurePolicy Ignore let the pod in uninjected: is Podgraft running and reachable?"
    ) in run.stdout
    assert run.stdout.startswith("nothing is restarted: the preflight failed before the first restart")
    assert "--yes" not in run.stdout, "it was given"
    assert restarted_at(cluster, ns, "web") is None


def test_missing_permissions_are_named_before_anything_is_read(cluster: Cluster) -> None:
    kubeconfig = operator(cluster, "rollout-readonly")  # bound to nothing
    run = podgraft(kubeconfig, "rollout", "-A", "--yes")
    assert (run.code, run.stdout) == (2, "")
    assert run.stderr == (
        "warning: no permission to list jobs.batch in all namespaces: Job pods show the Job as owner\n"
        "warning: no permission to list namespaces (cluster-wide): namespaces are taken as opted in\n"
        "error: missing permissions (see the README's RBAC for podgraft rollout):\n"
        "  list pods in all namespaces (the audit)\n"
        "  list replicasets.apps in all namespaces (the owners of Deployments' pods)\n"
        "  list configmaps in namespace podgraft (the policies in force)\n"
    )
