"""Audit benchmark: `podgraft audit` over 10,000 pods in 100 namespaces, and the running audit's memory.

    make bench-audit            # or: .venv/bin/python bench/audit.py [--pods N] [--namespaces N] [--json]

Builds the pods with the webhook's own engine, as a cluster would hold them: 70% injected with the
live policies (current), 15% injected with an older version of the log shipper (stale), 15% never
injected (missing), each owned by a ReplicaSet of a Deployment. Then, each run a separate process
whose wall time and peak RSS (from `wait4`) are reported:
- through the API: the pods are created in a real kube-apiserver and etcd on loopback (the e2e
  tier's, built from the pinned modules) and `podgraft audit -A --kubeconfig ...` lists them page by
  page, as in a cluster;
- from a file: the same objects as the pinned kubectl prints them from that apiserver (`kubectl get
  namespaces,replicasets,pods -A -o json`, and `-o yaml`: pods as stored, with managedFields),
  `podgraft audit -f` on each (with `--no-api`, the built objects written as kubectl would).
Last, in this process, the same pods go through the server's census (`app.audit.census`) the way
its pod watch feeds it, and `tracemalloc` tells what the records keep once the pods are gone.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.admission.engine import engine_config  # noqa: E402
from app.audit.census import Census, record  # noqa: E402
from app.audit.classify import audit_pod  # noqa: E402
from app.engine.inject import inject_pod  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.sources.store import PolicyStore  # noqa: E402

POLICY = """\
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {{name: log-shipper}}
spec:
  sidecars:
    - name: log-shipper
      image: fluent/fluent-bit:{tag}
      env: [{{name: POD_NAME, value: "{{{{ pod.name }}}}"}}]
      volumeMounts: [{{name: app-logs, mountPath: /var/log/app, readOnly: true}}]
  volumes: [{{name: app-logs, emptyDir: {{}}}}]
  volumeMounts: [{{name: app-logs, mountPath: /var/log/app}}]
  env: [{{name: LOG_DIR, value: /var/log/app}}]
---
apiVersion: podgraft.io/v1alpha1
kind: InjectionPolicy
metadata: {{name: wait-for-db}}
spec:
  initContainers:
    - name: wait-for-db
      image: busybox:1.36
      command: ["sh", "-c", "until nc -z postgres 5432; do sleep 1; done"]
"""
LIVE_TAG, OLD_TAG = "3.2.0", "3.1.9"
OPTED_IN = {"podgraft.io/injection": "enabled"}


def policy_set(tag: str, directory: Path | None = None) -> Any:
    store = PolicyStore()
    errors = store.replace_all({"policies.yaml": POLICY.format(tag=tag)})
    assert not errors, errors
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "policies.yaml").write_text(POLICY.format(tag=tag))
    return store.current()


def app_pod(namespace: str, deployment: str, index: int) -> dict[str, Any]:
    template_hash = f"{abs(hash(deployment)) % 10**9:09d}"[:9]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{deployment}-{template_hash}-{index:05d}",
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "labels": {"app": deployment, "pod-template-hash": template_hash},
            "annotations": {"podgraft.io/inject": "wait-for-db,log-shipper"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"{deployment}-{template_hash}",
                    "uid": "rs",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": f"registry.example.com/{deployment}:1.4.2",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": f"SETTING_{i}", "value": f"value-{i}"} for i in range(12)],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                }
            ],
            "serviceAccountName": "default",
        },
    }


def replica_set(namespace: str, deployment: str, pod: dict[str, Any]) -> dict[str, Any]:
    ref = pod["metadata"]["ownerReferences"][0]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": ref["name"],
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment,
                    "uid": "d",
                    "controller": True,
                }
            ],
        },
    }


def build(pods: int, namespaces: int, live: Any, old: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The cluster's objects: pods (current, stale, missing by index) and their ReplicaSets."""
    config = engine_config(Settings(kubernetes_version="1.35"))
    objects: list[dict[str, Any]] = []
    made = {"current": 0, "stale": 0, "missing": 0}
    owners: set[tuple[str, str]] = set()
    per_namespace = max(1, pods // namespaces)
    for n in range(pods):
        namespace = f"team-{n // per_namespace % namespaces:03d}"
        deployment = f"svc-{n % 10}"
        pod = app_pod(namespace, deployment, n)
        kind = "missing" if n % 20 < 3 else "stale" if n % 20 < 6 else "current"
        if kind != "missing":
            result = inject_pod(
                pod,
                namespace=namespace,
                namespace_labels=None,
                policies=live if kind == "current" else old,
                config=config,
            )
            assert result.mutated is not None, result.warnings
            pod = copy.deepcopy(dict(result.mutated))
        made[kind] += 1
        owner = (namespace, deployment)
        if owner not in owners:
            owners.add(owner)
            objects.append(replica_set(namespace, deployment, pod))
        objects.append(pod)
    return objects, made


# Runs the command as a grandchild of a fresh, small interpreter and prints its (seconds, peak RSS in
# KiB, exit code): Linux carries the peak RSS of the process that forked across exec, so a child of
# this (large) benchmark process would report the benchmark's own memory as its peak.
MEASURE = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
seconds, code = time.perf_counter() - started, os.waitstatus_to_exitcode(status)
sys.stderr.write(json.dumps([seconds, usage.ru_maxrss, code]))
"""


def run_cli(source: list[str], policies: Path) -> dict[str, Any]:
    command = [
        str(ROOT / ".venv" / "bin" / "podgraft"),
        "audit",
        *source,
        "--policies",
        str(policies),
        "--kubernetes-version",
        "1.35",
        "-o",
        "json",
    ]
    with tempfile.TemporaryFile() as out:
        launcher = subprocess.run(
            [sys.executable, "-c", MEASURE, *command],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=True,
        )
        seconds, peak_kib, code = json.loads(launcher.stderr.strip().splitlines()[-1])
        out.seek(0)
        report = json.load(out)
    states: dict[str, int] = {}
    for counts in report["summary"].values():
        for state, count in counts.items():
            states[state] = states.get(state, 0) + count
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "exit_code": code,
        "pods_reported": len(report["pods"]),
        "policy_states": states,
    }


DUMP = ("get", "namespaces,replicasets,pods", "-A", "-o")


def namespace_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = sorted({o["metadata"]["namespace"] for o in objects})
    labels = {"podgraft.io/injection": "enabled"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}} for n in names
    ]


def through_the_api(
    objects: list[dict[str, Any]], work: Path, policies: Path
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Create the namespaces, ReplicaSets and pods in a real apiserver, audit them from there, and
    dump them with kubectl as JSON and YAML."""
    from hack.cluster.controlplane import ControlPlane

    plane = ControlPlane.start(work / "controlplane", binaries=("kubectl",))
    try:
        api = plane_client(plane.admin_kubeconfig)
        started = time.perf_counter()
        for namespace in namespace_objects(objects):
            api.core.create_namespace({"metadata": namespace["metadata"]})  # type: ignore[arg-type]  # the client sends a dict as is
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(api.create, objects))
        created = time.perf_counter() - started
        figures = run_cli(["-A", "--kubeconfig", str(plane.admin_kubeconfig)], policies)
        figures["objects_created_in_seconds"] = round(created, 1)
        files = {}
        for ending in ("json", "yaml"):
            files[ending] = work / f"dump.{ending}"
            with files[ending].open("w") as out:
                kubectl = [str(plane.binaries["kubectl"]), f"--kubeconfig={plane.admin_kubeconfig}"]
                subprocess.run([*kubectl, *DUMP, ending], stdout=out, check=True, timeout=600)
        return figures, files
    finally:
        plane.stop()


