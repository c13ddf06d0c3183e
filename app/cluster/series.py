"""Event series and the per-namespace rate limit: what to write, without writing it (pure; clock given).

Occurrences of one outcome on one workload (same regarding, related, type, reason and note) are one
Event: created once, then its `series.count` and `series.lastObservedTime` are patched (the
events.k8s.io series semantics, as client-go's event broadcaster keeps them). A series is finished
after `FINISH_SECONDS` without a new occurrence; the next one starts a new Event. Only a new Event
costs a token of its namespace's bucket (client-go's spam filter numbers: a burst of 25, then one
every 5 minutes); counting into an existing series costs none, and is written at most once per flush.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from app.cluster.events import ObjectRef
from app.cluster.outcomes import Note

FINISH_SECONDS = 360.0  # client-go's finishTime: a series with no occurrence for 6 minutes is over
MAX_SERIES = 4096  # series remembered (client-go's event cache holds 4,096)
RATE_BURST = 25  # new Events per namespace at once (client-go's defaultSpamBurst)
RATE_REFILL_SECONDS = 300.0  # then one more every 5 minutes (client-go's defaultSpamQPS, 1/300)
MAX_NAMESPACES = 4096  # buckets kept, least recently used out first


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """What makes two occurrences the same Event."""

    regarding: ObjectRef
    related: ObjectRef | None
    note: Note


@dataclass(slots=True)
class Series:
    """One Event and its count: `count` observed, `written` as the API has it (0: not created yet)."""

    first: float
    last: float
    count: int = 0
    written: int = 0
    tries: int = 0  # failed writes in a row
    name: str = ""  # the Event's, once created


class SeriesBook:
    """The series of one Podgraft replica (its `reportingInstance`), by key."""

    def __init__(self, *, size: int = MAX_SERIES, finish_seconds: float = FINISH_SECONDS) -> None:
        self.size = size
        self.finish_seconds = finish_seconds
        self._series: OrderedDict[SeriesKey, Series] = OrderedDict()

    def __len__(self) -> int:
        return len(self._series)

    def observe(self, key: SeriesKey, count: int, *, first: float, last: float) -> Series | None:
        """Count `count` occurrences (seen from `first` to `last`) into `key`'s series, or start one;
        None when the book is full of live series."""
        series = self._series.get(key)
        if series is not None and (
            series.count > series.written or first - series.last <= self.finish_seconds
        ):
            series.count += count
            series.last = max(series.last, last)
            self._series.move_to_end(key)
            return series
        if series is None and len(self._series) >= self.size:
            return None
        series = Series(first, last, count)
        self._series[key] = series
        self._series.move_to_end(key)
        return series

    def due(self) -> Iterator[tuple[SeriesKey, Series]]:
        """Series with occurrences the API does not have yet, oldest first."""
        for key, series in list(self._series.items()):
            if series.count > series.written:
                yield key, series

    def forget(self, key: SeriesKey) -> None:
        self._series.pop(key, None)

    def finish(self, now: float) -> int:
        """Forget the series that are over and fully written; how many."""
        over = [
            key
            for key, series in self._series.items()
            if series.count == series.written and now - series.last > self.finish_seconds
        ]
        for key in over:
            del self._series[key]
        return len(over)


class NamespaceLimiter:
    """A token bucket per namespace for new Events."""

    def __init__(
        self,
        *,
        burst: int = RATE_BURST,
        refill_seconds: float = RATE_REFILL_SECONDS,
        size: int = MAX_NAMESPACES,
    ) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.size = size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # namespace -> (tokens, at)

    def allow(self, namespace: str, now: float) -> bool:
        tokens, at = self._buckets.get(namespace, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.refill_seconds)
        allowed = tokens >= 1.0
        self._buckets[namespace] = (tokens - 1.0 if allowed else tokens, now)
        self._buckets.move_to_end(namespace)
        while len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        return allowed
