"""Issue 10, scenario 8: Podgraft down (its Deployment scaled to zero, so the Service has no
endpoint). `failurePolicy: Ignore` lets the ReplicaSet's pods in uninjected; `Fail` leaves the
ReplicaSet retrying until Podgraft is back, then its pods come up injected without anyone touching
the ReplicaSet."""

from __future__ import annotations

from typing import Any

from tests.e2e.kube import INJECT, api_error, eventually, injected, pod

from .conftest import Cluster
from .workloads import app_container, deployment, pod_spec


def _probe_pod() -> dict[str, Any]:
    return pod(generate_name="probe-", annotations={INJECT: "log-shipper"})


def _replica_failure(cluster: Cluster, namespace: str) -> str:
    replicasets = cluster.apps.list_namespaced_replica_set(namespace).items
    assert len(replicasets) == 1, "no ReplicaSet yet"
    replicaset = replicasets[0]
    conditions = {c.type: c for c in replicaset.status.conditions or []}
    failure = conditions.get("ReplicaFailure")
    assert failure is not None, "the ReplicaSet has not failed to create pods (yet)"
    assert failure.reason == "FailedCreate", failure
    return str(failure.message)


def test_podgraft_down_ignore_admits_uninjected_and_fail_retries_until_it_is_back(cluster: Cluster) -> None:
    kube = cluster.kube
    spec = pod_spec([app_container(cluster.image)])
    with cluster.podgraft_down("Ignore"):
        ignoring = cluster.namespace("down-ignore")

        def admitted_uninjected() -> None:
            assert injected(kube.create_pod(ignoring, _probe_pod(), dry_run=True).body) == []

        eventually(admitted_uninjected, what="failurePolicy Ignore is in effect")
        cluster.create(ignoring, deployment("web", replicas=2, spec=spec, inject="log-shipper"))
        for admitted in cluster.wait_pods(ignoring, "web", count=2):
            assert injected(admitted) == []
            assert not admitted["spec"].get("initContainers")

        cluster.set_failure_policy("Fail")
        failing = cluster.namespace("down-fail")

        def refused() -> None:
            error = api_error(lambda: kube.create_pod(failing, _probe_pod(), dry_run=True))
            assert "failed calling webhook" in str(error.body), error.body

        eventually(refused, what="failurePolicy Fail is in effect")
        cluster.create(failing, deployment("web", replicas=2, spec=spec, inject="log-shipper"))
        message = eventually(lambda: _replica_failure(cluster, failing), timeout=60, what="ReplicaFailure")
        assert "failed calling webhook" in message
        assert cluster.pods(failing, "web") == []

        cluster.scale_webhook(2)  # Podgraft is back: nothing else is done
        for created in cluster.wait_pods(failing, "web", count=2):
            assert injected(created) == ["log-shipper"]
