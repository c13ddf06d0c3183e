"""The one list+watch primitive of Podgraft (client-go's reflector, for one resource).

A `ListWatch` lists, then watches from the list's resourceVersion, in a daemon thread, forever:
- a watch that ends (the server closes it after `WATCH_TIMEOUT_SECONDS`) is resumed from the last
  resourceVersion seen, bookmarks included, with no new listing;
- `410 Gone` means that version is too old: it lists again;
- any other failure is retried with capped exponential backoff (`app.retry.Backoff`); a watch the
  server hangs up at once counts as a failure, so it never spins;
- only `stop()` ends it.

`kube_list_watch` reads the API's JSON itself (pages of 500 objects, never the client's model
objects). What it sees reaches its `sink` as a typed stream, on the watch's thread: a `Listed` for every full
listing (the first one and each one after 410 Gone: the whole truth, replacing what came before)
and a `Changed` for every ADDED, MODIFIED or DELETED object. Tests build one from plain functions.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import orjson

from app.cluster.client import HTTP_GONE, LIST_TIMEOUT, api_status, describe, raw_call, raw_json
from app.retry import Backoff

log = logging.getLogger("podgraft.cluster")

WATCH_TIMEOUT_SECONDS = 300  # the server ends a watch after this; it is resumed from its resourceVersion
WATCH_TIMEOUT = (10.0, WATCH_TIMEOUT_SECONDS + 30.0)  # (connect, read) seconds
PAGE_SIZE = 500  # objects per list request: a full listing never holds more than one page of JSON
MIN_HEALTHY_WATCH_SECONDS = 1.0  # a watch that ends quicker than this (without events) counts as a failure

T = TypeVar("T")
ChangeKind = Literal["ADDED", "MODIFIED", "DELETED"]
CHANGE_KINDS: tuple[ChangeKind, ...] = ("ADDED", "MODIFIED", "DELETED")


@dataclass(frozen=True, slots=True)
class Listed(Generic[T]):
    """A full listing: every object there is now (what was seen before and is missing was deleted)."""

    items: list[T]


@dataclass(frozen=True, slots=True)
class Changed(Generic[T]):
    """One watch event about one object."""

    kind: ChangeKind
    item: T


WatchEvent: TypeAlias = Listed[T] | Changed[T]
Sink: TypeAlias = Callable[[WatchEvent[T]], None]
Lister: TypeAlias = Callable[[], tuple[list[T], str]]  # () -> (objects, resourceVersion of the list)
# resourceVersion -> (event type, object or None for a bookmark, resourceVersion after this event)
Watcher: TypeAlias = Callable[[str], Iterable[tuple[str, T | None, str]]]


class ListWatch(Generic[T]):
    """List, then watch from that resourceVersion, forever, in a daemon thread (see the module doc)."""

    def __init__(
        self,
        name: str,
        *,
        lister: Lister[T],
        watcher: Watcher[T],
        sink: Sink[T],
        interrupt: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.lister = lister
        self.watcher = watcher
        self.sink = sink
        self.interrupt = interrupt
        self.backoff = backoff or Backoff()
        self.lists = 0  # how many full listings were delivered (for tests and logs)
        self.version: str | None = None  # resourceVersion to resume from; None: list first
        self._stop = threading.Event()
        self._relist = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (a no-op while it runs). A stopped ListWatch cannot be started again."""
        if self._stop.is_set():
            raise RuntimeError(f"the {self.name} list/watch was stopped; make a new one")
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self.run, name=f"podgraft-watch {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; a watch blocked on the network is interrupted when possible."""
        self._stop.set()
        if self.interrupt is not None:
            try:
                self.interrupt()
            except Exception:  # best effort: the thread is a daemon and checks the flag anyway
                log.debug("interrupting the %s watch failed", self.name, exc_info=True)

    def relist(self) -> None:
        """List again soon (the sink gets a fresh `Listed`): what the sink derives from the objects
        changed. The open watch is interrupted; this is not a failure, so no backoff."""
        self._relist.set()
        if self.interrupt is not None:
            try:
                self.interrupt()
            except Exception:
                log.debug("interrupting the %s watch failed", self.name, exc_info=True)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """The loop; runs until `stop()`. Public so that tests can drive it on their own thread."""
        while not self._stop.is_set():
            if self._relist.is_set():
                self._relist.clear()
                self.version = None
            try:
                if self.version is None:
                    objects, version = self.lister()
                    if self._stop.is_set():
                        return
                    self.lists += 1
                    self.sink(Listed(objects))
                    self.version = version
                    self.backoff.reset()
                if self._relist.is_set():
                    continue  # asked again while listing
                self._watch(self.version)
            except Exception as exc:
                if self._stop.is_set():
                    return
                if self._relist.is_set():
                    continue  # interrupted on purpose
                if api_status(exc) == HTTP_GONE:
                    log.info(
                        "watch resourceVersion expired (410 Gone); listing again", extra={"watch": self.name}
                    )
                    self.version = None
                    continue
                delay = self.backoff.next()
                log.warning(
                    "list/watch failed; retrying",
                    extra={"watch": self.name, "error": describe(exc), "retry_in_seconds": round(delay, 2)},
                )
                self._stop.wait(delay)

    def _watch(self, version: str) -> None:
        """One watch from `version`; `self.version` follows every event (a retry resumes from there)."""
        started = time.monotonic()
        events = 0
        for kind, obj, new_version in self.watcher(version):
            if self._stop.is_set() or self._relist.is_set():
                return
            change = _change_kind(kind)
            if obj is not None and change is not None:
                events += 1
                self.sink(Changed(change, obj))
            if new_version:
                self.version = new_version
        if events == 0 and time.monotonic() - started < MIN_HEALTHY_WATCH_SECONDS:
            delay = self.backoff.next()  # the server hung up at once: do not spin
            log.warning(
                "watch ended immediately; retrying",
                extra={"watch": self.name, "retry_in_seconds": round(delay, 2)},
            )
            self._stop.wait(delay)
        else:
            self.backoff.reset()


