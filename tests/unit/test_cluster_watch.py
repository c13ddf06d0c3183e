"""The one list+watch primitive of app/cluster/watch.py, without an API server: `ListWatch` over a
scripted fake (resume from the last resourceVersion, re-list on 410, backoff, no restart once
stopped) and `kube_list_watch` over raw JSON responses (paged listing, watch stream, error status).

Unit tests (no `e2e` marker): the e2e tier exercises the same code against a real kube-apiserver.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from app.cluster.watch import Listed, ListWatch, WatchEvent, kube_list_watch
from app.retry import Backoff
from tests.unit.cluster_support import FakeApi

# --- ListWatch with a fake API --------------------------------------------------------------------------


def run_list_watch(api: FakeApi, *, until: int) -> tuple[list[Any], ListWatch[str]]:
    seen: list[Any] = []
    holder: list[ListWatch[str]] = []

    def record(item: Any) -> None:
        seen.append(item)
        if len(seen) >= until:
            holder[0].stop()

    watch: ListWatch[str] = ListWatch(
        "fake",
        lister=api.lister,
        watcher=api.watcher,
        sink=lambda event: record(
            ("list", event.items) if isinstance(event, Listed) else (event.kind, event.item)
        ),
        backoff=Backoff(initial=0.0, cap=0.0),
    )
    holder.append(watch)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the list/watch loop did not stop"
    return seen, watch


def test_list_watch_resumes_from_the_last_version_and_relists_on_410() -> None:
    api = FakeApi(
        [
            [("ADDED", "a", "101"), ("BOOKMARK", None, "150")],  # ends normally: resume from 150
            ConnectionResetError("dropped"),  # a failure: retry from 150 again, no list
            [("MODIFIED", "a", "160"), ConnectionResetError("mid-stream")],  # resume from 160
            ApiException(status=410, reason="Gone"),  # too old: list again
            [("MODIFIED", "b", "201"), ("DELETED", "b", "202")],
        ]
    )
    seen, watch = run_list_watch(api, until=6)

    assert seen == [
        ("list", ["listed-1"]),
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("list", ["listed-2"]),
        ("MODIFIED", "b"),
        ("DELETED", "b"),
    ]
    assert api.watch_versions == ["100", "150", "150", "160", "200"]
    assert watch.lists == 2


def test_list_watch_retries_a_failing_list_with_backoff() -> None:
    api = FakeApi([[("ADDED", "a", "101")]])
    failures = [ApiException(status=403, reason="Forbidden"), TimeoutError("slow")]
    real_lister = api.lister

    def flaky() -> tuple[list[str], str]:
        if failures:
            raise failures.pop(0)
        return real_lister()

    api.lister = flaky  # type: ignore[method-assign]
    seen, _ = run_list_watch(api, until=2)
    assert seen == [("list", ["listed-1"]), ("ADDED", "a")]


def test_a_stopped_list_watch_cannot_be_restarted() -> None:
    watch: ListWatch[str] = ListWatch(
        "once", lister=lambda: ([], "1"), watcher=lambda v: iter(()), sink=print
    )
    watch.stop()
    with pytest.raises(RuntimeError, match="make a new one"):
        watch.start()


# --- kube_list_watch over raw JSON ----------------------------------------------------------------------


class FakeResponse:
    """What the client returns with `_preload_content=False`: a urllib3-like response."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.status = status
        self.reason = "OK" if status == 200 else "Error"
        self.data = body
        self.released = False

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for cut in range(0, len(self.data), 7):  # in odd chunks: lines are split across reads
            yield self.data[cut : cut + 7]

    def release_conn(self) -> None:
        self.released = True

    def close(self) -> None:
        self.released = True


def test_kube_list_watch_pages_the_listing_and_reads_the_watch_stream_as_json() -> None:
    calls: list[dict[str, Any]] = []
    pages = {
        None: {
            "metadata": {"continue": "p2", "resourceVersion": "10"},
            "items": [{"metadata": {"name": "a"}}],
        },
        "p2": {"metadata": {"resourceVersion": "10"}, "items": [{"metadata": {"name": "b"}}]},
    }
    stream = b"".join(
        json.dumps(event).encode() + b"\n"  # the API ends every event with a newline
        for event in (
            {"type": "ADDED", "object": {"metadata": {"name": "c", "resourceVersion": "11"}}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}},
        )
    )
    responses: list[FakeResponse] = []

    def list_function(namespace: str, **kwargs: Any) -> FakeResponse:
        calls.append({"namespace": namespace, **kwargs})
        response = FakeResponse(
            stream if kwargs.get("watch") else json.dumps(pages[kwargs["_continue"]]).encode()
        )
        responses.append(response)
        return response

    events: list[WatchEvent[str]] = []
    watch = kube_list_watch(
        "fake",
        list_function,
        "ns",
        label_selector="x=y",
        convert=lambda obj: obj["metadata"]["name"],
        sink=events.append,
        page_size=1,
    )
    items, version = watch.lister()
    assert (items, version) == (["a", "b"], "10")
    assert [(c["limit"], c["_continue"], c["label_selector"]) for c in calls] == [
        (1, None, "x=y"),
        (1, "p2", "x=y"),
    ]

    seen: list[tuple[str, str | None, str]] = []
    with pytest.raises(ApiException) as gone:
        seen.extend(watch.watcher("10"))
    assert seen == [("ADDED", "c", "11"), ("BOOKMARK", None, "15")]
    assert gone.value.status == 410
    assert calls[-1]["watch"] is True
    assert calls[-1]["resource_version"] == "10"
    assert all(r.released for r in responses)


def test_kube_list_watch_raises_an_error_status_as_an_api_exception() -> None:
    watch = kube_list_watch(
        "fake",
        lambda **kwargs: FakeResponse(b'{"kind":"Status","code":403}', status=403),
        convert=str,
        sink=print,
    )
    with pytest.raises(ApiException) as refused:
        watch.lister()
    assert refused.value.status == 403
