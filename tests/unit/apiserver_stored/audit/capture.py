"""Capture `dump.yaml`: what `kubectl get namespaces,replicasets,jobs,pods -A -o yaml` prints for pods
that real controllers made through the webhook, for the audit's tests (tests/unit/test_cli_audit.py);
and beside it what the same apiserver answered for other requests the tests compare with:
`selectors.json` (which pods `kubectl get pods -A -l SELECTOR` lists, or its error), `list.yaml`
(`kubectl get deployments,services,configmaps -n shop -o yaml`, for `podgraft inject`),
`empty.yaml` and `empty.json` (`kubectl get pods -n kube-public -o yaml|json`: no pods).

    .venv/bin/python -m tests.unit.apiserver_stored.audit.capture     # about 2 minutes

It starts the e2e stack (tests/e2e/stack.py: kube-apiserver, etcd, Podgraft in configmaps mode behind
the chart's webhook configuration) and beside it kube-controller-manager (no scheduler, no kubelet:
the pods stay Pending, as stored), with `policies/policies.yaml` but log-shipper at 3.1.9. Then, with
the pinned kubectl:
- shop (opted in): Deployment web (2 replicas, asks for log-shipper) and a Job asking for wait-for-db
  are injected; log-shipper is updated to 3.2.0 (what `policies/` holds); Deployment api (asks for
  both) is injected with it. web's pods are then stale, api's current;
- a pod with only `generateName` whose status annotation was overwritten by hand, asking for nothing
  (label rank=3, for the `>`/`<` selectors), and a Service;
- team-b (opted in, team=b): a pod asking for team-a-only (refused by its namespaceSelector);
- legacy (not opted in): a Deployment asking for log-shipper (never sent to the webhook);
- late: Deployment worker asking for wait-for-db created before the namespace was opted in (missing).
Every object is as the apiserver returned it: names from `generateName`, defaults, `managedFields`,
ownerReferences. The first line of dump.yaml names the Kubernetes version.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hack.cluster.controlplane import ControlPlane
from hack.cluster.processes import LOOPBACK, Managed, free_port
from tests.e2e.kube import INJECT, INJECTION_LABEL, eventually
from tests.e2e.stack import start_stack

HERE = Path(__file__).parent
POLICIES = (HERE / "policies" / "policies.yaml").read_text()
OLD = POLICIES.replace("fluent/fluent-bit:3.2.0", "fluent/fluent-bit:3.1.9")
LOG_SHIPPER = {INJECT: "log-shipper"}
DUMP = ("kubectl", "get", "namespaces,replicasets,jobs,pods", "-A", "-o", "yaml")


def deployment(name: str, namespace: str, annotations: dict[str, str], replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name, "tier": "front" if name == "web" else "back"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": f"registry.example.com/{name}:1.4.2"}]},
            },
        },
    }


def job(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {"annotations": {INJECT: "wait-for-db"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "report", "image": "registry.example.com/report:2.0"}],
                },
            }
        },
    }


def bare_pod(
    namespace: str, prefix: str, annotations: dict[str, str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata = {"generateName": f"{prefix}-", "namespace": namespace, "annotations": annotations}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**metadata, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
}
SELECTORS = (
    "app=web",
    "app==web",
    "app!=web",
    "app in (web,api)",
    "app notin (web)",
    "tier",
    "!tier",
    "app in (web,api),tier!=front",
    "app=web,tier=back",
    " app = web , tier ",
    "app=",
    "app in ()",
    "app in (,web)",
    "batch.kubernetes.io/job-name=report",
    "rank>2",
    "rank<3",
    "rank>x",
    "app in (web",
    "app in web",
    "=web",
    "app=web,",
    "app=(web)",
    "x/y/z=1",
    "-bad=1",
    "app=web!",
    "!app=web",
)


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: Path) -> None:
        self.argv = [str(binary), f"--kubeconfig={kubeconfig}"]

    def __call__(self, *args: str, stdin: str = "") -> str:
        result = subprocess.run(
            [*self.argv, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result.stdout

    def apply(self, *objects: dict[str, Any]) -> None:
        self("create", "-f", "-", stdin="\n".join(json.dumps(o) for o in objects))

    def pods(self, namespace: str) -> list[str]:
        names = self("get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}")
        return names.split()


def start_controllers(stack: contextlib.ExitStack, plane: ControlPlane, workdir: Path) -> None:
    """kube-controller-manager beside the e2e stack: the controllers make the pods (no scheduler, no
    kubelet: they stay Pending, as stored) and the namespaces' ServiceAccounts."""
    controllers = Managed.spawn(
        "kube-controller-manager",
        [
            str(plane.binaries["kube-controller-manager"]),
            f"--kubeconfig={plane.admin_kubeconfig}",
            f"--bind-address={LOOPBACK}",
            f"--secure-port={free_port()}",
            f"--cert-dir={workdir / 'kube-controller-manager'}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--controllers=*,-serviceaccount-token",
        ],
        log_path=workdir / "logs" / "kube-controller-manager.log",
    )
    stack.callback(controllers.stop)


