"""`podgraft audit` and the running audit against the real kube-apiserver: pods injected through the
webhook go stale when their policy changes, pods admitted while Podgraft was down are missing, and
the server's `podgraft_pods{policy,state}` agrees with the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .kube import INJECT, PODGRAFT_NAMESPACE, eventually, injected, pod, podgraft_audit
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
    policy_namespaces = f"--policy-namespaces={PODGRAFT_NAMESPACE},{e2e.policy_namespace}"
    return podgraft_audit(e2e.plane.admin_kubeconfig, policy_namespaces, f"--policy={POLICY}", *args)


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
