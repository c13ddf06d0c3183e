"""`podgraft serve` with two probes, for bench/tail.py: what stops the event loop, and for how long.

    python bench/probe.py OUT.json serve --port ... (the arguments of `podgraft serve`)

- every collection of the garbage collector, timed through `gc.callbacks` (generation, seconds);
- the event loop's lag: a task that asks to wake up every millisecond records how late it woke.

Both are appended to OUT (JSON lines) every half second, what is new since the last line (the
benchmark kills the server).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import app.serve
import app.server
from app.cli import main

OUT = Path(sys.argv.pop(1))
PAUSES: list[tuple[float, int, float]] = []  # (when, generation, seconds)
LAGS: list[tuple[float, float]] = []  # (when, seconds late)
_started: dict[int, float] = {}


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    now = time.perf_counter()
    if phase == "start":
        _started[0] = now
    elif 0 in _started:
        PAUSES.append((time.time(), int(info["generation"]), now - _started.pop(0)))


async def _lag() -> None:
    written = time.monotonic()
    with OUT.open("a") as out:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            LAGS.append((time.time(), time.perf_counter() - before - 0.001))
            if time.monotonic() - written > 0.5:  # what is new, as one JSON line (a few KB)
                out.write(json.dumps({"pauses": PAUSES, "lags": LAGS, "gc": _gc_state()}) + "\n")
                out.flush()
                PAUSES.clear()
                LAGS.clear()
                written = time.monotonic()


def _gc_state() -> dict[str, Any]:
    return {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(), "enabled": gc.isenabled()}


def _probed(create_app: Any) -> Any:
    def create(*args: Any, **kwargs: Any) -> Any:
        user = kwargs.pop("on_start", None)

        def on_start(runtime: app.server.Runtime) -> None:
            runtime.tasks.append(asyncio.get_running_loop().create_task(_lag()))
            if user is not None:
                user(runtime)

        return create_app(*args, on_start=on_start, **kwargs)

    return create


if os.environ.get("PROBE_GC_THRESHOLD"):  # to try other thresholds: "700,10,10"
    gc.set_threshold(*(int(n) for n in os.environ["PROBE_GC_THRESHOLD"].split(",")))
gc.callbacks.append(_on_gc)
app.serve.create_app = _probed(app.server.create_app)  # type: ignore[attr-defined]
sys.exit(main(sys.argv[1:]))
