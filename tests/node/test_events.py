"""Issue 17 §1 against real controllers: the ReplicaSet and Job controllers create the pods, Podgraft
(running on the host, `PODGRAFT_EVENTS=all`, a 0.5 s flush) tells their Deployment or CronJob, and the
real kubectl shows it (`kubectl describe deployment`, `kubectl events --for deployment/NAME`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from tests.e2e.events import count, podgraft_events, summary
from tests.e2e.kube import INJECT, PODGRAFT_NAMESPACE, eventually, pod
from tests.e2e.server import Podgraft
from tests.e2e.webhooks import with_url

from .conftest import Cluster
from .workloads import app_container, deployment, pod_spec, template

# The pod's own volume named like log-shipper's: the optional policy is skipped, with a warning.
LOGS = {"name": "app-logs", "configMap": {"name": "app-logs", "optional": True}}
# Admission is what these tests are about: the pods are made by the real controllers, then stay
# Pending (no node matches), so that the tier does not spend its two cores running them.
NOWHERE = {"nodeSelector": {"podgraft.io/test-node": "none"}}
SKIPPED_NOTE = (
    "podgraft: policy 'log-shipper' not injected: the pod already has a different volume named 'app-logs'"
)


def _created(cluster: Cluster, ns: str, app: str, count_: int) -> None:
    """Wait until the controller created `count_` pods of `app` (running or not)."""
    cluster.wait_pods(ns, app, count=count_, check=lambda _pod: None)


def _events(
    cluster: Cluster, ns: str, kind: str, name: str, want: list[tuple[str, str, int]]
) -> list[dict[str, Any]]:
    def settled() -> list[dict[str, Any]]:
        events = podgraft_events(cluster.env.kube, ns, kind, name)
        assert summary(events) == want
        return events

    return eventually(settled, timeout=30, what=f"Podgraft's Events on {kind}/{name}: {want}")


def _conflicting(cluster: Cluster, app: str, replicas: int) -> dict[str, Any]:
    spec = pod_spec([app_container(cluster.image)], volumes=[LOGS], **NOWHERE)
    return deployment(app, replicas=replicas, spec=spec, inject="log-shipper")


def test_a_deployment_scaled_to_5_whose_optional_policy_conflicts_shows_one_warning_with_count_5(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("events")
    cluster.create(ns, _conflicting(cluster, "web", 1))
    _created(cluster, ns, "web", 1)
    cluster.kubectl.run("scale", f"--namespace={ns}", "deployment/web", "--replicas=5")
    _created(cluster, ns, "web", 5)

    [event] = _events(cluster, ns, "Deployment", "web", [("Warning", "InjectionSkipped", 5)])
    assert event["note"] == SKIPPED_NOTE
    assert event["related"]["kind"] == "ReplicaSet"
    assert event["reportingInstance"] == "podgraft-e2e-0"

    described = cluster.kubectl.run("describe", f"--namespace={ns}", "deployment/web").stdout
    events_part = described[described.index("Events:") :]
    assert re.search(r"Warning\s+InjectionSkipped\s", events_part), events_part
    assert "(x5 over" in events_part, events_part
    assert "podgraft.io/webhook" in events_part, events_part
    assert SKIPPED_NOTE in " ".join(events_part.split()), events_part
    listed = cluster.kubectl.run("events", f"--namespace={ns}", "--for=deployment/web").stdout
    assert "InjectionSkipped" in listed, listed
    assert "Deployment/web" in listed, listed
    print(
        f"\n$ kubectl describe deployment web\n{events_part}\n$ kubectl events --for deployment/web\n{listed}"
    )


def test_an_injected_deployment_shows_injected(cluster: Cluster) -> None:
    ns = cluster.namespace("events")
    cluster.create(
        ns,
        deployment(
            "api", replicas=2, spec=pod_spec([app_container(cluster.image)], **NOWHERE), inject="log-shipper"
        ),
    )
    _created(cluster, ns, "api", 2)
    [event] = _events(cluster, ns, "Deployment", "api", [("Normal", "Injected", 2)])
    assert event["note"].startswith("injected policy log-shipper (version ")
    assert event["note"].endswith("; containers: log-shipper")
    described = cluster.kubectl.run("describe", f"--namespace={ns}", "deployment/api").stdout
    events_part = described[described.index("Events:") :]
    assert re.search(r"Normal\s+Injected\s", events_part), described
    print(f"\n$ kubectl describe deployment api\n{events_part}")


def test_a_cronjobs_job_pod_with_an_explicitly_classic_sidecar_shows_the_warning_on_the_cronjob(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("events")
    work = {"name": "work", "image": cluster.image, "command": ["sh", "-c", "echo work done"]}
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "backup"},
        "spec": {
            "schedule": "0 3 * * *",
            "suspend": True,  # its Job is made by hand below: `kubectl create job --from=cronjob/...`
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "template": template(
                        "backup", pod_spec([work], restartPolicy="Never"), inject="job-classic"
                    ),
                }
            },
        },
    }
    cluster.batch.create_namespaced_cron_job(ns, cron)
    cluster.kubectl.run("create", "job", f"--namespace={ns}", "--from=cronjob/backup", "backup-manual")
    events = _events(
        cluster, ns, "CronJob", "backup", [("Normal", "Injected", 1), ("Warning", "InjectedWithWarnings", 1)]
    )
    [warned] = [e for e in events if e["type"] == "Warning"]
    assert "sidecar 'helper' is a classic container (sidecarMode classic)" in warned["note"]
    assert (warned["related"]["kind"], warned["related"]["name"]) == ("Job", "backup-manual")
    described = cluster.kubectl.run("describe", f"--namespace={ns}", "cronjob/backup").stdout
    assert "InjectedWithWarnings" in described, described
    # the Job never completes (its pod stays Pending): delete it while the Job controller still runs,
    # which removes its finalizer from the pod
    cluster.kubectl.run("delete", "job", f"--namespace={ns}", "backup-manual", "--wait=false")

    def pods_gone() -> None:
        assert cluster.pods(ns, "backup") == []

    eventually(pods_gone, timeout=60, what="the Job's pod removed")


@contextlib.contextmanager
def _second_replica(cluster: Cluster) -> Iterator[Podgraft]:
    """A second Podgraft process with its own POD_NAME (so its own reportingInstance), same RBAC."""
    env = cluster.env
    other = Podgraft.start(
        workdir=env.workdir,
        kubeconfig=env.podgraft_kubeconfig,
        certs=env.workdir / "podgraft-certs",
        namespace=PODGRAFT_NAMESPACE,
        policy_namespaces=[PODGRAFT_NAMESPACE, env.policy_namespace],
        name="podgraft-b",
        pod_name="podgraft-e2e-1",
    )
    try:
        yield other
    finally:
        env.kube.put_webhook(with_url(env.chart.webhook, env.podgraft.url))
        other.stop()


def _serve_from(cluster: Cluster, server: Podgraft) -> None:
    """Point the webhook at `server` and wait until the apiserver calls it (a bare dry-run pod: no Event)."""
    env = cluster.env
    env.kube.put_webhook(with_url(env.chart.webhook, server.url))
    ns = cluster.namespace("probe")

    def answered() -> None:
        before = server.requests_total()
        env.kube.create_pod(ns, pod(name="probe", annotations={INJECT: "log-shipper"}), dry_run=True)
        assert server.requests_total() > before

    eventually(answered, timeout=30, what=f"the apiserver calls {server.process.name}")


def test_two_podgraft_replicas_each_report_their_own_series_and_the_counts_sum_to_the_pods(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("events")
    with _second_replica(cluster) as other:
        cluster.create(ns, _conflicting(cluster, "shop", 3))
        _created(cluster, ns, "shop", 3)
        _serve_from(cluster, other)
        cluster.kubectl.run("scale", f"--namespace={ns}", "deployment/shop", "--replicas=5")
        _created(cluster, ns, "shop", 5)
        events = _events(
            cluster,
            ns,
            "Deployment",
            "shop",
            [("Warning", "InjectionSkipped", 2), ("Warning", "InjectionSkipped", 3)],
        )
    assert {e["reportingInstance"]: count(e) for e in events} == {"podgraft-e2e-0": 3, "podgraft-e2e-1": 2}
    assert {e["note"] for e in events} == {SKIPPED_NOTE}
