"""Scenario 6 of issue 3: policy ConfigMaps are watched; edits apply live, broken edits keep the last
good version and produce an Event, deletion removes the policies."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import CHART_POLICIES, E2E, E2E_POLICIES, example_policies
from .kube import INJECT, PODGRAFT_NAMESPACE, container, env_of, eventually, injected, pod
from .server import Podgraft

pytestmark = pytest.mark.e2e


def _policy(name: str, edition: str, *, position: str = "first") -> str:
    return f"""\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {{name: {name}}}
spec:
  initContainerPosition: {position}
  env: [{{name: EDITION, value: "{edition}"}}]
"""


def _edition(e2e: E2E, namespace: str, policy: str) -> str | None:
    """EDITION as injected into a dry-run pod that requests `policy` (None: not injected)."""
    body = e2e.kube.create_pod(namespace, pod(name="probe", annotations={INJECT: policy}), dry_run=True).body
    return env_of(container(body, "app")).get("EDITION")


def _rejections(e2e: E2E, namespace: str, name: str) -> list[dict[str, Any]]:
    events = [e for e in e2e.kube.events_for(namespace, "ConfigMap", name) if e["reason"] == "PolicyRejected"]
    assert events, f"no PolicyRejected Event on ConfigMap {namespace}/{name} yet"
    return events


def test_policy_configmap_edits_apply_live_and_a_broken_edit_keeps_the_last_good_version(e2e: E2E) -> None:
    kube, ns = e2e.kube, e2e.opted_in()
    where = e2e.policy_namespace  # the second watched namespace
    neighbour = _policy("neighbour", "n1")

    kube.put_configmap(
        where, "editable", {"editable.yaml": _policy("editable", "v1"), "neighbour.yaml": neighbour}
    )
    eventually(lambda: _check(_edition(e2e, ns, "editable") == "v1"), what="the new ConfigMap is loaded")

    kube.put_configmap(
        where, "editable", {"editable.yaml": _policy("editable", "v2"), "neighbour.yaml": neighbour}
    )
    eventually(lambda: _check(_edition(e2e, ns, "editable") == "v2"), what="the edit is loaded")

    broken = _policy("editable", "v3", position="middle")
    kube.put_configmap(
        where, "editable", {"editable.yaml": broken, "neighbour.yaml": _policy("neighbour", "n2")}
    )
    events = eventually(lambda: _rejections(e2e, where, "editable"), what="an Event on the ConfigMap")

    message = events[0]["message"]
    assert events[0]["type"] == "Warning"
    assert f"ConfigMap {where}/editable" in message
    assert "'editable.yaml'" in message
    assert "spec.initContainerPosition" in message
    assert "stays in force" in message
    assert events[0]["involvedObject"]["kind"] == "ConfigMap"
    # each key is validated on its own: the broken key keeps v2, its neighbour moves on to n2
    assert _edition(e2e, ns, "editable") == "v2"
    eventually(lambda: _check(_edition(e2e, ns, "neighbour") == "n2"), what="the neighbour key is loaded")
    errors = e2e.podgraft.readiness()["policyErrors"]
    assert "spec.initContainerPosition" in errors[f"configmap {where}/editable key editable.yaml"]
    assert e2e.podgraft.ready()  # a rejected key does not make the server unready

    # repaired: the new version applies and the error is gone
    kube.put_configmap(where, "editable", {"editable.yaml": _policy("editable", "v4")})
    eventually(lambda: _check(_edition(e2e, ns, "editable") == "v4"), what="the repaired key is loaded")
    assert f"configmap {where}/editable key editable.yaml" not in e2e.podgraft.readiness()["policyErrors"]
    # the key dropped from the ConfigMap took its policy with it
    eventually(lambda: _check(_edition(e2e, ns, "neighbour") is None), what="the removed key is unloaded")

    kube.delete_configmap(where, "editable")

    def gone() -> None:
        response = kube.create_pod(ns, pod(name="probe", annotations={INJECT: "editable"}), dry_run=True)
        assert injected(response.body) == []
        assert any("'editable' does not exist" in w for w in response.warnings), response.warnings

    eventually(gone, what="the deleted ConfigMap's policy is removed")


def test_removing_the_policy_label_unloads_the_configmap(e2e: E2E) -> None:
    kube, ns = e2e.kube, e2e.opted_in()
    data = {"labelled.yaml": _policy("labelled", "l1")}
    kube.put_configmap(e2e.policy_namespace, "labelled", data)
    eventually(lambda: _check(_edition(e2e, ns, "labelled") == "l1"), what="the labelled ConfigMap is loaded")

    kube.put_configmap(e2e.policy_namespace, "labelled", data, labels={"podgraft.io/policy": "false"})
    eventually(
        lambda: _check(_edition(e2e, ns, "labelled") is None), what="the unlabelled ConfigMap is unloaded"
    )


def test_readyz_waits_for_the_first_full_sync_of_every_watched_namespace(e2e: E2E) -> None:
    """A second server also watches a namespace where the chart's RBAC grants it nothing yet: it
    stays unready (403 on the list, retried with backoff) until a Role lets it list, then syncs."""
    kube = e2e.kube
    locked = kube.namespace("locked")
    kube.put_configmap(locked, "late", {"late.yaml": _policy("late", "z1")})
    second = Podgraft.start(
        workdir=e2e.workdir,
        kubeconfig=e2e.podgraft_kubeconfig,
        certs=e2e.workdir / "podgraft-certs",
        namespace=PODGRAFT_NAMESPACE,
        policy_namespaces=[PODGRAFT_NAMESPACE, locked],
        wait=False,
        name="podgraft-second",
    )
    try:
        eventually(lambda: _check("HTTP 403" in second.process.tail(400)), what="the list is forbidden")
        readiness = second.readiness()
        assert readiness["ready"] is False
        assert readiness["policiesSynced"] is False
        assert not second.ready()

        for doc in e2e.chart.rbac:  # what `policies.watchNamespaces: [locked]` would have rendered
            if doc["kind"] in ("Role", "RoleBinding") and doc["metadata"]["namespace"] == PODGRAFT_NAMESPACE:
                kube.create_objects([{**doc, "metadata": {**doc["metadata"], "namespace": locked}}])
        eventually(lambda: _check(second.ready()), timeout=30, what="the second server syncs and is ready")
        # every policy of Podgraft's own namespace (examples, e2e, the chart's), and the one of the
        # unlocked namespace
        own = len(example_policies()) + len(E2E_POLICIES) + len(CHART_POLICIES)
        assert second.readiness()["policies"] == own + 1
    finally:
        second.stop()


def _check(condition: bool) -> None:
    assert condition


def test_a_policy_shipped_in_the_chart_values_is_installed_and_injected(e2e: E2E) -> None:
    (configmap,) = e2e.chart.policies
    assert configmap["metadata"]["labels"]["podgraft.io/policy"] == "true"
    ns = e2e.opted_in()
    body = e2e.kube.create_pod(
        ns, pod(name="chart", annotations={INJECT: "chart-defaults"}), dry_run=True
    ).body
    assert injected(body) == ["chart-defaults"]
    assert env_of(container(body, "app"))["FROM_CHART"] == ns
