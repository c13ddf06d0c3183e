"""Events on the workload as the e2e and node tests read them: Podgraft's events.k8s.io Events in a
namespace (and the core/v1 view that `kubectl describe` lists), and, for the e2e tier, which runs no
controllers, workloads and pods created the way their controllers create them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from kubernetes import client

from .kube import Kube

REPORTING_CONTROLLER = "podgraft.io/webhook"


def podgraft_events(
    kube: Kube, namespace: str, kind: str | None = None, name: str | None = None
) -> list[dict[str, Any]]:
    """Podgraft's events.k8s.io Events in `namespace` (regarding `kind/name`, when given), as stored."""
    response = client.EventsV1Api(kube.api).list_namespaced_event(namespace, _preload_content=False)
    items = json.loads(response.data)["items"]
    return [
        event
        for event in items
        if event.get("reportingController") == REPORTING_CONTROLLER
        and (kind is None or event["regarding"]["kind"] == kind)
        and (name is None or event["regarding"]["name"] == name)
    ]


def described_events(kube: Kube, namespace: str, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The core/v1 Events `kubectl describe` lists for `obj` (field selector: kind, name, namespace, uid)."""
    meta = obj["metadata"]
    selector = ",".join(
        [
            f"involvedObject.kind={obj['kind']}",
            f"involvedObject.name={meta['name']}",
            f"involvedObject.namespace={namespace}",
            f"involvedObject.uid={meta['uid']}",
        ]
    )
    response = kube.core.list_namespaced_event(namespace, field_selector=selector, _preload_content=False)
    return list(json.loads(response.data)["items"])


def sample(metrics_text: str, name: str) -> float:
    """The sum of the samples of `name` on a /metrics page (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(value) for value in pattern.findall(metrics_text))


def count(event: Mapping[str, Any]) -> int:
    series = event.get("series")
    return int(series["count"]) if series else 1


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(type, reason, count) of each Event, sorted."""
    return sorted((e["type"], e["reason"], count(e)) for e in events)


# --- workloads as their controllers make them (the e2e tier has no controller-manager) ---------------


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The ownerReference a controller puts on what it creates (metav1.NewControllerRef)."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def template(
    labels: Mapping[str, str], annotations: Mapping[str, str], spec: Mapping[str, Any]
) -> dict[str, Any]:
    return {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": dict(spec)}


def pod_from_template(owner: Mapping[str, Any], pod_template: Mapping[str, Any]) -> dict[str, Any]:
    """What a ReplicaSet, Job or StatefulSet controller submits (controller.GetPodFromTemplate): the
    template's labels and annotations, `generateName` from the owner's name, its controller reference."""
    meta = pod_template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{owner['metadata']['name']}-",
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
            "ownerReferences": [controller_ref(owner)],
        },
        "spec": dict(pod_template["spec"]),
    }


class Workloads:
    """Creates the objects a controller chain consists of, through the admin client, as stored."""

    def __init__(self, kube: Kube) -> None:
        self.apps = client.AppsV1Api(kube.api)
        self.batch = client.BatchV1Api(kube.api)

    @staticmethod
    def _body(response: Any) -> dict[str, Any]:
        return dict(json.loads(response.data))

    def deployment(self, namespace: str, name: str, pod_template: Mapping[str, Any]) -> dict[str, Any]:
        body = _apps_workload("Deployment", name, pod_template)
        return self._body(self.apps.create_namespaced_deployment(namespace, body, _preload_content=False))

    def replica_set(self, namespace: str, owner: Mapping[str, Any], pod_hash: str) -> dict[str, Any]:
        """The ReplicaSet the Deployment controller makes: `<deployment>-<hash>`, the template labelled
        with pod-template-hash."""
        spec = owner["spec"]
        labels = {**spec["template"]["metadata"]["labels"], "pod-template-hash": pod_hash}
        pod_template = {**spec["template"], "metadata": {**spec["template"]["metadata"], "labels": labels}}
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{owner['metadata']['name']}-{pod_hash}",
                "labels": labels,
                "ownerReferences": [controller_ref(owner)],
            },
            "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": pod_template},
        }
        return self._body(self.apps.create_namespaced_replica_set(namespace, body, _preload_content=False))

    def cron_job(self, namespace: str, name: str, pod_template: Mapping[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": name},
            "spec": {
                "schedule": "0 3 * * *",
                "suspend": True,
                "jobTemplate": {"spec": {"template": dict(pod_template)}},
            },
        }
        return self._body(self.batch.create_namespaced_cron_job(namespace, body, _preload_content=False))

    def job(self, namespace: str, owner: Mapping[str, Any], suffix: str) -> dict[str, Any]:
        """The Job the CronJob controller makes: `<cronjob>-<scheduled minute>`."""
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{owner['metadata']['name']}-{suffix}",
                "ownerReferences": [controller_ref(owner)],
            },
            "spec": dict(owner["spec"]["jobTemplate"]["spec"]),
        }
        return self._body(self.batch.create_namespaced_job(namespace, body, _preload_content=False))

    def stateful_set(self, namespace: str, name: str, pod_template: Mapping[str, Any]) -> dict[str, Any]:
        body = _apps_workload("StatefulSet", name, pod_template, serviceName=name)
        return self._body(self.apps.create_namespaced_stateful_set(namespace, body, _preload_content=False))


def _apps_workload(kind: str, name: str, pod_template: Mapping[str, Any], **spec: Any) -> dict[str, Any]:
    """An apps/v1 Deployment or StatefulSet of 0 replicas (nothing would run them here)."""
    labels = pod_template["metadata"]["labels"]
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": dict(labels)},
            "template": dict(pod_template),
            **spec,
        },
    }
