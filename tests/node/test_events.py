"""Issue 17 §1 against real controllers and the installed chart: the ReplicaSet and Job controllers
create the pods, Podgraft's two replicas (in the cluster, `events.level: all` for the session, the
chart's production flush interval of 5 s) tell their Deployment or CronJob, and the real kubectl
shows it (`kubectl describe deployment`, `kubectl events --for deployment/NAME`).

Each replica reports as its own pod name (`reportingInstance`: the chart's POD_NAME), so the pods a
replica admitted are one series of its own: every test checks the series against what each replica's
own log says it admitted. Which replica the apiserver calls is kube-proxy's choice; the last test
steers the calls to one replica, then to the other (`_steering`)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kubernetes import client

from tests.e2e.events import count, podgraft_events
from tests.e2e.kube import INJECT, eventually, pod

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
# A bound, not a measurement: the 5 s flush interval twice over, and the writes on a loaded machine.
SETTLED = 30.0
STEERED = "podgraft.io/test-steered"  # on the one webhook pod the Service selects while steered


def _created(cluster: Cluster, ns: str, app: str, count_: int) -> None:
    """Wait until the controller created `count_` pods of `app` (running or not)."""
    cluster.wait_pods(ns, app, count=count_, check=lambda _pod: None)


def _admissions(cluster: Cluster, ns: str) -> dict[str, list[dict[str, Any]]]:
    """Each webhook replica's log lines for admissions in `ns` (`kubectl logs`), by pod name."""
    return {
        replica: [line for line in lines if line.get("msg") == "admission" and line.get("namespace") == ns]
        for replica, lines in cluster.replica_logs().items()
    }


def _admitted(cluster: Cluster, ns: str) -> dict[str, int]:
    """How many pods of `ns` each webhook replica admitted, by its own log."""
    uids = {replica: {line["uid"] for line in lines} for replica, lines in _admissions(cluster, ns).items()}
    return {replica: len(found) for replica, found in uids.items() if found}


def _events(
    cluster: Cluster, ns: str, kind: str, name: str, outcomes: Sequence[tuple[str, str]], *, pods: int
) -> list[dict[str, Any]]:
    """Podgraft's Events on `kind/name` once they have settled: for each (type, reason) of `outcomes`,
    one series per replica that admitted pods of `ns`, counting exactly the pods its log shows, the
    counts summing to `pods`; and no other Event."""

    def settled() -> list[dict[str, Any]]:
        events = podgraft_events(cluster.kube, ns, kind, name)
        admitted = _admitted(cluster, ns)
        assert sum(admitted.values()) == pods, f"the replicas' logs show {admitted}, want {pods} pods"
        assert sorted({(e["type"], e["reason"]) for e in events}) == sorted(outcomes), events
        for type_, reason in outcomes:
            series = [e for e in events if (e["type"], e["reason"]) == (type_, reason)]
            by_replica = {e["reportingInstance"]: count(e) for e in series}
            assert len(by_replica) == len(series), f"more than one {reason} series per replica: {series}"
            assert by_replica == admitted, f"{reason}: series {by_replica}, admitted {admitted}"
        return events

    return eventually(settled, timeout=SETTLED, what=f"Podgraft's Events on {kind}/{name}: {outcomes}")


def _conflicting(cluster: Cluster, app: str, replicas: int) -> dict[str, Any]:
    spec = pod_spec([app_container(cluster.image)], volumes=[LOGS], **NOWHERE)
    return deployment(app, replicas=replicas, spec=spec, inject="log-shipper")


def test_a_deployment_scaled_to_5_whose_optional_policy_conflicts_shows_one_warning_series_per_replica(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace("events")
    cluster.create(ns, _conflicting(cluster, "web", 1))
    _created(cluster, ns, "web", 1)
    cluster.kubectl.run("scale", f"--namespace={ns}", "deployment/web", "--replicas=5")
    _created(cluster, ns, "web", 5)

    events = _events(cluster, ns, "Deployment", "web", [("Warning", "InjectionSkipped")], pods=5)
    for event in events:
        assert event["note"] == SKIPPED_NOTE
        assert event["related"]["kind"] == "ReplicaSet"

    described = cluster.kubectl.run("describe", f"--namespace={ns}", "deployment/web").stdout
    events_part = described[described.index("Events:") :]
    lines = [line for line in events_part.splitlines() if re.search(r"Warning\s+InjectionSkipped\s", line)]
    assert len(lines) == len(events), events_part  # one line per series
    for event in events:
        if count(event) > 1:
            assert f"(x{count(event)} over" in events_part, events_part
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
    for event in _events(cluster, ns, "Deployment", "api", [("Normal", "Injected")], pods=2):
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
                        "backup", pod_spec([work], restartPolicy="Never", **NOWHERE), inject="job-classic"
                    ),
                }
            },
        },
    }
    cluster.batch.create_namespaced_cron_job(ns, cron)
    cluster.kubectl.run("create", "job", f"--namespace={ns}", "--from=cronjob/backup", "backup-manual")
    outcomes = [("Normal", "Injected"), ("Warning", "InjectedWithWarnings")]
    events = _events(cluster, ns, "CronJob", "backup", outcomes, pods=1)
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


# --- which replica the apiserver calls ---------------------------------------------------------------


