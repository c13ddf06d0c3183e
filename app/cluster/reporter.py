"""Events on the workload for every injection, skip and refusal, never on the admission path.

    admission (event loop)   observe(): (namespace, the pod's ownerReferences, result) appended to a
                             bounded queue; a full queue drops the pod's outcome (counted), never
                             waits; the first pod queued after a drain schedules the next one
    drain (event loop)       once per loop turn that queued pods: their notes (`outcomes`),
                             counted per (pod's controller, note), a bounded map of pending counts
    every flush interval     the pending counts go to the writer thread, which resolves the
                             workload (`owners`, cached GET), counts them into series (`series`)
                             and creates or patches the Events (`events.EventsClient`)

A slow, hanging or failing Events API only ever holds the writer thread: admission never waits on
it, the drain keeps counting, and what cannot be written is retried at the next flush (up to
`MAX_TRIES` times) or dropped and counted in `podgraft_events_dropped_total{cause}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from app.admission.decide import Verdict, request_namespace
from app.admission.review import AdmissionRequest
from app.cluster.client import api_status, describe
from app.cluster.events import ObjectRef, event_name, new_event, series_patch
from app.cluster.outcomes import Level, Note, notes, worth_telling
from app.cluster.owners import (
    HTTP_NOT_FOUND,
    HTTP_SERVER_ERRORS,
    HTTP_TOO_MANY,
    OwnerCache,
    OwnerUnavailable,
    controller_of,
)
from app.cluster.series import NamespaceLimiter, Series, SeriesBook, SeriesKey
from app.engine.inject import InjectionResult
from app.engine.podview import as_mapping
from app.metrics import Metrics

log = logging.getLogger("podgraft.events")

QUEUE_SIZE = 1000  # admitted pods waiting for the drain (client-go's maxQueuedEvents)
MAX_PENDING = 1000  # distinct (controller, note) counts waiting for a flush
MAX_TRIES = 12  # writes (or owner lookups) of one count before it is dropped (client-go's maxTriesPerEvent)
HTTP_CONFLICT = 409

# (namespace, the pod's ownerReferences, the result): not the pod, which would stay alive, for the
# garbage collector to walk, until the drain
Item = tuple[str, object, InjectionResult]
PendingKey = tuple[ObjectRef, Note]  # (the pod's controller, what to tell)


class EventsAPI(Protocol):
    """What the writer needs of the API (`events.EventsClient`; tests give fakes). Blocking."""

    def create(self, namespace: str, body: dict[str, Any]) -> Mapping[str, Any]: ...

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> Mapping[str, Any]: ...

    def get(self, ref: ObjectRef) -> Mapping[str, Any]: ...


@dataclass(slots=True)
class Pending:
    """Occurrences of one note on one controller's pods, not written yet."""

    count: int
    first: float
    last: float
    tries: int = 0


def _transient(status: int | None) -> bool:
    return status is None or status >= HTTP_SERVER_ERRORS or status == HTTP_TOO_MANY


