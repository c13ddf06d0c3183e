"""What the benchmark measures: the pods, the policies and the runs (the runner and the report are apart).

Every figure in the README's Performance section comes from one of the runs named here.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

# Saturation (wrk, keep-alive unless said): every request a different pod unless "replicas".
SATURATION: dict[str, dict[str, bool]] = {
    "keepalive": {"new_connections": False, "distinct": True},
    "new_tls_connection": {"new_connections": True, "distinct": True},
    "keepalive_replicas": {"new_connections": False, "distinct": False},
}
# the floor, then Podgraft with 1 and 2 workers, and with 1 worker, Events on (level all) and an
# Events API that never answers (bench/events_server.py)
SERVERS = ("floor", "podgraft-1w", "podgraft-2w", "podgraft-1w-events-hung")
RATES = (100, 500, 1000)  # vegeta constant rates, requests per second, distinct pods
POLICY_COUNTS = (1, 100, 1000)  # loaded policies (2 apply, the rest are fillers that match nothing)
SIZES = (("small", 50), ("realistic", 50), ("large", 5), ("limit", 2))  # pod kind, vegeta rate
POD_KINDS = ("small", "realistic", "large", "limit")


# --- workloads ------------------------------------------------------------------------------------


def _env(count: int, width: int = 40) -> list[dict[str, str]]:
    return [{"name": f"SETTING_{i:05d}", "value": f"value-{i:05d}-" + "x" * width} for i in range(count)]


def _container(name: str, image: str, env: int, port: int) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "name": name,
        "image": image,
        "ports": [{"containerPort": port, "name": "http"}],
        "env": _env(env),
        "readinessProbe": probe,
        "livenessProbe": probe,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": f"/etc/{name}"}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }


def make_pod(kind: str) -> dict[str, Any]:
    """small ~2 KB, realistic ~10 KB (3 containers), large ~1 MB, limit ~2.9 MiB."""
    containers = {
        "small": [_container("app", "nginx:1.27", 8, 8080)],
        "realistic": [
            _container(n, "registry.example.com/shop/" + n + ":1.4.2", 18, p)
            for n, p in (("app", 8080), ("worker", 8081), ("cache", 6379))
        ],
        "large": [_container(f"c{i:02d}", "busybox:1.36", 440, 8000 + i) for i in range(20)],
        "limit": [_container(f"c{i:02d}", "busybox:1.36", 1620, 8000 + i) for i in range(20)],
    }[kind]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shop-7d9f8c6b5-",
            "namespace": "shop",
            "labels": {"app": "shop", "pod-template-hash": "7d9f8c6b5", "tier": "backend"},
            "annotations": {
                "podgraft.io/inject": "wait-for-db,log-shipper",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8080",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "shop-7d9f8c6b5",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": containers,
            "serviceAccountName": "shop",
            "volumes": [{"name": "config", "configMap": {"name": "shop"}}],
        },
    }


def make_review(pod: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": "shop",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "dryRun": False,
            },
        }
    ).encode()


BASE_POLICIES = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: log-shipper}
spec:
  sidecars:
    - name: log-shipper
      image: fluent/fluent-bit:3.1.9
      env: [{name: POD_NAME, value: "{{ pod.name }}"}, {name: POD_NAMESPACE, value: "{{ pod.namespace }}"}]
      volumeMounts: [{name: app-logs, mountPath: /var/log/app, readOnly: true}]
      resources: {requests: {cpu: 20m, memory: 32Mi}}
  volumes: [{name: app-logs, emptyDir: {}}]
  volumeMounts: [{name: app-logs, mountPath: /var/log/app}]
  env: [{name: LOG_DIR, value: /var/log/app}]
---
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {name: wait-for-db}
spec:
  initContainers:
    - name: wait-for-db
      image: busybox:1.36
      command: ["sh", "-c", "until nc -z postgres 5432; do sleep 1; done"]
"""


def write_policies(directory: Path, count: int) -> None:
    """`count` policies: the two the pods request, plus fillers selected by annotations they lack."""
    directory.mkdir(parents=True, exist_ok=True)
    docs = BASE_POLICIES.split("---\n")[: min(count, 2)]
    for i in range(count - len(docs)):
        docs.append(
            "apiVersion: podgraft.io/v1alpha1\nkind: InjectionPolicy\n"
            f"metadata: {{name: filler-{i:04d}}}\n"
            f"spec:\n  match:\n    annotations: {{bench.example.com/filler-{i:04d}: 'on'}}\n"
            f"  env: [{{name: FILLER_{i:04d}, value: 'x'}}]\n"
        )
    for index, doc in enumerate(docs):  # one file per policy, as a ConfigMap key would be
        (directory / f"policy-{index:04d}.yaml").write_text(doc)
