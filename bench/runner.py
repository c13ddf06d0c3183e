"""The benchmark's moving parts: servers started on loopback, and the load generators (wrk, vegeta)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"


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

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` on /metrics that carry `labels` (0 when absent)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        url = f"https://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=5) as page:
            text = page.read().decode()
        total = 0.0
        for line in text.splitlines():
            match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
            if (
                match
                and match.group(1) == name
                and all(f'{key}="{value}"' in (match.group(2) or "") for key, value in labels.items())
            ):
                total += float(match.group(3))
        return total

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


def vegeta_tool() -> str:
    """The pinned vegeta, built by hack/vegeta/build.sh (cached)."""
    build = subprocess.run(
        [str(ROOT / "hack" / "vegeta" / "build.sh")], capture_output=True, text=True, check=True
    )
    return build.stdout.strip()


def wait_ready(
    process: subprocess.Popen[bytes],
    command: list[str],
    port: int,
    ca: Path,
    path: str,
    *,
    timeout: float = 60,
) -> None:
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:  # its output goes to /dev/null: say how to see it
            raise RuntimeError(
                f"server exited with {process.returncode} before it was ready; run it by hand to see why:"
                f" {shlex.join(command)}"
            )
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
            wait_ready(process, command, port, ca, ready_path)
        else:
            time.sleep(2)
        yield Target(name=name, port=port, process=process, ca=ca)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def podgraft(
    certs: Path, policies: Path, workers: int, *, events_hung: bool = False
) -> contextlib.AbstractContextManager[Target]:
    """`podgraft serve`; `events_hung`: with Events on (level all) against an Events API that never
    answers (bench/events_server.py)."""
    port = free_port()
    entry = (
        [str(BIN / "python"), str(ROOT / "bench" / "events_server.py")]
        if events_hung
        else [str(BIN / "podgraft")]
    )
    command = [
        *entry,
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
        f"podgraft-{workers}w" + ("-events-hung" if events_hung else ""),
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


def make_certs(directory: Path) -> Path:
    """A CA and a serving certificate for loopback, made by `podgraft certs generate`; the directory."""
    subprocess.run(
        [str(BIN / "podgraft"), "certs", "generate", "--out", str(directory)], check=True, capture_output=True
    )
    return directory


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
