"""Events on the workload: what they cost the admission path, with an Events API that never answers.

    make bench-events          # or: .venv/bin/python bench/events.py [--rounds N] [--seconds S] [--json]

1. In this process, CPU time per pod (`time.process_time`, 20,000 pods): the handler's part
   (`WorkloadEvents.observe`: one `put_nowait`) and the drain task's (`absorb`: the notes, the
   pending count), for the realistic pod of `make bench`, each naming its own ReplicaSet (so every
   pod is a new pending count, the dearer path), with level `all` (an `Injected` per pod).
2. On loopback, `podgraft serve` (1 worker, Events off: local mode) and the same server with Events
   on against a hung Events API (bench/events_server.py), run alternately `--rounds` times at the
   fixed rates of `make bench` (vegeta, distinct pods, and identical "replica" pods at 500/s), so
   that a noisy machine weighs on both alike. p50 and p99 are printed as min-max over the rounds.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from events_server import HungEventsAPI  # noqa: E402
from measured import settle  # noqa: E402
from runner import make_certs, podgraft, vegeta, vegeta_tool, wrk  # noqa: E402
from scenarios import RATES, make_pod, make_review, write_policies  # noqa: E402

from app.admission.cache import DecisionCache  # noqa: E402
from app.admission.engine import engine_config  # noqa: E402
from app.admission.review import parse_review  # noqa: E402
from app.cluster.reporter import WorkloadEvents  # noqa: E402
from app.metrics import Metrics  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.sources.directory import read_directory  # noqa: E402
from app.sources.store import PolicyStore  # noqa: E402

PODS = 20_000


def _absorb_seconds(events: WorkloadEvents, requests: list[Any], verdicts: list[Any]) -> tuple[float, float]:
    """CPU seconds of `observe` for every request, then of `drain` (`absorb` for every queued item).
    Each with the heap so far frozen, as the server freezes its start-up heap: otherwise a full
    collection walking the 20,000 parsed pods lands in one of the two and dwarfs it."""
    settle()
    started = time.process_time()
    for request, verdict in zip(requests, verdicts, strict=True):
        events.observe(request, verdict)
    observed = time.process_time() - started
    assert len(events.queue) == len(requests)
    settle()
    started = time.process_time()
    events.drain()
    absorbed = time.process_time() - started
    gc.unfreeze()
    return observed, absorbed


def cpu_per_pod(policies: Path) -> dict[str, float]:
    """Microseconds of CPU per pod for `observe` (admission path) and `absorb` (drain task), for
    distinct pods (each naming its own ReplicaSet: a new pending count each, the dearer path) and
    for replicas (identical pods answered from the decision cache)."""
    store = PolicyStore()
    assert not store.replace_all(read_directory(policies))
    body = make_review(make_pod("realistic"))
    config = engine_config(Settings())
    figures: dict[str, float] = {}
    for kind, cache in (("distinct", DecisionCache(0)), ("replicas", DecisionCache())):
        bodies = [
            body.replace(b"7d9f8c6b5", b"h%08d" % n) if kind == "distinct" else body for n in range(PODS)
        ]
        requests = [parse_review(b) for b in bodies]
        settle()
        started = time.process_time()
        verdicts = [
            cache.decide(r, policies=store.current(), config=config, namespace_labels=None) for r in requests
        ]
        figures[f"decide_us_{kind}"] = round((time.process_time() - started) / PODS * 1e6, 1)
        events = WorkloadEvents(
            HungEventsAPI(),
            metrics=Metrics(),
            level="all",
            instance="bench",
            queue_size=PODS,
            max_pending=PODS,
        )
        observed, absorbed = _absorb_seconds(events, requests, verdicts)
        assert sum(p.count for p in events.pending.values()) == PODS
        figures[f"observe_us_{kind}"] = round(observed / PODS * 1e6, 2)
        figures[f"absorb_us_{kind}"] = round(absorbed / PODS * 1e6, 2)
    return figures


def compare(rounds: int, seconds: int) -> dict[str, list[dict[str, Any]]]:
    tool = vegeta_tool()
    runs: dict[str, list[dict[str, Any]]] = {"events off": [], "events on, API hung": []}
    with tempfile.TemporaryDirectory(prefix="podgraft-bench-events-") as tmp:
        work = Path(tmp)
        certs = make_certs(work / "certs")
        body = work / "realistic.json"
        body.write_bytes(make_review(make_pod("realistic")))
        write_policies(work / "policies", 2)
        for _ in range(rounds):
            for name, hung in (("events off", False), ("events on, API hung", True)):
                with podgraft(certs, work / "policies", 1, events_hung=hung) as target:
                    wrk(target, body, seconds=2, connections=8, new_connections=False)  # warm-up
                    figures = {
                        str(rate): vegeta(tool, target, body, rate=rate, seconds=seconds, workdir=work)
                        for rate in RATES
                    }
                    figures["500 replicas"] = vegeta(
                        tool, target, body, rate=500, seconds=seconds, workdir=work, distinct=False
                    )
                    if hung:
                        figures["dropped"] = {
                            cause: target.metric("podgraft_events_dropped_total", cause=cause)
                            for cause in ("queue_full", "overflow")
                        }
                    runs[name].append(figures)
                    sys.stderr.write(f"{name}: {figures}\n")
    return runs


def table(cpu: dict[str, float], runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "CPU per pod, realistic pod, level all (an Injected per pod), us:",
        "| pods | decide (for scale) | observe (admission path) | absorb (drain task) |",
        "|---|---|---|---|",
        *(
            "| "
            + " | ".join([kind, *(str(cpu[f"{part}_us_{kind}"]) for part in ("decide", "observe", "absorb"))])
            + " |"
            for kind in ("distinct", "replicas")
        ),
        "",
        "| 1 worker, p50 / p99 ms (min-max over rounds) | " + " | ".join(_columns()) + " |",
        "|---|" + "---|" * len(_columns()),
    ]
    for name, rounds in runs.items():
        cells = []
        for column in _columns():
            p50 = [r[column]["p50_ms"] for r in rounds]
            p99 = [r[column]["p99_ms"] for r in rounds]
            cells.append(f"{min(p50)}-{max(p50)} / {min(p99)}-{max(p99)}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    dropped = [r["dropped"] for r in runs["events on, API hung"]]
    lines.append(f"pod outcomes dropped while the API hung, per round: {dropped}")
    return "\n".join(lines)


def _columns() -> list[str]:
    return [*(str(rate) for rate in RATES), "500 replicas"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podgraft-bench-events-") as tmp:
        write_policies(Path(tmp), 2)
        cpu = cpu_per_pod(Path(tmp))
    runs = compare(args.rounds, args.seconds)
    if args.json:
        sys.stdout.write(json.dumps({"cpu": cpu, "runs": runs}, indent=2) + "\n")
    else:
        sys.stdout.write(table(cpu, runs) + "\n")


if __name__ == "__main__":
    main()