class Writer:
    """The blocking half, on its own thread: owners, series, rate limit, API calls."""

    def __init__(
        self,
        api: EventsAPI,
        *,
        metrics: Metrics,
        instance: str,
        clock: Callable[[], float] = time.time,
        owners: OwnerCache | None = None,
        book: SeriesBook | None = None,
        limiter: NamespaceLimiter | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.instance = instance
        self.clock = clock
        self.owners = owners or OwnerCache(api.get)
        self.book = book or SeriesBook()
        self.limiter = limiter or NamespaceLimiter()
        self._complaints: set[str] = set()  # what was logged since the last success
        self._stamp = 0  # the nanoseconds in the last Event name

    def write(self, batch: Mapping[PendingKey, Pending]) -> dict[PendingKey, Pending]:
        """Count `batch` into series and write what is due; the counts whose workload could not be
        resolved now, to be tried again."""
        leftovers: dict[PendingKey, Pending] = {}
        unavailable = False
        for key, pending in batch.items():
            if unavailable:
                leftovers[key] = pending
                continue
            owner, note = key
            try:
                regarding, related = self.owners.workload(owner)
            except OwnerUnavailable as exc:
                unavailable = True
                self._complain("owner", f"cannot read {owner.kind} {owner.namespace}/{owner.name}: {exc}")
                pending.tries += 1
                if pending.tries < MAX_TRIES:
                    leftovers[key] = pending
                else:
                    self._drop("unavailable", pending.count)
                continue
            series = self.book.observe(
                SeriesKey(regarding, related, note),
                pending.count,
                first=pending.first,
                last=pending.last,
            )
            if series is None:
                self._drop("overflow", pending.count)
        now = self.clock()
        for due, series in self.book.due():
            if not self._write(due, series, now):
                break  # the API is unavailable: the rest waits for the next flush
        self.book.finish(now)
        return leftovers

    def _write(self, key: SeriesKey, series: Series, now: float) -> bool:
        """Create or patch `series`' Event; False when the API is unavailable."""
        delta = series.count - series.written
        namespace = key.regarding.namespace
        if series.written == 0 and series.tries == 0 and not self.limiter.allow(namespace, now):
            self._drop("rate_limited", delta)
            self.book.forget(key)
            return True
        try:
            if series.written:
                try:
                    self.api.patch(namespace, series.name, series_patch(series.count, series.last))
                except Exception as exc:
                    if api_status(exc) != HTTP_NOT_FOUND:
                        raise
                    self._create(key, series)  # the Event expired (the apiserver's event TTL): a new one
            else:
                self._create(key, series)
        except Exception as exc:
            status = api_status(exc)
            if status == HTTP_CONFLICT:  # the name is taken (another replica, the same nanosecond)
                series.tries += 1
                return True  # the next flush creates it under a new name
            if _transient(status):
                self._complain("unavailable", f"cannot write Events: {describe(exc)}")
                series.tries += 1
                if series.tries < MAX_TRIES:
                    return False
                self._drop("unavailable", delta)
            else:
                self._complain(f"rejected {status}", f"an Event was refused: {describe(exc)}")
                self._drop("rejected", delta)
            if series.written == 0:
                self.book.forget(key)
            else:
                series.written = series.count
            return not _transient(status)
        series.written = series.count
        series.tries = 0
        self._complaints.clear()
        self.metrics.events.labels(key.note.reason).inc(delta)
        return True

    def _create(self, key: SeriesKey, series: Series) -> None:
        note = key.note
        self._stamp = max(self._stamp + 1, int(self.clock() * 1e9))  # unique names, one per Event
        series.name = event_name(key.regarding, self._stamp)
        body = new_event(
            name=series.name,
            regarding=key.regarding,
            related=key.related,
            type_=note.type,
            reason=note.reason,
            action=note.action,
            note=note.text,
            instance=self.instance,
            first=series.first,
            last=series.last,
            count=series.count,
        )
        self.api.create(key.regarding.namespace, body)

    def _drop(self, cause: str, count: int) -> None:
        self.metrics.events_dropped.labels(cause).inc(count)

    def _complain(self, what: str, message: str) -> None:
        if what not in self._complaints:
            self._complaints.add(what)
            log.warning(message)


class WriterThread:
    """Runs `Writer.write` on one daemon thread (a hung API call must not hold up the process's exit)."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._jobs: queue.SimpleQueue[
            tuple[Mapping[PendingKey, Pending], asyncio.Future[dict[PendingKey, Pending]]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="podgraft-events", daemon=True)
        self._thread.start()

    async def write(self, batch: Mapping[PendingKey, Pending]) -> dict[PendingKey, Pending]:
        future: asyncio.Future[dict[PendingKey, Pending]] = asyncio.get_running_loop().create_future()
        self._jobs.put((batch, future))
        return await future

    def stop(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            batch, future = job
            try:
                result = self.writer.write(batch)
            except Exception:  # a bug: never let the thread die
                log.exception("writing Events failed")
                result = {}
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                future.get_loop().call_soon_threadsafe(_resolve, future, result)


def _resolve(future: asyncio.Future[dict[PendingKey, Pending]], result: dict[PendingKey, Pending]) -> None:
    if not future.done():
        future.set_result(result)


class WorkloadEvents:
    """Tells a pod's workload what admission did (see the module docstring). `observe` is called on
    the event loop for every decided request; `run` is the background task."""

    def __init__(
        self,
        api: EventsAPI,
        *,
        metrics: Metrics,
        level: Level,
        instance: str,
        flush_seconds: float = 5.0,
        queue_size: int = QUEUE_SIZE,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.time,
        writer: Writer | None = None,
    ) -> None:
        self.metrics = metrics
        self.level: Level = level
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.clock = clock
        self.writer = writer or Writer(api, metrics=metrics, instance=instance, clock=clock)
        # pods waiting to be counted: appended on the admission path, taken whole by `drain`
        self.queue: list[Item] = []
        self.queue_size = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None  # set while `run` runs
        self.pending: dict[PendingKey, Pending] = {}
        self._dropped = metrics.events_dropped.labels("queue_full")
        # the last pod's (result, namespace, controller, notes): the decision cache hands the replicas
        # of one scale-up the same result object, for byte-identical pods
        self._last: tuple[InjectionResult, str, ObjectRef | None, list[Note]] | None = None

    def observe(self, request: AdmissionRequest, verdict: Verdict) -> None:
        """On the admission path: O(1), never blocks, never raises (a bug here loses Events, never
        an admission)."""
        result = verdict.result
        if result is None or request.operation != "CREATE" or request.sub_resource or request.object is None:
            return
        if request.dry_run:  # `--dry-run=server`: no pod will exist, nothing happened to the workload
            return
        try:
            if worth_telling(result, self.level):
                queued = self.queue
                if len(queued) >= self.queue_size:
                    self._dropped.inc()
                    return
                owners = as_mapping(request.object.get("metadata")).get("ownerReferences")
                queued.append((request_namespace(request), owners, result))
                if len(queued) == 1 and self._loop is not None:
                    # One plain callback per turn of the loop that queued anything: under load one turn
                    # completes many admissions, and the drain takes them all. (A task awaiting an
                    # asyncio.Queue was woken for every pod: 30 us each, a fifth of a worker's
                    # throughput at saturation.)
                    self._loop.call_soon(self.drain)
        except Exception:
            log.exception("queueing a pod's Events failed")

    def drain(self) -> None:
        """Count every queued pod into the pending counts (on the event loop, a few microseconds each)."""
        items, self.queue = self.queue, []
        for item in items:
            try:
                self.absorb(item)
            except Exception:  # a bug: lose this pod's Events, not the others
                log.exception("counting a pod's Events failed")

    async def run(self) -> None:
        """Drain what is queued (scheduled by `observe`) and flush the counts until cancelled."""
        thread = WriterThread(self.writer)
        self._loop = asyncio.get_running_loop()
        self.drain()  # what was queued before the task started
        try:
            await self._flush_loop(thread)
        finally:
            self._loop = None
            thread.stop()

    def absorb(self, item: Item) -> None:
        """Count one pod's notes into the pending counts."""
        namespace, owners, result = item
        memo = self._last
        if memo is not None and memo[0] is result and memo[1] == namespace:
            owner, told = memo[2], memo[3]  # a replica answered from the decision cache: the same pod
        else:
            owner = controller_of(owners, namespace)
            told = notes(result, level=self.level)
            self._last = (result, namespace, owner, told)
        if owner is None:  # a bare pod: whoever created it got the warnings
            return
        now = self.clock()
        for note in told:
            key = (owner, note)
            pending = self.pending.get(key)
            if pending is not None:
                pending.count += 1
                pending.last = now
            elif len(self.pending) < self.max_pending:
                self.pending[key] = Pending(1, now, now)
            else:
                self.metrics.events_dropped.labels("overflow").inc()

    async def flush(self, thread: WriterThread) -> None:
        """Hand the pending counts to the writer; take back what it could not place yet."""
        batch, self.pending = self.pending, {}
        leftovers = await thread.write(batch)
        for key, pending in leftovers.items():
            newer = self.pending.get(key)
            if newer is not None:
                pending.count += newer.count
                pending.last = newer.last
            self.pending[key] = pending

    async def _flush_loop(self, thread: WriterThread) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush(thread)