def _ready_endpoints(cluster: Cluster) -> list[str]:
    """The webhook pods the release's Service has as ready endpoints now."""
    slices = client.DiscoveryV1Api(cluster.kube.api).list_namespaced_endpoint_slice(
        cluster.release.namespace,
        label_selector=f"kubernetes.io/service-name={cluster.release.fullname}",
        _preload_content=False,
    )
    endpoints = [e for s in json.loads(slices.data)["items"] for e in s.get("endpoints") or []]
    return sorted(e["targetRef"]["name"] for e in endpoints if e["conditions"].get("ready"))


def _label_webhook_pod(cluster: Cluster, name: str, value: str | None) -> None:
    body = {"metadata": {"labels": {STEERED: value}}}
    cluster.core.patch_namespaced_pod(
        name, cluster.release.namespace, body, _content_type="application/merge-patch+json"
    )


@contextlib.contextmanager
def _steering(cluster: Cluster) -> Iterator[Callable[[str], None]]:
    """`steer(replica)`: from then on the apiserver calls that webhook pod only. The Service selects
    it alone (its selector gains a label only `replica` carries), and once its EndpointSlice says so,
    the webhook configuration moves to a port the Service did not have: the apiserver's keep-alive
    connections (through the ClusterIP, to either replica, kept while used) are to the old port and
    are never used again, so each call opens a connection that kube-proxy can only send to
    `replica`, which a dry-run probe then confirms from `replica`'s own log. Afterwards the Service,
    the webhook configuration and the pods' labels are what they were."""
    name, namespace = cluster.release.fullname, cluster.release.namespace
    response = cluster.core.read_namespaced_service(name, namespace, _preload_content=False)
    service = json.loads(response.data)["spec"]
    (webhook,) = cluster.kube.webhook_configuration(name)["webhooks"]
    port = webhook["clientConfig"]["service"]["port"]
    ports = itertools.count(port + 10000)
    probes = itertools.count()
    probe_ns = cluster.namespace("steer")

    def patch_service(selector: dict[str, str], extra_ports: list[dict[str, Any]]) -> None:
        patch = [
            {"op": "replace", "path": "/spec/selector", "value": selector},
            {"op": "replace", "path": "/spec/ports", "value": [*service["ports"], *extra_ports]},
        ]
        cluster.core.patch_namespaced_service(
            name, namespace, patch, _content_type="application/json-patch+json"
        )

    def use_port(value: int) -> None:
        patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/service/port", "value": value}]
        cluster.kube.admission.patch_mutating_webhook_configuration(
            name, patch, _content_type="application/json-patch+json"
        )

    def served_by(replica: str) -> None:
        prefix = f"steer-{next(probes)}-"
        cluster.kube.create_pod(
            probe_ns, pod(generate_name=prefix, annotations={INJECT: "log-shipper"}), dry_run=True
        )

        def logged() -> set[str]:
            found = {
                other
                for other, lines in _admissions(cluster, probe_ns).items()
                if any(line.get("pod") == f"{prefix}*" for line in lines)
            }
            assert found, f"probe {prefix} in no replica's log yet"
            return found

        assert eventually(logged, timeout=10, what=f"probe {prefix} logged") == {replica}

    def steer(replica: str) -> None:
        for item in cluster.webhook_pods():
            other = item["metadata"]["name"]
            _label_webhook_pod(cluster, other, "yes" if other == replica else None)
        patch_service({**service["selector"], STEERED: "yes"}, [])

        def alone() -> None:
            assert _ready_endpoints(cluster) == [replica]

        eventually(alone, timeout=30, what=f"the Service selects {replica} alone")
        new = next(ports)
        patch_service(
            {**service["selector"], STEERED: "yes"},
            [{"name": f"steered-{new}", "port": new, "targetPort": "https", "protocol": "TCP"}],
        )
        use_port(new)
        eventually(lambda: served_by(replica), timeout=60, what=f"the apiserver calls {replica} only")

    try:
        yield steer
    finally:
        try:
            use_port(port)
            patch_service(service["selector"], [])
        finally:
            for item in cluster.webhook_pods():
                _label_webhook_pod(cluster, item["metadata"]["name"], None)

            def both() -> None:
                names = sorted(item["metadata"]["name"] for item in cluster.webhook_pods())
                assert _ready_endpoints(cluster) == names

            eventually(both, timeout=30, what="the Service selects both replicas again")


def test_two_podgraft_replicas_each_report_their_own_series_and_the_counts_sum_to_the_pods(
    cluster: Cluster,
) -> None:
    first, second = sorted(p["metadata"]["name"] for p in cluster.wait_webhook())
    ns = cluster.namespace("events")
    with _steering(cluster) as steer:
        steer(first)
        cluster.create(ns, _conflicting(cluster, "shop", 3))
        _created(cluster, ns, "shop", 3)
        steer(second)
        cluster.kubectl.run("scale", f"--namespace={ns}", "deployment/shop", "--replicas=5")
        _created(cluster, ns, "shop", 5)
        events = _events(cluster, ns, "Deployment", "shop", [("Warning", "InjectionSkipped")], pods=5)
    assert {e["reportingInstance"]: count(e) for e in events} == {first: 3, second: 2}
    assert {e["note"] for e in events} == {SKIPPED_NOTE}