def capture(workdir: Path) -> dict[str, str]:
    with contextlib.ExitStack() as stack:
        e2e = start_stack(
            stack,
            workdir,
            policies={"policies.yaml": OLD},
            chart_policies={},
            policy_namespace="podgraft-policies",
            warmup_policy="wait-for-db",
            timings={},
            binaries=("kube-controller-manager", "kubectl"),
        )
        plane = e2e.plane
        start_controllers(stack, plane, workdir)
        kubectl = Kubectl(plane.binaries["kubectl"], plane.admin_kubeconfig)
        for name, labels in (
            ("shop", {INJECTION_LABEL: "enabled"}),
            ("team-b", {INJECTION_LABEL: "enabled", "team": "b"}),
            ("legacy", {}),
            ("late", {}),
        ):
            e2e.kube.core.create_namespace({"metadata": {"name": name, "labels": labels}})

        def made(namespace: str, count: int) -> None:
            assert len(kubectl.pods(namespace)) == count, kubectl("get", "pods", "-n", namespace)

        kubectl.apply(deployment("web", "shop", LOG_SHIPPER), job("report", "shop"))
        kubectl.apply(deployment("worker", "late", {INJECT: "wait-for-db"}, replicas=1))
        kubectl.apply(deployment("app", "legacy", LOG_SHIPPER, replicas=1))
        eventually(lambda: made("shop", 3), timeout=60, what="web's and report's pods")
        eventually(lambda: made("late", 1), timeout=60, what="worker's pod")
        eventually(lambda: made("legacy", 1), timeout=60, what="app's pod")

        e2e.kube.put_configmap("podgraft", "podgraft-policies", {"policies.yaml": POLICIES})

        def updated() -> None:
            probe = bare_pod("shop", "probe", LOG_SHIPPER)
            body = e2e.kube.create_pod("shop", probe, dry_run=True).body
            images = [c["image"] for c in body["spec"].get("initContainers", [])]
            assert "fluent/fluent-bit:3.2.0" in images, images

        eventually(updated, timeout=30, what="log-shipper 3.2.0 in force")
        kubectl.apply(deployment("api", "shop", {INJECT: "log-shipper,wait-for-db"}))
        kubectl.apply(bare_pod("team-b", "svc", {INJECT: "team-a-only"}))
        kubectl.apply(bare_pod("shop", "scratch", {}, {"rank": "3"}), SERVICE)
        eventually(lambda: made("shop", 6), timeout=60, what="api's pods and scratch")
        [scratch] = [p for p in kubectl.pods("shop") if p.startswith("scratch-")]
        kubectl("annotate", "-n", "shop", f"pod/{scratch}", "podgraft.io/status={not json", "--overwrite")
        kubectl("label", "namespace", "late", f"{INJECTION_LABEL}=enabled")
        kubectl("wait", "-n", "shop", "--for=create", "configmap/kube-root-ca.crt", "--timeout=60s")
        header = f"# {{}}: Kubernetes {plane.version} (capture.py)\n"
        files = {"dump.yaml": header.format(" ".join(DUMP)) + kubectl(*DUMP[1:])}
        shop = ("get", "deployments,services,configmaps", "-n", "shop", "-o", "yaml")
        files["list.yaml"] = header.format(" ".join(["kubectl", *shop])) + kubectl(*shop)
        for ending in ("yaml", "json"):  # JSON has no comments: its header is this docstring
            empty = kubectl("get", "pods", "-n", "kube-public", "-o", ending)
            files[f"empty.{ending}"] = (
                empty if ending == "json" else header.format("kubectl get pods") + empty
            )
        answers: dict[str, Any] = {"kubernetes": plane.version}
        for selector in SELECTORS:
            try:
                listed = kubectl("get", "pods", "-A", "-l", selector, "-o", "json")
                answers[selector] = sorted(
                    f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                    for p in json.loads(listed)["items"]
                )
            except RuntimeError as exc:
                answers[selector] = {"error": str(exc).splitlines()[-1]}
        files["selectors.json"] = json.dumps(answers, indent=2) + "\n"
    return files


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="podgraft-capture-") as tmp:
        files = capture(Path(tmp))
    for name, text in files.items():
        (HERE / name).write_text(text)
    seconds = time.monotonic() - started
    sys.stdout.write(f"wrote {', '.join(files)} in {HERE} in {seconds:.0f} s\n")


if __name__ == "__main__":
    main()
