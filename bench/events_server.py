"""`podgraft serve` (local mode, the same arguments) with Events on the workload at level `all`,
written to an Events API that never answers: every call hangs for ever. The benchmark compares its
admission latency with plain `podgraft serve` (`make bench`: server `podgraft-1w-events-hung`).

    .venv/bin/python bench/events_server.py serve --port 8443 --policies examples/policies ...

Every admitted pod is queued (level `all`: `Injected` for each); the writer thread is stuck in its
first call, so the drain task counts pods into the pending map until its bound, and drops (counted in
`podgraft_events_dropped_total`) from then on: the worst case for the admission path.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from app.cli import build_parser
from app.cli.common import settings_from
from app.cluster.events import ObjectRef
from app.cluster.reporter import WorkloadEvents
from app.metrics import Metrics
from app.serve import Wiring, build_wiring, serve
from app.settings import Settings


class HungEventsAPI:
    """Every call blocks for ever (a TCP connection the API server never answers)."""

    def __init__(self) -> None:
        self._never = threading.Event()

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self._never.wait()
        return {}

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._never.wait()
        return {}

    def get(self, ref: ObjectRef) -> dict[str, Any]:
        self._never.wait()
        return {}


def hung_events(settings: Settings, metrics: Metrics) -> tuple[Wiring, Settings]:
    wiring, settings = build_wiring(settings, metrics)
    events = WorkloadEvents(
        HungEventsAPI(),
        metrics=metrics,
        level="all",
        instance="bench",
        flush_seconds=settings.events_flush_seconds,
    )
    return Wiring(wiring.sources, wiring.namespaces, wiring.census, events), settings


def main() -> int:
    args = build_parser().parse_args(sys.argv[1:])
    return serve(settings_from(args), wire=hung_events)


if __name__ == "__main__":
    sys.exit(main())
