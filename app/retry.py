"""The one way Podgraft retries: capped exponential backoff with jitter.

Every retry loop uses a `Backoff`: the list+watch loop (`app.cluster.watch`), the restart of a
failed policy source (`app.server`), the directory watcher (`app.sources.directory`), and
`retry_call` for one-shot API calls (version discovery, the caBundle patch).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Backoff:
    """Delays of initial, initial*factor, ... up to `cap` seconds.

    Each delay is scaled by a random factor in [1 - jitter, 1] so that many replicas that lost the
    API server at the same moment do not come back in lockstep.
    """

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    rand: Callable[[], float] = random.random
    attempts: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return delay * (1.0 - self.jitter * self.rand())

    def reset(self) -> None:
        self.attempts = 0


class GaveUp(Exception):
    """`retry_call` stopped retrying; `__cause__` is the last failure."""

    def __init__(self, attempts: int, last: Exception) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last


def retry_call(
    call: Callable[[], T],
    *,
    backoff: Backoff,
    retry_if: Callable[[Exception], bool] = lambda _exc: True,
    attempts: int | None = None,
    deadline_seconds: float | None = None,
    on_retry: Callable[[Exception, float], None] = lambda _exc, _delay: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()` until it returns. A failure that `retry_if` refuses is raised as it is; past `attempts`
    calls or `deadline_seconds` the last failure is raised as `GaveUp` (chained)."""
    deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    tried = 0
    while True:
        tried += 1
        try:
            return call()
        except Exception as exc:
            if not retry_if(exc):
                raise
            delay = backoff.next()
            out_of_attempts = attempts is not None and tried >= attempts
            out_of_time = deadline is not None and time.monotonic() + delay > deadline
            if out_of_attempts or out_of_time:
                raise GaveUp(tried, exc) from exc
            on_retry(exc, delay)
            sleep(delay)
