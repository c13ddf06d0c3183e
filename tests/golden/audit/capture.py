"""Capture `cluster.yaml`, the audit golden case: what `kubectl get namespaces,replicasets,jobs,pods -A
-o yaml` prints for pods that real controllers made through the webhook, as the apiserver stored them
(names from `generateName`, the defaults, the ServiceAccount plugin's `kube-api-access-*` volume and
its mount in every container, the injected helpers included).

    .venv/bin/python -m tests.golden.audit.capture     # about 1 minute with the binaries cached
    .venv/bin/pytest tests/golden --update-golden      # then the expected outputs; review the diff

It starts the e2e stack (tests/e2e/stack.py: kube-apiserver with the ServiceAccount admission plugin
on, etcd, Podgraft on the host in configmaps mode behind the chart's webhook configuration) and
kube-controller-manager beside it (no scheduler, no kubelet: the pods stay Pending, as stored; its
serviceaccount controller makes the namespaces' accounts). The policies change as they would in a
cluster's life, each change seen in force before the next step (the final set is `policies/`):
1. wait-for-db, team-a-only, metrics-agent and retired-proxy; shop's Deployment frontend asks for
   log-shipper, which does not exist yet (-> missing); StatefulSet cache gets retired-proxy;
2. log-shipper at fluent-bit 3.1.9: Deployment web (2 replicas, -> stale) and StatefulSet db, whose
   own container is named log-shipper (-> refused, a conflict);
3. log-shipper at 3.2.0, retired-proxy deleted (cache -> orphaned): Deployment api (2 replicas, asks for
   log-shipper and wait-for-db, -> current; one is relabelled by hand afterwards, a label log-shipper
   reads), Deployment exporter (matches metrics-agent), a CronJob's Job made with `kubectl create job
   --from` (wait-for-db), a bare pod whose status annotation is then overwritten by hand; team-b's
   Deployment asks for team-a-only (-> refused, namespaceSelector); legacy (not opted in) asks for
   log-shipper (-> refused, never sent to the webhook).
log-shipper's sidecar reads `pod.name` and a label in its args: a controller's pod is rendered with
no name at admission, and the audit must still call it current (issue 15).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.kube import INJECT, INJECTION_LABEL, eventually
from tests.e2e.stack import start_stack
from tests.unit.apiserver_stored.audit.capture import DUMP, Kubectl, bare_pod, deployment, start_controllers

HERE = Path(__file__).parent
POLICIES = HERE / "policies"
LOG_SHIPPER = {INJECT: "log-shipper"}


def policy_documents() -> dict[str, dict[str, Any]]:
    """The final policies (policies/), by name."""
    documents = {}
    for path in sorted(POLICIES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            documents[document["metadata"]["name"]] = document
    return documents


RETIRED = {
    "apiVersion": "podgraft.io/v1alpha1",
    "kind": "InjectionPolicy",
    "metadata": {"name": "retired-proxy"},
    "spec": {
        "sidecarMode": "native",
        "sidecars": [{"name": "retired-proxy", "image": "envoyproxy/envoy:v1.30.4"}],
    },
}


def texts(documents: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {f"{name}.yaml": yaml.safe_dump(doc, sort_keys=False) for name, doc in documents.items()}


def statefulset(name: str, annotations: dict[str, str], containers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": containers},
            },
        },
    }


def cronjob() -> dict[str, Any]:
    template = {
        "metadata": {"annotations": {INJECT: "wait-for-db"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "report", "image": "registry.example.com/report:2.0"}],
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "shop"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}},
    }


def capture(workdir: Path) -> str:
    final = policy_documents()
    log_shipper = final["log-shipper"]
    old = yaml.safe_load(
        yaml.safe_dump(log_shipper).replace("fluent/fluent-bit:3.2.0", "fluent/fluent-bit:3.1.9")
    )
    first = {name: doc for name, doc in final.items() if name != "log-shipper"} | {"retired-proxy": RETIRED}
    with contextlib.ExitStack() as stack:
        e2e = start_stack(
            stack,
            workdir,
            policies=texts(first),
            chart_policies={},
            policy_namespace="podgraft-policies",
            warmup_policy="wait-for-db",
            timings={},
            binaries=("kube-controller-manager", "kubectl"),
            service_accounts=True,
        )
        start_controllers(stack, e2e.plane, workdir)
        kube, kubectl = e2e.kube, Kubectl(e2e.plane.binaries["kubectl"], e2e.plane.admin_kubeconfig)
        for name, labels in (
            ("shop", {INJECTION_LABEL: "enabled"}),
            ("team-b", {INJECTION_LABEL: "enabled", "team": "b"}),
            ("legacy", {}),
        ):
            kube.core.create_namespace({"metadata": {"name": name, "labels": labels}})
            eventually(lambda n=name: kube.core.read_namespaced_service_account("default", n), timeout=60)

        def pods(namespace: str, count: int) -> None:
            assert len(kubectl.pods(namespace)) == count, kubectl("get", "pods", "-n", namespace)

        def in_force(image: str) -> None:
            probe = bare_pod("shop", "probe", LOG_SHIPPER)
            body = kube.create_pod("shop", probe, dry_run=True).body
            assert image in [c["image"] for c in body["spec"].get("initContainers", [])], body["spec"]

        kubectl.apply(
            deployment("frontend", "shop", LOG_SHIPPER, replicas=1),
            statefulset("cache", {INJECT: "retired-proxy"}, [{"name": "cache", "image": "redis:7.4"}]),
        )
        eventually(lambda: pods("shop", 2), timeout=60, what="frontend's and cache's pods")

        kube.put_configmap("podgraft", "podgraft-policies", texts(first | {"log-shipper": old}))
        eventually(lambda: in_force("fluent/fluent-bit:3.1.9"), timeout=30, what="log-shipper 3.1.9 in force")
        own = [{"name": "db", "image": "postgres:16"}, {"name": "log-shipper", "image": "vector:0.41"}]
        kubectl.apply(deployment("web", "shop", LOG_SHIPPER), statefulset("db", LOG_SHIPPER, own))
        eventually(lambda: pods("shop", 5), timeout=60, what="web's and db's pods")

        kube.put_configmap("podgraft", "podgraft-policies", texts(final))
        eventually(lambda: in_force("fluent/fluent-bit:3.2.0"), timeout=30, what="log-shipper 3.2.0 in force")
        exporter = deployment("exporter", "shop", {}, replicas=1)
        exporter["spec"]["template"]["metadata"]["labels"]["metrics"] = "on"
        kubectl.apply(
            deployment("api", "shop", {INJECT: "log-shipper,wait-for-db"}),
            exporter,
            cronjob(),
            bare_pod("shop", "scratch", {}),
            deployment("svc", "team-b", {INJECT: "team-a-only"}, replicas=1),
            deployment("app", "legacy", LOG_SHIPPER, replicas=1),
        )
        kubectl("create", "job", "report-manual", "--from=cronjob/report", "-n", "shop")
        eventually(lambda: pods("shop", 10), timeout=60, what="api's, exporter's, report's pods and scratch")
        eventually(lambda: pods("team-b", 1), timeout=60, what="svc's pod")
        eventually(lambda: pods("legacy", 1), timeout=60, what="app's pod")
        [scratch] = [p for p in kubectl.pods("shop") if p.startswith("scratch-")]
        kubectl("annotate", "-n", "shop", f"pod/{scratch}", "podgraft.io/status={not json", "--overwrite")
        relabelled = sorted(p for p in kubectl.pods("shop") if p.startswith("api-"))[0]
        kubectl("label", "-n", "shop", f"pod/{relabelled}", "team=payments")  # read by log-shipper
        header = (
            f"# {' '.join(DUMP)}: Kubernetes {e2e.plane.version}, captured by tests/golden/audit/capture.py\n"
            "# (see its docstring for what each workload shows)\n"
        )
        return header + kubectl(*DUMP[1:])


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="podgraft-golden-audit-") as tmp:
        dump = capture(Path(tmp))
    (HERE / "cluster.yaml").write_text(dump)
    sys.stdout.write(f"wrote {HERE / 'cluster.yaml'} in {time.monotonic() - started:.0f} s\n")


if __name__ == "__main__":
    main()