def _change_kind(kind: str) -> ChangeKind | None:
    for known in CHANGE_KINDS:
        if kind == known:
            return known
    return None  # BOOKMARK (or anything newer): no object change


def list_pages(
    list_function: Callable[..., Any], *args: Any, page_size: int = PAGE_SIZE, **kwargs: Any
) -> Iterator[tuple[list[dict[str, Any]], str]]:
    """A full listing, page by page (`limit`/`continue`): (the page's objects as JSON, the listing's
    resourceVersion). Only one page is in memory at a time."""
    token: str | None = None
    while True:
        page = raw_json(
            list_function, *args, limit=page_size, _continue=token, _request_timeout=LIST_TIMEOUT, **kwargs
        )
        metadata = page.get("metadata") or {}
        yield list(page.get("items") or []), str(metadata.get("resourceVersion") or "")
        token = metadata.get("continue") or None
        if token is None:
            return


def _shut_down(response: Any) -> None:
    """End a blocked read of `response` from another thread, at once and without blocking: shut its
    socket down (the reader then sees the connection end). `response.close()` would wait for the
    reader's buffer lock, that is for the next event, minutes away on a quiet watch."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the fd itself, under any TLS layer


def kube_list_watch(
    name: str,
    list_function: Callable[..., Any],
    *args: Any,
    convert: Callable[[dict[str, Any]], T],
    sink: Sink[T],
    page_size: int = PAGE_SIZE,
    **kwargs: Any,
) -> ListWatch[T]:
    """A `ListWatch` over one `list_*` function of the official client (e.g.
    `CoreV1Api.list_namespaced_config_map`, with its positional and keyword arguments).

    Lists page by page (`limit`/`continue`) and watches with the raw JSON of the API, never the
    client's model objects; `convert` turns each object (a JSON dict) into what the sink wants, so
    what stays in memory is only what `convert` keeps. An `ERROR` event in the watch stream (410 Gone
    among them) is raised as the `ApiException` it stands for.
    """
    from kubernetes.client.exceptions import ApiException
    from kubernetes.watch.watch import iter_resp_lines

    current: list[Any] = []

    def lister() -> tuple[list[T], str]:
        items: list[T] = []
        versions = [""]
        for page, version in list_pages(list_function, *args, page_size=page_size, **kwargs):
            items.extend(convert(item) for item in page)
            versions.append(version)
        return items, versions[-1]

    def watcher(version: str) -> Iterator[tuple[str, T | None, str]]:
        response = raw_call(
            list_function,
            *args,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            _request_timeout=WATCH_TIMEOUT,
            **kwargs,
        )
        current[:] = [response]
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind = str(event.get("type"))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise ApiException(status=obj.get("code"), reason=str(obj.get("message", ""))[:500])
                new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                yield kind, None if kind == "BOOKMARK" else convert(obj), new_version
        finally:
            current.clear()
            response.release_conn()

    def interrupt() -> None:
        for response in list(current):
            _shut_down(response)

    return ListWatch(name, lister=lister, watcher=watcher, sink=sink, interrupt=interrupt)
