"""The benchmark's results: what the machine is, and the tables the README quotes."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Results:
    machine: dict[str, Any]
    saturation: dict[str, dict[str, Any]] = field(default_factory=dict)
    fixed_rate: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    sizes: list[dict[str, Any]] = field(default_factory=list)
    rss_mib: dict[str, list[float]] = field(default_factory=dict)
    events: dict[str, dict[str, float]] = field(default_factory=dict)  # server -> Events dropped, requests


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
    for name, counts in results.events.items():
        lines.append(
            f"{name}: {counts['requests']:.0f} requests; pod outcomes dropped (the Events API hangs): "
            f"{counts['queue_full']:.0f} at the queue, {counts['overflow']:.0f} at the pending map"
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
