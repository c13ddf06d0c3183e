"""Faults and load against real `podgraft serve` processes: certificate rotation and SIGTERM under
sustained load, an overload burst, huge, truncated and trickled requests, broken and expiring certificates.

Each test starts its own server with the settings it needs and prints what it measured (run with `-s`).
Load goes to 127.0.0.1 only; every loop is bounded in count and time; no test asserts a latency, only
generous functional deadlines.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .faults_support import (
    OVERLOADED,
    Load,
    Outcome,
    closed_by_peer,
    injecting_review,
    issue_serving,
    not_after,
    padded_review,
    port_refuses,
    read_response,
    readyz,
    request_head,
    scrape,
    serial_of,
    tls_socket,
    within,
)
from .support import Server, build_server, client_context, peer_certificate, running, wait_for

ROTATION_DEADLINE = 5.0  # new handshakes see a rotated certificate within this many seconds
FAST = {
    "PODGRAFT_CERT_RELOAD_INTERVAL_SECONDS": "0.25",
    "PODGRAFT_DRAIN_SECONDS": "0",  # stop at once when the test is over (the drain test sets its own)
}


@contextlib.contextmanager
def podgraft(root: Path, **env: str) -> Iterator[Server]:
    """A server of its own for one test: fast certificate checks, no drain on stop, plus `env`."""
    with running(build_server(root, env={**FAST, **env})) as server:
        yield server


def report(title: str, **figures: object) -> None:
    print(f"\n[{title}] " + " ".join(f"{k}={v}" for k, v in figures.items()))


def served_serial(server: Server) -> int:
    return peer_certificate(server.port, client_context(server.ca_file)).serial_number


def serves(server: Server, serial: int) -> Callable[[], bool]:
    return lambda: served_serial(server) == serial


# --- certificate swap under load --------------------------------------------------------------------

SWAPS = 4


@pytest.mark.timeout(60)
def test_certificate_swaps_under_load_fail_no_request(tmp_path: Path) -> None:
    with podgraft(tmp_path) as server:
        serials = [served_serial(server)]
        delays: list[float] = []
        with Load(server, fresh=2, keepalive=2) as load:
            load.wait_for_requests(20)
            for _ in range(SWAPS):
                cert, key = issue_serving(server)
                serial = serial_of(cert)
                assert serial not in serials
                server.secret.publish(cert, key)
                took = within(ROTATION_DEADLINE, serves(server, serial))
                assert took is not None, f"serial {serial:x} not served within {ROTATION_DEADLINE}s"
                delays.append(took)
                serials.append(serial)
                answered = load.tally.count("ok")
                time.sleep(0.75)  # sustained traffic on the new certificate
                load.wait_for_requests(answered + 10)
            tally = load.stop()
        metrics = scrape(server)

    report(
        "cert swap under load",
        swaps=SWAPS,
        max_seconds_to_new_serial=round(max(delays), 2),
        reload_errors=metrics["podgraft_certificate_reload_errors_total"],
        outcome=tally.summary(),
    )
    assert tally.failures == [], tally.failures[:5]
    assert tally.count("not-sent") == 0
    assert tally.sent >= SWAPS * 10
    by_client = Counter(o.client for o in tally.snapshot())
    assert set(by_client) == {"fresh-0", "fresh-1", "keepalive-0", "keepalive-1"}, by_client
    assert metrics["podgraft_certificate_reload_errors_total"] == 0
    assert metrics["podgraft_certificate_expiry_timestamp_seconds"] == not_after(cert)


# --- SIGTERM under load -----------------------------------------------------------------------------

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
            status, detail = wait_for(
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
            while time.monotonic() < sigterm_at + DRAIN - 0.8:
                answer = _readyz_or_none(server)
                assert answer is not None, "the listener closed before the drain window was over"
                probes.append(answer[0])
                time.sleep(0.1)

            # A request still on the wire when the listener closes: headers and half the body now,
            # the rest once new connections are refused. Graceful shutdown must complete it.
            body = padded_review(64 * 1024, uid="in-flight")
            with tls_socket(server) as inflight:
                inflight.sendall(request_head(content_length=len(body)) + body[: len(body) // 2])
                refused_after = within(DRAIN + 2.0, lambda: port_refuses(server.port))
                assert refused_after is not None, "the listener never closed"
                listener_closed_at = time.monotonic()
                inflight.sendall(body[len(body) // 2 :])
                late = read_response(inflight)

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
        outcome=tally.summary(),
    )
    assert tally.failures == [], tally.failures[:5]
    assert set(probes) == {503}
    assert late.status == 200, late.body[:200]
    assert late.json()["response"]["uid"] == "in-flight"
    assert late.headers.get("connection") == "close"

    # Served through the whole drain window, by every kind of client, and asked them to go away.
    assert listener_closed_at - sigterm_at >= DRAIN
    assert {o.client.split("-")[0] for o in during_drain if o.kind == "ok"} == {"fresh", "keepalive"}
    assert all(o.connection == "close" for o in during_drain if o.kind == "ok"), Counter(
        o.connection for o in during_drain
    )
    # uvicorn re-raises the captured SIGTERM once shut down: the process ends by that signal.
    assert returncode == -signal.SIGTERM
    assert exited_at - sigterm_at < DRAIN + GRACE + 2
    log = server.log_text()
    assert "draining before shutdown" in log
    assert "timeout graceful shutdown exceeded" not in log
