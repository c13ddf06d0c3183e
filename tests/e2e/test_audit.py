"""`podgraft audit` and the running audit against the real kube-apiserver: pods injected through the
webhook go stale when their policy changes, pods admitted while Podgraft was down are missing, and
the server's `podgraft_pods{policy,state}` agrees with the CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from .kube import INJECT, PODGRAFT_NAMESPACE, eventually, injected, pod, run_podgraft_audit
from .stack import E2E

POLICY = "audit-stamp"
STAMPS = {"v1": "first", "v2": "second"}


def stamp_policy(version: str) -> dict[str, str]:
    return {
        f"{POLICY}.yaml": f"""\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {{name: {POLICY}}}
spec:
  env: [{{name: AUDIT_STAMP, value: {STAMPS[version]}}}]
"""
    }


def audit(e2e: E2E, *args: str) -> tuple[int, dict[str, Any]]:
    """`podgraft audit` as an admin runs it, with the cluster's policies; (exit code, JSON)."""
    result = run_audit(e2e, *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def run_audit(e2e: E2E, *args: str) -> subprocess.CompletedProcess[str]:
    policy_namespaces = f"--policy-namespaces={PODGRAFT_NAMESPACE},{e2e.policy_namespace}"
    return run_podgraft_audit(e2e.plane.admin_kubeconfig, policy_namespaces, f"--policy={POLICY}", *args)


def states(report: dict[str, Any]) -> dict[str, str]:
    return {p["pod"]: s["state"] for p in report["pods"] for s in p["policies"] if s["policy"] == POLICY}


@pytest.fixture
def stamp(e2e: E2E) -> Iterator[str]:
    """The stamp policy at v1, in the second watched namespace; removed afterwards."""
    e2e.kube.put_configmap(e2e.policy_namespace, POLICY, stamp_policy("v1"))
    namespace = e2e.opted_in("audit")
    probe = pod(name="probe", annotations={INJECT: POLICY})

    def loaded() -> None:
        assert injected(e2e.kube.create_pod(namespace, probe, dry_run=True).body) == [POLICY]

    eventually(loaded, what="Podgraft loaded the stamp policy")
    yield namespace
    e2e.kube.delete_configmap(e2e.policy_namespace, POLICY)


def metric_counts(e2e: E2E) -> dict[str, float]:
    found = {}
    for state in ("current", "stale", "missing"):
        value = e2e.podgraft.metric("podgraft_pods", policy=POLICY, state=state)
        if value:
            found[state] = value
    return found


def test_a_policy_edit_makes_injected_pods_stale_in_the_cli_and_the_metrics(e2e: E2E, stamp: str) -> None:
    kube = e2e.kube
    for name in ("web-1", "web-2"):
        created = kube.create_pod(stamp, pod(name=name, annotations={INJECT: POLICY}))
        assert POLICY in injected(created.body)

    code, report = audit(e2e, "-n", stamp)
    assert (code, states(report)) == (0, {"web-1": "current", "web-2": "current"})
    eventually(lambda: _equal(metric_counts(e2e), {"current": 2}), what="the running audit counts them")

    kube.put_configmap(e2e.policy_namespace, POLICY, stamp_policy("v2"))

    def second_version_in_force() -> None:
        body = kube.create_pod(stamp, pod(name="probe", annotations={INJECT: POLICY}), dry_run=True).body
        assert {"name": "AUDIT_STAMP", "value": "second"} in body["spec"]["containers"][0]["env"]

    eventually(second_version_in_force, what="the edit is live")
    code, report = audit(e2e, "-n", stamp)
    assert (code, states(report)) == (1, {"web-1": "stale", "web-2": "stale"})
    [stale] = [s for s in report["pods"][0]["policies"] if s["policy"] == POLICY]
    assert stale["recordedHash"] != stale["liveHash"]
    assert stale["detail"].startswith(f"{stale['recordedHash']} -> {stale['liveHash']}: ")
    assert "AUDIT_STAMP" in stale["detail"]
    eventually(lambda: _equal(metric_counts(e2e), {"stale": 2}), timeout=20, what="the census re-listed")
    snapshot = json.loads(e2e.podgraft.get("/audit")[1])
    assert snapshot["policies"][POLICY] == {"stale": 2}
    assert {(p["pod"], p["state"]) for p in snapshot["notCurrent"] if p["policy"] == POLICY} == {
        ("web-1", "stale"),
        ("web-2", "stale"),
    }


def test_pods_admitted_while_podgraft_was_down_are_missing(e2e: E2E, stamp: str) -> None:
    kube = e2e.kube
    configuration = kube.webhook_configuration(e2e.webhook_name)
    configuration["metadata"] = {
        "name": e2e.webhook_name,
        "labels": configuration["metadata"].get("labels", {}),
    }
    ignoring = json.loads(json.dumps(configuration))
    for webhook in ignoring["webhooks"]:
        webhook["failurePolicy"] = "Ignore"
        webhook["timeoutSeconds"] = 2
    kube.put_webhook(ignoring)
    e2e.podgraft.stop()
    try:
        created = eventually(
            lambda: kube.create_pod(stamp, pod(name="while-down", annotations={INJECT: POLICY})),
            what="the apiserver admits pods uninjected under Ignore",
        )
        assert injected(created.body) == []
    finally:
        e2e.podgraft.restart()
        kube.put_webhook(configuration)

    code, report = audit(e2e, "-A")
    assert code == 1
    assert states(report)["while-down"] == "missing"
    [missing] = [p for p in report["pods"] if p["pod"] == "while-down"]
    assert missing["owner"] == "Pod/while-down"
    cli = {state: float(n) for state, n in report["summary"][POLICY].items()}
    eventually(lambda: _equal(metric_counts(e2e), cli), what="the metrics agree with the CLI")


def _equal(found: dict[str, float], wanted: dict[str, float]) -> None:
    assert found == wanted


def test_a_label_selector_filters_in_the_cluster_as_in_a_dump(e2e: E2E, stamp: str) -> None:
    for name, labels in (("front-1", {"tier": "front"}), ("back-1", {"tier": "back"}), ("plain-1", {})):
        created = pod(name=name, annotations={INJECT: POLICY}, labels={"app": "shop", **labels})
        e2e.kube.create_pod(stamp, created)
    for selector, expected in (
        ("tier", {"front-1", "back-1"}),
        ("!tier", {"plain-1"}),
        ("tier notin (front)", {"back-1", "plain-1"}),
    ):
        _, report = audit(e2e, "-n", stamp, "-l", selector)
        assert set(states(report)) == expected, selector
    bad = run_audit(e2e, "-n", stamp, "-l", "tier in front")
    assert bad.returncode == 2
    assert bad.stderr == "error: -l 'tier in front': expected '(' after 'in' or 'notin'\n"


def test_a_policy_configmap_that_does_not_load_stops_the_audit(e2e: E2E, stamp: str) -> None:
    broken = (
        "apiVersion: podgraft.io/v1alpha1\nkind: InjectionPolicy\nmetadata: {name: broken}\n"
        "spec:\n  sidecars: [{name: x}]\n"
    )
    e2e.kube.put_configmap(e2e.policy_namespace, "broken", {"broken.yaml": broken})
    try:
        result = run_audit(e2e, "-n", stamp)
    finally:
        e2e.kube.delete_configmap(e2e.policy_namespace, "broken")
    assert (result.returncode, result.stdout) == (2, "")
    first, last = result.stderr.splitlines()
    assert first == (
        f"error: policy configmap {e2e.policy_namespace}/broken key broken.yaml: document 1: policy 'broken':"
        " spec.sidecars[0].image: Field required"
    )
    assert last.startswith("error: 1 policy source(s) do not load")
