"""`podgraft audit` on pods that real controllers created (issue 15): a Deployment's, a DaemonSet's and
a Job's pods reach the webhook with only `generateName`, a StatefulSet's with its name; the apiserver's
ServiceAccount plugin mounts the API token into every container, the injected helper included; a
later webhook adds a label the policy reads, so the apiserver calls Podgraft again (which renders the
pod as it first admitted it: nothing changes). Right after, every pod is `current` for the CLI and
for `podgraft_pods` and `/audit` of both replicas of the installed chart, and stays so when its
labels and annotations are changed by hand (`kubectl label pod ... app-` takes one out of its
ReplicaSet); after a policy edit each is `stale`, and the detail names the changed env value."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.certs import generate_ca
from tests.e2e.kube import INJECT, eventually, injected, podgraft_audit
from tests.e2e.webhooks import Labeller, temporary_webhook, webhook_configuration

from .conftest import Cluster
from .workloads import UNTIL_STOPPED, deployment, policy, template

POLICY = "audit-reader"
LABELLED = "e2e.podgraft.io/labelled"
SCOPE = {"e2e.podgraft.io/audit-labeller": "on"}


def reader_policy(image: str, level: str) -> dict[str, str]:
    """Reads what changes after admission (the name, generateName, labels, annotations) in args, env
    and an annotation; `level` is what a policy edit changes."""
    sidecar = {
        "name": "reader",
        "image": image,
        "command": ["sh", "-c", UNTIL_STOPPED],
        "args": ["--pod={{ pod.name }}", "--set={{ pod.generateName }}", "--app={{ pod.labels.app }}"],
        "env": [
            {"name": "LEVEL", "value": level},
            {"name": "LABELLED", "value": f"{{{{ pod.labels.get('{LABELLED}', 'no') }}}}"},
            {"name": "TRACK", "value": "{{ pod.annotations.get('example.com/track', 'stable') }}"},
        ],
        "resources": {"limits": {"memory": "32Mi"}},
    }
    owner = "{{ pod.labels.get('team', 'platform') }}"
    return {
        f"{POLICY}.yaml": policy(
            POLICY, sidecarMode="native", sidecars=[sidecar], annotations={"example.com/owner": owner}
        )
    }


def workloads(image: str) -> list[dict[str, Any]]:
    """One of each controller. The pods keep the ServiceAccount token mounted (the default)."""
    spec = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "app", "image": image, "command": ["sh", "-c", UNTIL_STOPPED]}],
    }

    def owned(kind: str, name: str, **extra: Any) -> dict[str, Any]:
        pods = template(name, spec, inject=POLICY)
        body = {"selector": {"matchLabels": {"app": name}}, "template": pods, **extra}
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": body}

    job = template("report", {**spec, "restartPolicy": "Never"}, inject=POLICY)
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report"},
        "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"backoffLimit": 0, "template": job}}},
    }
    web = deployment("web", replicas=2, spec=spec, inject=POLICY)
    return [web, owned("DaemonSet", "agent"), owned("StatefulSet", "db", serviceName="db"), cron]


def audit(cluster: Cluster, namespace: str) -> tuple[int, dict[str, Any]]:
    return podgraft_audit(
        cluster.local.plane.admin_kubeconfig,
        f"--policy-namespaces={cluster.policy_namespace}",
        f"--policy={POLICY}",
        f"--namespace={namespace}",
    )


def states(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        p["pod"]: (s["state"], s["detail"])
        for p in report["pods"]
        for s in p["policies"]
        if s["policy"] == POLICY
    }


def from_replica(cluster: Cluster, pod: str, path: str) -> str:
    """GET `path` of one webhook pod, through the apiserver's pod proxy (as `kubectl get --raw`)."""
    url = f"/api/v1/namespaces/{cluster.release.namespace}/pods/https:{pod}:8443/proxy{path}"
    return cluster.kubectl.run("get", "--raw", url).stdout


def census(cluster: Cluster, namespace: str) -> list[dict[str, str]]:
    """What each webhook replica's running audit says: counts of the policy, pods not current."""
    found = []
    for replica in cluster.webhook_pods():
        snapshot = json.loads(from_replica(cluster, replica["metadata"]["name"], "/audit"))
        counts = snapshot["policies"].get(POLICY, {})
        listed = {p["pod"]: p["state"] for p in snapshot["notCurrent"] if p["namespace"] == namespace}
        metrics = from_replica(cluster, replica["metadata"]["name"], "/metrics").splitlines()
        samples = sorted(
            line
            for line in metrics
            if line.startswith(f'podgraft_pods{{policy="{POLICY}"') and not line.endswith(" 0.0")
        )
        found.append(
            {
                "counts": json.dumps(counts, sort_keys=True),
                "notCurrent": json.dumps(listed, sort_keys=True),
                "metric": " ".join(samples),
            }
        )
    return found


@pytest.fixture
def running_audit(cluster: Cluster) -> Iterator[None]:
    """The release with the running audit on (`audit.enabled`), then as it was."""
    cluster.release.upgrade({"audit": {"enabled": True}})
    cluster.wait_webhook()
    try:
        yield
    finally:
        cluster.release.upgrade({"audit": {"enabled": False}})
        cluster.wait_webhook()


