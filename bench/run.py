"""Podgraft admission benchmark: throughput, latency and cost growth, side by side with the floor.

    make bench                 # or: .venv/bin/python bench/run.py [--json] [--quick]

Starts, on loopback, Podgraft as in production (`podgraft serve`, TLS, info-level JSON logs;
1 and 2 workers) and the floor server (bench/floor.py: same uvicorn/TLS stack, parses the body,
fixed answer). Drives them with wrk (saturation, keep-alive and one TLS connection per request)
and vegeta (constant rates, latency percentiles). Prints a table, or JSON with --json.
The load generators share the machine's cores with the servers: figures are for this machine.

The runs are defined in `scenarios.py`, the servers and load generators in `runner.py`, the tables
in `report.py`; this file puts them together.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from report import Results, machine, table
from runner import Target, floor, make_certs, podgraft, vegeta, vegeta_tool, wrk
from scenarios import (
    POD_KINDS,
    POLICY_COUNTS,
    RATES,
    SATURATION,
    SERVERS,
    SIZES,
    make_pod,
    make_review,
    write_policies,
)


def servers(
    certs: Path, policies: Path
) -> dict[str, Callable[[], contextlib.AbstractContextManager[Target]]]:
    return {
        "floor": lambda: floor(certs),
        "podgraft-1w": lambda: podgraft(certs, policies, 1),
        "podgraft-2w": lambda: podgraft(certs, policies, 2),
        "podgraft-1w-events-hung": lambda: podgraft(certs, policies, 1, events_hung=True),
    }


def run(quick: bool) -> Results:
    seconds = 3 if quick else 10
    tool = vegeta_tool()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    results = Results(machine=machine())
    with tempfile.TemporaryDirectory(prefix="podgraft-bench-") as tmp:
        work = Path(tmp)
        certs = make_certs(work / "certs")
        bodies = {kind: work / f"{kind}.json" for kind in POD_KINDS}
        for kind, path in bodies.items():
            path.write_bytes(make_review(make_pod(kind)))
        for count in {2, *POLICY_COUNTS}:
            write_policies(work / f"policies-{count}", count)
        results.machine["bodies_bytes"] = {k: v.stat().st_size for k, v in bodies.items()}

        realistic = bodies["realistic"]
        start = servers(certs, work / "policies-2")
        for name in SERVERS:
            with start[name]() as target:
                wrk(target, realistic, seconds=2, connections=8, new_connections=False)  # warm-up
                results.saturation[name] = {
                    kind: wrk(target, realistic, seconds=seconds, connections=16, **options)
                    for kind, options in SATURATION.items()
                }
                results.fixed_rate[name] = [
                    vegeta(tool, target, realistic, rate=r, seconds=seconds, workdir=work) for r in RATES
                ]
                results.rss_mib[name] = target.rss_mib()
                if name.endswith("-events-hung"):
                    results.events[name] = {
                        cause: target.metric("podgraft_events_dropped_total", cause=cause)
                        for cause in ("queue_full", "overflow")
                    } | {"requests": target.metric("podgraft_admission_requests_total")}
                log(f"{name}: {results.saturation[name]}")

        for count in POLICY_COUNTS:
            with podgraft(certs, work / f"policies-{count}", 1) as target:
                wrk(target, realistic, seconds=2, connections=8, new_connections=False)
                results.policies[str(count)] = wrk(
                    target, realistic, seconds=seconds, connections=16, new_connections=False, distinct=True
                )
                log(f"{count} policies: {results.policies[str(count)]}")

        with podgraft(certs, work / "policies-2", 1) as target:
            for kind, rate in SIZES:
                figures = vegeta(tool, target, bodies[kind], rate=rate, seconds=seconds, workdir=work)
                figures["kind"] = kind
                figures["bytes"] = bodies[kind].stat().st_size
                results.sizes.append(figures)
                log(f"size {kind}: {figures}")
            results.rss_mib["podgraft-1w-after-size-runs"] = target.rss_mib()
    return results


def log(message: str) -> None:
    sys.stderr.write(message + "\n")


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
