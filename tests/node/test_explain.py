"""Issue 18: `podgraft explain` against the live cluster, run by a ServiceAccount that holds exactly
examples/rbac/podgraft-explain.yaml and podgraft-policies-reader.yaml: an injected pod, an opted-out
one, one in a namespace without the opt-in label, a Deployment's next pods, and the order of the
mutating webhooks with a second one registered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kube import INJECT, INJECTION_LABEL
from tests.e2e.webhooks import temporary_webhook, webhook_configuration

from .conftest import Cluster
from .operators import operator, podgraft, publish
from .workloads import app_container, deployment, pod_spec

POLICY = "explained"
PODGRAFT = "podgraft / podgraft.podgraft.io (Podgraft)"  # the release's configuration / webhook


@pytest.fixture(scope="module")
def explain_kubeconfig(cluster: Cluster) -> Path:
    publish(cluster, POLICY, "v1")
    return operator(cluster, "explain-operator", "podgraft-explain.yaml", "podgraft-policies-reader.yaml")


def _bare_pod(cluster: Cluster, namespace: str, name: str, *, annotations: Any, labels: Any) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations, "labels": labels},
        "spec": pod_spec([app_container(cluster.image)]),
    }
    cluster.kube.create_pod(namespace, body)


def test_an_injected_pod_and_its_deployment(cluster: Cluster, explain_kubeconfig: Path) -> None:
    ns = cluster.namespace("explain")
    cluster.create(
        ns, deployment("web", replicas=1, spec=pod_spec([app_container(cluster.image)]), inject=POLICY)
    )
    (pod,) = cluster.wait_pods(ns, "web", count=1)
    name = pod["metadata"]["name"]

    run = podgraft(explain_kubeconfig, "explain", "-n", ns, f"pod/{name}")
    assert run.code == 0, run.stderr
    assert run.stdout.startswith(f"pod {ns}/{name} (owner Deployment/web)\n")
    assert f"namespace {ns}: opted in (podgraft.io/injection=enabled)" in run.stdout
    assert (
        f"  {POLICY}  injected  requested by podgraft.io/inject; already injected and current (hash "
        in run.stdout
    )
    assert f"  1. {PODGRAFT}: called; failurePolicy " in run.stdout

    data = podgraft(explain_kubeconfig, "explain", "-n", ns, f"pod/{name}", "-o", "json").json()
    assert [
        (p["policy"], p["verdict"], p["state"]) for p in data["policies"] if p["verdict"] != "not selected"
    ] == [(POLICY, "injected", "current")]
    assert [w["called"] for w in data["webhooks"] if w["podgraft"]] == [True]

    template = podgraft(explain_kubeconfig, "explain", "-n", ns, "deployment/web")
    assert template.code == 0, template.stderr
    assert f"deployment {ns}/web: the pods its template makes" in template.stdout
    assert f"  {POLICY}  would be injected  requested by podgraft.io/inject; injected" in template.stdout
    assert "  not selected: " in template.stdout  # the cluster's other policies, on one line
    assert "its running pods: 1 current" in template.stdout


def test_an_opted_out_pod_is_skipped_and_never_sent(cluster: Cluster, explain_kubeconfig: Path) -> None:
    ns = cluster.namespace("explain-out")
    _bare_pod(
        cluster, ns, "out", annotations={INJECT: "false"}, labels={"app": "out", INJECTION_LABEL: "disabled"}
    )
    run = podgraft(explain_kubeconfig, "explain", "-n", ns, "pod/out")
    assert run.code == 0, run.stderr
    assert "  the whole pod is skipped: the pod opts out (podgraft.io/inject: false)" in run.stdout
    assert f"  -  {PODGRAFT}: not called" in run.stdout
    assert "       objectSelector podgraft.io/injection notin (disabled): does not match" in run.stdout


def test_a_pod_in_a_namespace_without_the_label(cluster: Cluster, explain_kubeconfig: Path) -> None:
    ns = cluster.namespace("plain", opted_in=False)
    _bare_pod(cluster, ns, "asks", annotations={INJECT: POLICY}, labels={"app": "asks"})
    run = podgraft(explain_kubeconfig, "explain", "-n", ns, "pod/asks")
    assert run.code == 0, run.stderr
    assert f"namespace {ns}: not opted in (no podgraft.io/injection=enabled label)" in run.stdout
    assert f"  the whole pod is skipped: namespace '{ns}' is not opted in" in run.stdout
    assert f"  -  {PODGRAFT}: not called" in run.stdout
    assert "       namespaceSelector podgraft.io/injection=enabled," in run.stdout


def test_a_second_mutating_webhook_is_listed_in_the_apiservers_order(
    cluster: Cluster, explain_kubeconfig: Path
) -> None:
    ns = cluster.namespace("explain-two")
    _bare_pod(cluster, ns, "two", annotations={INJECT: POLICY}, labels={"app": "two", "explain": "second"})
    (registered,) = cluster.kube.webhook_configuration(cluster.release.fullname)["webhooks"]
    second = webhook_configuration(  # selects only the pod above, created before it exists: never called
        "a-second",
        url="https://127.0.0.1:1/never-called",
        ca_bundle=registered["clientConfig"]["caBundle"],
        failure_policy="Ignore",
        object_labels={"explain": "second"},
        reinvocation="IfNeeded",
    )
    second["webhooks"][0]["matchConditions"] = [{"name": "not-dry-run", "expression": "!request.dryRun"}]
    with temporary_webhook(cluster.kube, second):
        run = podgraft(explain_kubeconfig, "explain", "-n", ns, "pod/two")
    assert run.code == 0, run.stderr
    first = run.stdout.index(
        "  1. a-second / a-second.e2e.podgraft.io: called; failurePolicy Ignore; called again"
    )
    assert first < run.stdout.index(f"  2. {PODGRAFT}: called; ")
    assert "if its 1 matchConditions hold (not evaluated here)" in run.stdout
    assert "matchConditions (CEL) of a-second.e2e.podgraft.io (1): not evaluated here" in run.stdout
    assert "MutatingAdmissionPolic" in run.stdout  # listed, or said to be not served


def test_a_pod_that_does_not_exist_is_one_line(cluster: Cluster, explain_kubeconfig: Path) -> None:
    run = podgraft(explain_kubeconfig, "explain", "-n", "default", "pod/nothing-here")
    assert (run.code, run.stdout) == (1, "")
    assert run.stderr == "error: pod 'nothing-here' not found in namespace default\n"
