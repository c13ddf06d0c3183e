"""Capture what the rollout and explain unit tests are fed, from the node tier's real apiserver and
controllers: `sudo .venv/bin/python -m tests.node.capture_rollout [DIR]` rewrites
tests/unit/rollout_stored/*.yaml (or writes them to DIR). It runs the node tier's own cluster and
release (`conftest.node_cluster`: hack/cluster's LocalCluster, Podgraft installed by its chart),
under the node lock.

Each workload (a Deployment, a StatefulSet, a DaemonSet) is created, restarted with the real
`kubectl rollout restart`, and sampled while it rolls out: every distinct state of the object is
kept with what `kubectl rollout status --watch=false` said about that very state (the object's
resourceVersion is the same before and after kubectl's call), so the unit tests check the rules
against kubectl itself. Also: the pods, ReplicaSets and ControllerRevisions half way through, a
paused Deployment, one past its progress deadline, StatefulSets with OnDelete and a partition, a
DaemonSet with OnDelete, PodDisruptionBudgets in each state, a completed Job's pod, dry-run pods with
Podgraft up and down (its webhook at failurePolicy Ignore and its Deployment scaled to zero, then put
back), and the webhook configurations. `managedFields` are dropped, nothing else.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.e2e.kube import INJECT, eventually
from tests.e2e.webhooks import webhook_configuration

from .conftest import Cluster, node_cluster
from .workloads import app_container, deployment, pod_spec, policy

STORED = Path(__file__).resolve().parents[1] / "unit" / "rollout_stored"
POLICY = "stamp"


def stamp_policy(version: str) -> str:
    """An env-only policy (it reads no pod field: see issue 15 about `pod.name`)."""
    return policy(POLICY, env=[{"name": "STAMP", "value": version}])


def clean(obj: Any) -> Any:
    """The object as the API returned it, without managedFields."""
    obj = json.loads(json.dumps(obj))
    items = obj.get("items") if isinstance(obj, dict) else None
    for item in [obj, *(items or [])]:
        if isinstance(item, dict):
            (item.get("metadata") or {}).pop("managedFields", None)
    return obj


def write(out: Path, name: str, documents: Any, note: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# {note}\n# Captured from kube-apiserver v1.35.4 by tests/node/capture_rollout.py; do not edit.\n"
    )
    (out / name).write_text(header + yaml.safe_dump(clean(documents), sort_keys=False))
    print(f"wrote {out / name}")


class Capture:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.api = cluster.kube.api
        self.apps = client.AppsV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)

    def raw(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return json.loads(function(*args, _preload_content=False, **kwargs).data)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        reader = {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}[kind]
        return dict(self.raw(getattr(self.apps, f"read_namespaced_{reader}"), name, namespace))

    def listed(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        function = {
            "Pod": self.cluster.core.list_namespaced_pod,
            "ReplicaSet": self.apps.list_namespaced_replica_set,
            "ControllerRevision": self.apps.list_namespaced_controller_revision,
            "PodDisruptionBudget": self.policy.list_namespaced_pod_disruption_budget,
        }[kind]
        return list(self.raw(function, namespace, label_selector=selector)["items"])

    def kubectl_status(self, kind: str, namespace: str, name: str) -> tuple[int, str]:
        result = self.cluster.kubectl.run(
            "rollout",
            "status",
            f"--namespace={namespace}",
            f"{kind.lower()}/{name}",
            "--watch=false",
            check=False,
        )
        return result.returncode, (result.stdout + result.stderr).strip()

    def sample_rollout(self, kind: str, namespace: str, name: str, *, selector: str) -> dict[str, Any]:
        """Restart with kubectl; every distinct state until kubectl says done, with kubectl's verdict;
        pods, ReplicaSets and revisions once new pods exist beside old ones."""
        states: list[dict[str, Any]] = []
        seen: set[str] = set()
        middle: dict[str, Any] = {}
        self.cluster.kubectl.run("rollout", "restart", f"--namespace={namespace}", f"{kind.lower()}/{name}")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            before = self.get(kind, namespace, name)
            code, said = self.kubectl_status(kind, namespace, name)
            after = self.get(kind, namespace, name)
            version = before["metadata"]["resourceVersion"]
            if version == after["metadata"]["resourceVersion"] and version not in seen:
                seen.add(version)
                states.append({"kubectl": {"exit": code, "said": said}, "object": before})
                pods = self.listed("Pod", namespace, selector)
                hashes = {
                    p["metadata"]["labels"].get("pod-template-hash")
                    or p["metadata"]["labels"].get("controller-revision-hash")
                    for p in pods
                    if not p["metadata"].get("deletionTimestamp")
                }
                if not middle and len(hashes) > 1:
                    middle = {
                        "object": before,
                        "pods": pods,
                        "replicasets": self.listed("ReplicaSet", namespace, selector),
                        "revisions": self.listed("ControllerRevision", namespace, selector),
                    }
            done = "successfully rolled out" in said or said.startswith(
                ("partitioned roll out complete", "statefulset rolling update complete")
            )
            if done and states and states[-1]["kubectl"]["said"] == said:
                break  # the complete state itself is recorded
            time.sleep(0.05)
        final = {
            "object": self.get(kind, namespace, name),
            "pods": self.listed("Pod", namespace, selector),
            "replicasets": self.listed("ReplicaSet", namespace, selector),
            "revisions": self.listed("ControllerRevision", namespace, selector),
        }
        return {"states": states, "middle": middle, "final": final}


def _wait(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    return eventually(check, timeout=timeout, interval=0.5, what=what)


def workload(kind: str, name: str, *, spec: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """A StatefulSet or DaemonSet of pods asking for the stamp policy; `fields` go in its spec."""
    template = {"metadata": {"labels": {"app": name}, "annotations": {INJECT: POLICY}}, "spec": dict(spec)}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": template, **fields},
    }


def statefulset(name: str, *, replicas: int, spec: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    return workload("StatefulSet", name, spec=spec, replicas=replicas, serviceName=name, **fields)


def pdb(name: str, app: str, **rule: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": app}}, **rule},
    }


def capture(cluster: Cluster, out: Path) -> None:
    kube, image = cluster.kube, cluster.image
    cap = Capture(cluster)
    kube.put_configmap(cluster.policy_namespace, "capture-policy", {"stamp.yaml": stamp_policy("v1")})
    ns = cluster.namespace("shop")
    spec = pod_spec([app_container(image)])
    never_ready = pod_spec([app_container(image, command=["sh", "-c", "exec sleep 3600"])])

    def probe() -> None:
        dry = kube.create_pod(
            ns,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "probe-", "annotations": {INJECT: POLICY}},
                "spec": spec,
            },
            dry_run=True,
        ).body
        assert {"name": "STAMP", "value": "v1"} in dry["spec"]["containers"][0].get("env", []), dry["spec"]

    _wait("the stamp policy is served", probe, 30)
    write(
        out,
        "policies-v1.yaml",
        {"stamp.yaml": stamp_policy("v1")},
        "the policy the workloads below were injected with",
    )
    write(out, "policies-v2.yaml", {"stamp.yaml": stamp_policy("v2")}, "the same policy edited")

    # the workloads
    cluster.create(ns, deployment("web", replicas=2, spec=spec, inject=POLICY))
    cap.apps.create_namespaced_stateful_set(ns, statefulset("db", replicas=2, spec=spec))
    surge = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    agent = workload("DaemonSet", "agent", spec=spec, updateStrategy=surge)  # old and new side by side
    cap.apps.create_namespaced_daemon_set(ns, agent)
    cluster.wait_pods(ns, "web", count=2)
    cluster.wait_pods(ns, "db", count=2)
    cluster.wait_pods(ns, "agent", count=1)

    # budgets: allowing one, never allowing one (1 replica, minAvailable 1; maxUnavailable 0), not now
    cluster.create(ns, deployment("solo", replicas=1, spec=spec, inject=POLICY))
    cluster.create(ns, deployment("unready", replicas=2, spec=never_ready, inject=POLICY))
    for body in (
        pdb("web", "web", minAvailable=1),
        pdb("solo", "solo", minAvailable=1),
        pdb("db", "db", maxUnavailable=0),
        pdb("unready", "unready", minAvailable=1),
    ):
        cap.policy.create_namespaced_pod_disruption_budget(ns, body)
    cluster.wait_pods(ns, "solo", count=1)

    def budgets_computed() -> list[dict[str, Any]]:
        found = cap.listed("PodDisruptionBudget", ns)
        by_name = {b["metadata"]["name"]: b.get("status", {}) for b in found}
        assert by_name["web"].get("disruptionsAllowed") == 1, by_name
        assert by_name["solo"].get("expectedPods") == 1, by_name
        assert by_name["unready"].get("expectedPods") == 2, by_name
        assert by_name["db"].get("expectedPods") == 2, by_name
        return found

    budgets = _wait("the disruption controller computed every budget", budgets_computed, 90)
    write(
        out,
        "budgets.yaml",
        {"budgets": budgets, "pods": cap.listed("Pod", ns)},
        "PodDisruptionBudgets and the pods they select",
    )

    # rollouts sampled against kubectl
    for kind, name, file in (
        ("Deployment", "web", "deployment"),
        ("StatefulSet", "db", "statefulset"),
        ("DaemonSet", "agent", "daemonset"),
    ):
        sampled = cap.sample_rollout(kind, ns, name, selector=f"app={name}")
        assert sampled["middle"], f"no state of {kind} {name} with old and new pods"
        write(
            out,
            f"{file}-rollout.yaml",
            sampled,
            f"{kind} {name} restarted by kubectl rollout restart, sampled until complete",
        )

    # what a restart cannot roll out, and a progress deadline
    cluster.kubectl.run("rollout", "pause", f"--namespace={ns}", "deployment/solo")
    late = deployment("late", replicas=1, spec=never_ready, inject=POLICY)
    late["spec"]["progressDeadlineSeconds"] = 3
    cluster.create(ns, late)
    cap.apps.create_namespaced_stateful_set(
        ns, statefulset("ondelete", replicas=1, spec=spec, updateStrategy={"type": "OnDelete"})
    )
    cap.apps.create_namespaced_stateful_set(
        ns,
        statefulset(
            "parted",
            replicas=2,
            spec=spec,
            updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
        ),
    )
    cap.apps.create_namespaced_daemon_set(
        ns, workload("DaemonSet", "dsondelete", spec=spec, updateStrategy={"type": "OnDelete"})
    )

    def deadline_passed() -> dict[str, Any]:
        obj = cap.get("Deployment", ns, "late")
        reasons = [c.get("reason") for c in obj.get("status", {}).get("conditions") or []]
        assert "ProgressDeadlineExceeded" in reasons, reasons
        return obj

    exceeded = _wait("deployment late exceeded its progress deadline", deadline_passed, 60)
    code, said = cap.kubectl_status("Deployment", ns, "late")
    write(
        out,
        "stuck.yaml",
        {
            "paused": cap.get("Deployment", ns, "solo"),
            "progressDeadline": {"kubectl": {"exit": code, "said": said}, "object": exceeded},
            "onDelete": cap.get("StatefulSet", ns, "ondelete"),
            "partition": cap.get("StatefulSet", ns, "parted"),
            "daemonSetOnDelete": cap.get("DaemonSet", ns, "dsondelete"),
        },
        "workloads a restart does not roll out, and a Deployment past its progress deadline",
    )

    # a completed Job's pod
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "once"}, "annotations": {INJECT: POLICY}},
                "spec": pod_spec(
                    [{"name": "work", "image": image, "command": ["sh", "-c", "echo done"]}],
                    restartPolicy="Never",
                ),
            },
        },
    }
    cluster.create(ns, job)

    def succeeded() -> dict[str, Any]:
        pods = cap.listed("Pod", ns, "app=once")
        assert pods, "no pod yet"
        assert pods[0].get("status", {}).get("phase") == "Succeeded", pods[0].get("status")
        return pods[0]

    write(
        out,
        "job-pod.yaml",
        _wait("the Job's pod succeeded", succeeded),
        "a completed Job's pod, injected with stamp v1",
    )

    # dry-run pods from a template: Podgraft up, then down under failurePolicy Ignore
    template = cap.get("Deployment", ns, "web")["spec"]["template"]
    dry_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-",
            **{k: template["metadata"][k] for k in ("labels", "annotations")},
        },
        "spec": template["spec"],
    }
    up = kube.create_pod(ns, dry_pod, dry_run=True).body
    with cluster.podgraft_down("Ignore"):
        down = _wait(
            "pods admitted uninjected",
            lambda: _uninjected(kube.create_pod(ns, dry_pod, dry_run=True).body),
            30,
        )
    write(
        out,
        "dry-run-pods.yaml",
        {"template": dry_pod, "up": up, "down": down},
        "dry-run creates of a pod from deployment web's template",
    )

    # the webhook configurations as registered: the chart's, and a second one scoped by labels
    (registered,) = kube.webhook_configuration(cluster.release.fullname)["webhooks"]
    second = webhook_configuration(
        "a-labeller",
        url="https://127.0.0.1:1/label",
        ca_bundle=registered["clientConfig"]["caBundle"],
        object_labels={"team": "a"},
        reinvocation="IfNeeded",
    )
    second["webhooks"][0]["matchConditions"] = [{"name": "not-a-dry-run", "expression": "!request.dryRun"}]
    kube.put_webhook(second)
    listed = cap.raw(kube.admission.list_mutating_webhook_configuration)
    kube.admission.delete_mutating_webhook_configuration("a-labeller")
    namespaces = cap.raw(cluster.core.list_namespace)["items"]
    write(
        out,
        "webhooks.yaml",
        {
            "configurations": listed["items"],
            "namespace": next(n for n in namespaces if n["metadata"]["name"] == ns),
        },
        "the MutatingWebhookConfigurations (the chart's, and a second one) and the namespace the pods run in",
    )
    kube.put_configmap(cluster.policy_namespace, "capture-policy", {"stamp.yaml": stamp_policy("v2")})


def _uninjected(pod: dict[str, Any]) -> dict[str, Any]:
    assert "podgraft.io/status" not in (pod["metadata"].get("annotations") or {}), pod["metadata"]
    return pod


def main() -> None:
    out = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else STORED
    with (
        tempfile.TemporaryDirectory(prefix="podgraft-capture-") as workdir,
        node_cluster(Path(workdir), {}, holder="tests/node/capture_rollout.py") as cluster,
    ):
        capture(cluster, out)


if __name__ == "__main__":
    main()