def write_dumps(objects: list[dict[str, Any]], work: Path) -> dict[str, Path]:
    """The built objects as kubectl prints a List of them (without an apiserver's additions)."""
    import yaml

    listed = {"apiVersion": "v1", "items": [*namespace_objects(objects), *objects], "kind": "List"}
    files = {"json": work / "dump.json", "yaml": work / "dump.yaml"}
    files["json"].write_text(json.dumps(listed, indent=4))
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    files["yaml"].write_text(yaml.dump(listed, Dumper=dumper, default_flow_style=False))
    return files


class plane_client:
    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = 16
        api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)

    def create(self, obj: dict[str, Any]) -> None:
        body = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "uid"}}
        namespace = obj["metadata"]["namespace"]
        if obj["kind"] == "ReplicaSet":
            labels = {"app": obj["metadata"]["name"]}
            spec = {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "x"}]},
                },
            }
            self.apps.create_namespaced_replica_set(namespace, {**body, "spec": spec}, _preload_content=False)  # type: ignore[arg-type]
        else:
            self.core.create_namespaced_pod(namespace, body, _preload_content=False)  # type: ignore[arg-type]


def census_memory(objects: list[dict[str, Any]], live: Any) -> dict[str, Any]:
    """What the running audit keeps for these pods, once the pods themselves are gone."""
    config = engine_config(Settings(kubernetes_version="1.35"))
    pods = [o for o in objects if o["kind"] == "Pod"]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    census = Census()
    started = time.perf_counter()
    census.replace(
        {
            p["metadata"]["uid"]: item
            for p in pods
            if (item := record(audit_pod(p, namespace_labels=OPTED_IN, policies=live, config=config)))
            is not None
        }
    )
    seconds = time.perf_counter() - started
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {
        "records": len(census),
        "kept_mib": round(kept / 2**20, 2),
        "audit_seconds_in_process": round(seconds, 2),
        "counts": {f"{p}/{s}": n for (p, s), n in sorted(census.counts().items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-api", action="store_true", help="skip the run through a real apiserver")
    parser.add_argument(
        "--keep-dumps", type=Path, help="copy the dump files (and policies) to this directory"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podgraft-audit-bench-") as tmp:
        work = Path(tmp)
        live = policy_set(LIVE_TAG, work / "policies")
        objects, made = build(args.pods, args.namespaces, live, policy_set(OLD_TAG))
        if args.no_api:
            api, files = None, write_dumps(objects, work)
        else:
            api, files = through_the_api(objects, work, work / "policies")
        if args.keep_dumps:
            args.keep_dumps.mkdir(parents=True, exist_ok=True)
            for path in [*files.values(), work / "policies" / "policies.yaml"]:
                shutil.copy(path, args.keep_dumps / path.name)
        results = {
            "pods": args.pods,
            "namespaces": args.namespaces,
            "built": made,
            "api": api,
            **{
                f"file_{ending}": {
                    "file_mib": round(path.stat().st_size / 2**20, 1),
                    **run_cli(["-f", str(path)], work / "policies"),
                }
                for ending, path in files.items()
            },
            "census": census_memory(objects, live),
            "machine_cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
            "bench_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return
    census = results["census"]
    lines = [f"{args.pods} pods in {args.namespaces} namespaces, built {made}"]
    for name in ("api", "file_json", "file_yaml"):
        cli = results[name]
        if cli:
            size = f", {cli['file_mib']} MiB" if "file_mib" in cli else ""
            lines.append(
                f"podgraft audit ({name}{size}): {cli['seconds']} s, peak RSS {cli['peak_rss_mib']} MiB,"
                f" exit {cli['exit_code']}, states {cli['policy_states']}"
            )
    lines.append(
        f"running audit: {census['records']} records keep {census['kept_mib']} MiB"
        f" (audited in {census['audit_seconds_in_process']} s in process)"
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