@pytest.fixture
def reader(cluster: Cluster, running_audit: None, tmp_path: Path) -> Iterator[tuple[str, Labeller]]:
    """The reader policy at level v1, a namespace, and a second webhook (on the host, called after
    Podgraft) that adds the label the policy reads, so that the apiserver reinvokes Podgraft."""
    kube = cluster.kube
    kube.put_configmap(cluster.policy_namespace, POLICY, reader_policy(cluster.image, "v1"))
    namespace = cluster.namespace("audit", **SCOPE)
    ca_cert, ca_key = generate_ca("node-audit-labeller")
    labeller = Labeller.start(ca_cert=ca_cert, ca_key=ca_key, workdir=tmp_path, label=LABELLED)
    configuration = webhook_configuration(
        "zz-node-audit-labeller",
        url=labeller.url,
        ca_bundle=base64.b64encode(ca_cert).decode(),
        namespace_labels=SCOPE,
        reinvocation="IfNeeded",
    )
    try:
        with temporary_webhook(kube, configuration):
            metadata = {"name": "probe", "labels": {"app": "probe"}, "annotations": {INJECT: POLICY}}
            probe = {"metadata": metadata, "spec": {"containers": [{"name": "app", "image": cluster.image}]}}

            def loaded() -> None:
                body = kube.create_pod(namespace, probe, dry_run=True).body
                assert injected(body) == [POLICY]
                assert body["metadata"]["labels"][LABELLED] == "true"

            eventually(loaded, timeout=30, what="the reader policy and the labeller are in force")
            yield namespace, labeller
    finally:
        labeller.stop()
        kube.delete_configmap(cluster.policy_namespace, POLICY)


def test_controller_made_pods_audit_current_then_stale_after_a_policy_edit(
    cluster: Cluster, reader: tuple[str, Labeller]
) -> None:
    namespace, labeller = reader
    for manifest in workloads(cluster.image):
        cluster.kubectl.apply(namespace, manifest)
    cluster.kubectl.run("create", "job", "report-manual", "--from=cronjob/report", f"--namespace={namespace}")
    expected = {"web": 2, "agent": 1, "db": 1, "report": 1}
    pods: list[dict[str, Any]] = []
    for app, count in expected.items():
        pods += cluster.wait_pods(namespace, app, count=count)
    owners = {p["metadata"]["ownerReferences"][0]["kind"] for p in pods}
    assert owners == {"ReplicaSet", "DaemonSet", "StatefulSet", "Job"}
    for item in pods:
        metadata = item["metadata"]
        assert injected(item) == [POLICY], metadata
        assert metadata["labels"][LABELLED] == "true", "the later webhook ran"
        (sidecar,) = [c for c in item["spec"]["initContainers"] if c["name"] == "reader"]
        mounts = [m["name"] for m in sidecar.get("volumeMounts", [])]
        assert any(m.startswith("kube-api-access-") for m in mounts), "the apiserver mounted its token"
        env = {e["name"]: e["value"] for e in sidecar["env"]}
        assert env["LABELLED"] == "no", "reinvoked, Podgraft renders the pod as it first admitted it"
        if metadata["ownerReferences"][0]["kind"] != "StatefulSet":  # named by its controller
            assert "generateName" in metadata
            assert sidecar["args"][0] == f"--pod={metadata['generateName'].rstrip('-')}", "no name then"
    assert len(labeller.calls) >= len(pods)
    logged = [line for line in cluster.podgraft_logs() if line.get("msg") == "admission"]
    ours = [a for a in logged if a.get("namespace") == namespace and not a["pod"].startswith("probe")]
    assert len(ours) >= 2 * len(pods), "each pod admitted twice: the later webhook made it a reinvocation"

    code, report = audit(cluster, namespace)
    names = {p["metadata"]["name"] for p in pods}
    assert (code, states(report)) == (0, dict.fromkeys(names, ("current", "")))

    web = next(p["metadata"]["name"] for p in pods if p["metadata"]["labels"]["app"] == "web")
    cluster.kubectl.run("label", "pod", web, "team=payments", "app-", f"--namespace={namespace}")
    cluster.kubectl.run("annotate", "pod", web, "example.com/track=canary", f"--namespace={namespace}")
    # without its app label the pod leaves its ReplicaSet, which makes a replacement: six pods now
    (replacement,) = [
        p["metadata"]["name"]
        for p in cluster.wait_pods(namespace, "web", count=2)
        if p["metadata"]["name"] not in names
    ]
    names.add(replacement)
    code, report = audit(cluster, namespace)
    assert (code, states(report)) == (0, dict.fromkeys(names, ("current", ""))), "judged as admitted"

    def counted(wanted: dict[str, int], listed: dict[str, str]) -> None:
        metric = " ".join(
            f'podgraft_pods{{policy="{POLICY}",state="{k}"}} {float(v)}' for k, v in sorted(wanted.items())
        )
        expected = {
            "counts": json.dumps(wanted, sort_keys=True),
            "notCurrent": json.dumps(listed, sort_keys=True),
            "metric": metric,
        }
        assert census(cluster, namespace) == [expected, expected], "each replica counts them alike"

    eventually(lambda: counted({"current": 6}, {}), timeout=30, what="the running audit agrees")

    cluster.kube.put_configmap(cluster.policy_namespace, POLICY, reader_policy(cluster.image, "v2"))

    def edit_in_force() -> None:
        code, report = audit(cluster, namespace)
        assert code == 1
        found = states(report)
        assert set(found) == names
        for state, detail in found.values():
            assert state == "stale"
            assert "reader env[LEVEL].value v1 -> v2" in detail, detail
            assert "already has" not in detail

    eventually(edit_in_force, timeout=30, what="the audit sees the edited policy")
    eventually(
        lambda: counted({"stale": 6}, dict.fromkeys(names, "stale")),
        timeout=30,
        what="the census re-listed",
    )
