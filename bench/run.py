"""Podgraft admission benchmark: throughput, latency and cost growth, side by side with the floor.

    make bench                 # or: .venv/bin/python bench/run.py [--json] [--quick]

Starts, on loopback, Podgraft as in production (`podgraft serve`, TLS, info-level JSON logs;
1 and 2 workers) and the floor server (bench/floor.py: same uvicorn/TLS stack, parses the body,
fixed answer). Drives them with wrk (saturation, keep-alive and one TLS connection per request)
and vegeta (constant rates, latency percentiles). Prints a table, or JSON with --json.
The load generators share the machine's cores with the servers: figures are for this machine.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
RATES = (100, 500, 1000)


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


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    ca: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/mutate"

    def pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        extra = [int(p) for p in children.read_text().split()] if children.exists() else []
        return [self.process.pid, *extra]

    def rss_mib(self) -> list[float]:
        """Peak resident memory (VmHWM) of each serving process, MiB."""
        pids = self.pids()
        workers = pids[1:] or pids
        result = []
        for pid in workers:
            status = Path(f"/proc/{pid}/status").read_text()
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            result.append(round(int(match.group(1)) / 1024, 1) if match else 0.0)
        return result


def wait_ready(port: int, ca: Path, path: str, timeout: float = 60) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", method="GET")
            with urllib.request.urlopen(request, context=context, timeout=2):
                return
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not become ready")


@contextlib.contextmanager
def started(
    name: str, command: list[str], *, port: int, ca: Path, ready_path: str, env: dict[str, str] | None = None
) -> Iterator[Target]:
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        if ready_path:
            wait_ready(port, ca, ready_path)
        else:
            time.sleep(2)
        yield Target(name=name, port=port, process=process, ca=ca)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def podgraft(certs: Path, policies: Path, workers: int) -> contextlib.AbstractContextManager[Target]:
    port = free_port()
    command = [
        str(BIN / "podgraft"),
        "serve",
        "--port",
        str(port),
        "--policies",
        str(policies),
        "--tls-cert",
        str(certs / "tls.crt"),
        "--tls-key",
        str(certs / "tls.key"),
        "--workers",
        str(workers),
    ]
    # Production settings: info-level JSON logs (to /dev/null here), default limits.
    return started(
        f"podgraft-{workers}w",
        command,
        port=port,
        ca=certs / "ca.crt",
        ready_path="/readyz",
        env={"PODGRAFT_LOG_LEVEL": "info", "PODGRAFT_MAX_CONCURRENCY": "256"},
    )


def floor(certs: Path) -> contextlib.AbstractContextManager[Target]:
    port = free_port()
    command = [
        str(BIN / "python"),
        str(ROOT / "bench" / "floor.py"),
        "--port",
        str(port),
        "--cert",
        str(certs / "tls.crt"),
        "--key",
        str(certs / "tls.key"),
    ]
    return started(
        "floor", command, port=port, ca=certs / "ca.crt", ready_path="", env={"PYTHONPATH": str(ROOT)}
    )


# --- load generators ------------------------------------------------------------------------------


def wrk(
    target: Target,
    body: Path,
    *,
    seconds: int,
    connections: int,
    new_connections: bool,
    distinct: bool = False,
) -> dict[str, Any]:
    """Saturation run; `distinct`: every request a different pod (no decision-cache hits)."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(ROOT / "bench" / "post.lua"),
    ]
    if new_connections:
        command += ["-H", "Connection: close"]
    env = {**os.environ, "BODY_FILE": str(body), "DISTINCT": "1" if distinct else "0"}
    out = subprocess.run(
        [*command, target.url], env=env, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": round(rate),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def distinct_targets(path: Path, body: Path, url: str, count: int) -> None:
    """`count` vegeta JSON targets, each a different pod (see bench/post.lua), written before the run
    so that generating them costs the measured machine nothing during it."""
    head, _, tail = body.read_bytes().partition(b"7d9f8c6b5")
    header = {"Content-Type": ["application/json"]}
    with path.open("w") as out:
        for n in range(count):
            pod = head + b"h%08d" % n + tail
            line = {"method": "POST", "url": url, "header": header, "body": base64.b64encode(pod).decode()}
            out.write(json.dumps(line) + "\n")


def vegeta(
    tool: str, target: Target, body: Path, *, rate: int, seconds: int, workdir: Path, distinct: bool = True
) -> dict[str, Any]:
    """Constant-rate run; `distinct`: every request a different pod (no decision-cache hits)."""
    results = workdir / "results.bin"
    attack = [tool, "attack", f"-rate={rate}/s", f"-duration={seconds}s", f"-root-certs={target.ca}"]
    attack += ["-keepalive=true", "-timeout=10s"]
    targets = workdir / "targets.txt"
    if distinct:
        distinct_targets(targets, body, target.url, rate * (seconds + 1))
        attack += ["-format=json", f"-targets={targets}", "-lazy"]
    else:
        targets.write_text(f"POST {target.url}\nContent-Type: application/json\n@{body}\n")
        attack += [f"-targets={targets}"]
    with results.open("wb") as handle:
        subprocess.run(attack, stdout=handle, check=True, timeout=seconds + 60)
    report = json.loads(
        subprocess.run(
            [tool, "report", "-type=json", str(results)], capture_output=True, text=True, check=True
        ).stdout
    )
    hdr = subprocess.run(
        [tool, "report", "-type=hdrplot", str(results)], capture_output=True, text=True, check=True
    ).stdout
    p999 = None
    for line in hdr.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and float(parts[1]) >= 0.999:
            p999 = float(parts[0])
            break
    lat = report["latencies"]
    return {
        "rate": rate,
        "p50_ms": round(lat["50th"] / 1e6, 2),
        "p99_ms": round(lat["99th"] / 1e6, 2),
        "p999_ms": round(p999, 2) if p999 is not None else None,
        "max_ms": round(lat["max"] / 1e6, 2),
        "success": report["success"],
        "achieved_rps": round(report["throughput"]),
    }


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Results:
    machine: dict[str, Any]
    saturation: dict[str, dict[str, Any]] = field(default_factory=dict)
    fixed_rate: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    sizes: list[dict[str, Any]] = field(default_factory=list)
    rss_mib: dict[str, list[float]] = field(default_factory=dict)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d"),
    }


