"""Where the tail latency comes from: `podgraft serve` (1 worker) with bench/probe.py's probes, at
fixed rates of distinct realistic pods (vegeta, as `make bench` runs it).

    .venv/bin/python bench/tail.py [--rates 500,1000] [--seconds 10]

For each rate: vegeta's p50/p99/max, and during the run the collections of the garbage collector
(count, longest, total per generation) and the event loop's lag (p99, max): a p99 that follows the
collections is collection pauses; one with a busy loop and no long pauses is queueing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runner import ROOT, free_port, make_certs, started, vegeta
from scenarios import make_pod, make_review, write_policies


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def _read(path: Path) -> dict[str, Any]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {
        "pauses": [pause for line in lines for pause in line["pauses"]],
        "lags": [lag for line in lines for lag in line["lags"]],
        "gc": lines[-1]["gc"],
    }


def summary(probe: dict[str, Any], since: float, until: float) -> dict[str, Any]:
    pauses = [(g, s) for when, g, s in probe["pauses"] if since <= when <= until]
    lags = [lag for when, lag in probe["lags"] if since <= when <= until]
    by_generation = {}
    for generation in (0, 1, 2):
        times = [s for g, s in pauses if g == generation]
        by_generation[generation] = {
            "count": len(times),
            "max_ms": round(max(times, default=0) * 1000, 2),
            "total_ms": round(sum(times) * 1000, 1),
        }
    return {
        "gc": by_generation,
        "loop_lag_p99_ms": round(_percentile(lags, 0.99) * 1000, 2),
        "loop_lag_max_ms": round(max(lags, default=0) * 1000, 2),
        "gc_state": probe["gc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="500,1000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the checkout to run (its .venv): e.g. an older commit"
    )
    args = parser.parse_args()
    tool = subprocess.run(
        [str(ROOT / "hack" / "vegeta" / "build.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="podgraft-tail-") as tmp:
        work = Path(tmp)
        certs = make_certs(work / "certs")
        body, out = work / "realistic.json", work / "probe.json"
        body.write_bytes(make_review(make_pod("realistic")))
        write_policies(work / "policies", 2)
        port = free_port()
        command = [
            str(args.root / ".venv" / "bin" / "python"),
            str(ROOT / "bench" / "probe.py"),
            str(out),
            "serve",
            "--port",
            str(port),
        ]
        command += ["--policies", str(work / "policies"), "--tls-cert", str(certs / "tls.crt")]
        command += ["--tls-key", str(certs / "tls.key"), "--workers", "1"]
        env = {"PODGRAFT_LOG_LEVEL": "info", "PODGRAFT_MAX_CONCURRENCY": "256", "PYTHONSAFEPATH": "1"}
        with started(
            "podgraft-1w", command, port=port, ca=certs / "ca.crt", ready_path="/readyz", env=env
        ) as target:
            vegeta(tool, target, body, rate=200, seconds=3, workdir=work)  # warm-up
            for rate in (int(r) for r in args.rates.split(",")):
                since = time.time()
                figures = vegeta(tool, target, body, rate=rate, seconds=args.seconds, workdir=work)
                time.sleep(1)  # the probe writes every half second
                probe = _read(out)
                line = {**figures, **summary(probe, since, time.time())}
                sys.stdout.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
