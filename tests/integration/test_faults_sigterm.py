"""SIGTERM under sustained load against a real `podgraft serve` process: /readyz turns 503 at once,
the server keeps answering through the drain window, asks clients to close, finishes the requests on
the wire after the listener closes, and exits 0.

How the load is bounded, what counts as a failure, and the servers of their own: faults_support.py.
"""

from __future__ import annotations

import http.client
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .faults_support import (
    Load,
    RawResponse,
    padded_review,
    podgraft,
    port_refuses,
    read_response,
    readyz,
    report,
    request_head,
    tls_socket,
    within,
)
from .support import Server, wait_for

DRAIN = 3.0
GRACE = 4.0  # PODGRAFT_REQUEST_TIMEOUT_SECONDS, which is also uvicorn's graceful-shutdown timeout


def _readyz_or_none(server: Server) -> tuple[int, dict[str, object]] | None:
    try:
        return readyz(server)
    except httpx.TransportError:
        return None


@pytest.mark.timeout(60)
def test_sigterm_under_load_drains_and_fails_no_request(tmp_path: Path) -> None:
    env = {"PODGRAFT_DRAIN_SECONDS": str(DRAIN), "PODGRAFT_REQUEST_TIMEOUT_SECONDS": str(GRACE)}
    with podgraft(tmp_path, **env) as server:
        process = server.process
        assert process is not None
        with Load(server, fresh=2, keepalive=2, pause=0.005) as load:
            load.wait_for_requests(20)
            sigterm_at = time.monotonic()
            process.send_signal(signal.SIGTERM)

            # /readyz turns 503 at once, and stays 503 while the server keeps serving.
            _, detail = wait_for(
                lambda: _readyz_or_none(server),
                until=lambda r: r is not None and r[0] == 503,
                timeout=2.0,
                interval=0.02,
                what="/readyz 503 after SIGTERM",
            )
            not_ready_at = time.monotonic()
            assert detail["draining"] is True
            assert detail["ready"] is False
            probes: list[int] = []
            while time.monotonic() < sigterm_at + DRAIN - 1.2:
                answer = _readyz_or_none(server)
                assert answer is not None, "the listener closed before the drain window was over"
                probes.append(answer[0])
                time.sleep(0.1)

            # Connections opened before the listener closes: one with a request on the wire (headers
            # and half the body), one whose first request is not sent yet (the client cannot know the
            # server is stopping). Once new connections are refused, both send the rest: graceful
            # shutdown must answer both.
            body = padded_review(64 * 1024, uid="in-flight")
            with tls_socket(server) as inflight, tls_socket(server) as new:
                inflight.sendall(request_head(content_length=len(body)) + body[: len(body) // 2])
                refused_after = within(DRAIN + 2.0, lambda: port_refuses(server.port))
                assert refused_after is not None, (
                    f"the listener never closed (exit code {process.poll()}):\n{server.log_text()[-3000:]}"
                )
                listener_closed_at = time.monotonic()
                inflight.sendall(body[len(body) // 2 :])
                late = read_response(inflight)
                first = padded_review(1024, uid="first-request")
                new.sendall(request_head(content_length=len(first)) + first)
                try:
                    first_late: RawResponse | str = read_response(new)
                except (OSError, http.client.HTTPException) as exc:
                    first_late = repr(exc)

            returncode = process.wait(timeout=DRAIN + GRACE + 5)
            exited_at = time.monotonic()
            tally = load.stop()

    outcomes = tally.snapshot()
    during_drain = [o for o in outcomes if not_ready_at < o.started and o.finished < listener_closed_at]
    report(
        "SIGTERM under load",
        returncode=returncode,
        seconds_to_listener_closed=round(listener_closed_at - sigterm_at, 2),
        seconds_to_exit=round(exited_at - sigterm_at, 2),
        readyz_probes_during_drain=Counter(probes),
        answered_during_drain=sum(o.kind == "ok" for o in during_drain),
        late_request=late.status,
        first_request_after_close=getattr(first_late, "status", first_late),
        outcome=tally.summary(),
    )
    assert tally.failures == [], [(round(o.started - sigterm_at, 3), o.detail) for o in tally.failures[:5]]
    assert set(probes) == {503}
    assert late.status == 200, late.body[:200]
    assert late.json()["response"]["uid"] == "in-flight"
    assert late.headers.get("connection") == "close"
    assert isinstance(first_late, RawResponse), f"a new connection's first request was dropped: {first_late}"
    assert first_late.status == 200
    assert first_late.json()["response"]["uid"] == "first-request"
    assert first_late.headers.get("connection") == "close"

    # Served through the whole drain window, by every kind of client, and asked them to go away.
    assert listener_closed_at - sigterm_at >= DRAIN
    assert {o.client.split("-")[0] for o in during_drain if o.kind == "ok"} == {"fresh", "keepalive"}
    assert all(o.connection == "close" for o in during_drain if o.kind == "ok"), Counter(
        o.connection for o in during_drain
    )
    # the drained server exits 0 (uvicorn would re-raise the captured SIGTERM; app/uvicorn_ext.py does not).
    assert returncode == 0, "a drained stop is a clean exit"
    assert exited_at - sigterm_at < DRAIN + GRACE + 2
    log = server.log_text()
    assert "draining before shutdown" in log
    assert "timeout graceful shutdown exceeded" not in log