def run(quick: bool) -> Results:
    seconds = 3 if quick else 10
    tool = subprocess.run(
        [str(ROOT / "hack" / "vegeta" / "build.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    results = Results(machine=machine())
    with tempfile.TemporaryDirectory(prefix="podgraft-bench-") as tmp:
        work = Path(tmp)
        subprocess.run(
            [str(BIN / "podgraft"), "certs", "generate", "--out", str(work / "certs")],
            check=True,
            capture_output=True,
        )
        certs = work / "certs"
        bodies = {}
        for kind in ("small", "realistic", "large", "limit"):
            bodies[kind] = work / f"{kind}.json"
            bodies[kind].write_bytes(make_review(make_pod(kind)))
        for count in (1, 2, 100, 1000):
            write_policies(work / f"policies-{count}", count)
        results.machine["bodies_bytes"] = {k: v.stat().st_size for k, v in bodies.items()}

        realistic = bodies["realistic"]
        for name, server in (
            ("floor", lambda: floor(certs)),
            ("podgraft-1w", lambda: podgraft(certs, work / "policies-2", 1)),
            ("podgraft-2w", lambda: podgraft(certs, work / "policies-2", 2)),
        ):
            with server() as target:
                wrk(target, realistic, seconds=2, connections=8, new_connections=False)  # warm-up
                run = {"seconds": seconds, "connections": 16}
                results.saturation[name] = {
                    "keepalive": wrk(target, realistic, new_connections=False, distinct=True, **run),
                    "new_tls_connection": wrk(target, realistic, new_connections=True, distinct=True, **run),
                    "keepalive_replicas": wrk(target, realistic, new_connections=False, **run),
                }
                results.fixed_rate[name] = [
                    vegeta(tool, target, realistic, rate=r, seconds=seconds, workdir=work) for r in RATES
                ]
                results.rss_mib[name] = target.rss_mib()
                log(f"{name}: {results.saturation[name]}")

        for count in (1, 100, 1000):
            with podgraft(certs, work / f"policies-{count}", 1) as target:
                wrk(target, realistic, seconds=2, connections=8, new_connections=False)
                results.policies[str(count)] = wrk(
                    target, realistic, seconds=seconds, connections=16, new_connections=False, distinct=True
                )
                log(f"{count} policies: {results.policies[str(count)]}")

        with podgraft(certs, work / "policies-2", 1) as target:
            for kind, rate in (("small", 50), ("realistic", 50), ("large", 5), ("limit", 2)):
                figures = vegeta(tool, target, bodies[kind], rate=rate, seconds=seconds, workdir=work)
                figures["kind"] = kind
                figures["bytes"] = bodies[kind].stat().st_size
                results.sizes.append(figures)
                log(f"size {kind}: {figures}")
            results.rss_mib["podgraft-1w-after-size-runs"] = target.rss_mib()
    return results


def log(message: str) -> None:
    sys.stderr.write(message + "\n")


def table(results: Results) -> str:
    floor = results.saturation["floor"]
    lines = [
        f"machine: {results.machine}",
        "",
        "Saturation, realistic pod (~8 KB, 3 containers, 2 policies applied), wrk -t1 -c16; every request a",
        "different pod unless marked 'replicas' (identical pods, as a ReplicaSet scale-up sends them):",
        "| server | keep-alive req/s | vs floor | new TLS conn req/s | vs floor | replicas keep-alive req/s "
        "| vs floor | peak RSS MiB per worker |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in results.saturation.items():
        cells = []
        for kind in ("keepalive", "new_tls_connection", "keepalive_replicas"):
            rps = figures[kind]["rps"]
            cells.append(f"{rps} | {rps / floor[kind]['rps']:.0%}")
        rss = ", ".join(str(r) for r in results.rss_mib.get(name, []))
        lines.append(f"| {name} | {' | '.join(cells)} | {rss} |")
    lines += [
        "",
        "Latency at fixed rates (vegeta, keep-alive, every request a different pod):",
        "| server | rate | p50 ms | p99 ms | p99.9 ms | max ms | success |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.fixed_rate.items():
        for r in runs:
            lines.append(
                f"| {name} | {r['rate']}/s | {r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} | "
                f"{r['max_ms']} | {r['success']:.2%} |"
            )
    base = results.policies["1"]["rps"]
    lines += [
        "",
        "Loaded policies (realistic pod, 1 worker, keep-alive, distinct pods):",
        "| policies | req/s | vs 1 policy |",
        "|---|---|---|",
    ]
    lines += [f"| {count} | {f['rps']} | {f['rps'] / base:.0%} |" for count, f in results.policies.items()]
    lines += [
        "",
        "Pod size (1 worker, constant low rate, distinct pods):",
        "| pod | review bytes | p50 ms | p99 ms | max ms | ms per MB (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for s in results.sizes:
        lines.append(
            f"| {s['kind']} | {s['bytes']} | {s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} | "
            f"{s['p50_ms'] / (s['bytes'] / 1e6):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="3 s runs instead of 10 s (a smoke run)")
    args = parser.parse_args()
    results = run(args.quick)
    if args.json:
        sys.stdout.write(json.dumps(results.__dict__, indent=2) + "\n")
    else:
        sys.stdout.write(table(results) + "\n")


if __name__ == "__main__":
    main()
