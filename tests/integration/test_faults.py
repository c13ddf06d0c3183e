"""Faults and load against real `podgraft serve` processes: certificate rotation and SIGTERM under
sustained load, an overload burst, huge, truncated and trickled requests, broken and expiring certificates.

Each test starts its own server with the settings it needs and prints what it measured (run with `-s`).
Load goes to 127.0.0.1 only; every loop is bounded in count and time; no test asserts a latency, only
generous functional deadlines.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import ssl
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
    RawResponse,
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


def json_bytes(body: object) -> bytes:
    return json.dumps(body).encode()


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


# --- overload -----------------------------------------------------------------------------------------

LIMIT = 2  # PODGRAFT_MAX_CONCURRENCY (uvicorn's own connection limit is 4x: 8)
BURST = 10 * LIMIT
SLOW_TIMEOUT = 4.0  # PODGRAFT_REQUEST_TIMEOUT_SECONDS: how long a held body may keep its slot
JSON = {"content-type": "application/json"}


def _classify(response: httpx.Response, uid: str) -> str:
    """200 | podgraft-503 (AdmissionReview-shaped) | uvicorn-503 (its connection backstop) | other."""
    if response.status_code == 200 and response.json()["response"]["uid"] == uid:
        return "200"
    if response.status_code == 503 and response.headers.get("content-type") == "application/json":
        status = response.json()["response"]["status"]
        if status == {"code": 503, "reason": "Error", "message": OVERLOADED}:
            return "podgraft-503"
    if response.status_code == 503 and response.text == "Service Unavailable":
        return "uvicorn-503"
    return f"other: {response.status_code} {response.text[:80]}"


def _burst(server: Server, bodies: list[tuple[str, bytes]]) -> list[str]:
    """Post every body at once, each on a fresh connection; the class of every answer, or the error."""
    context = client_context(server.ca_file)
    barrier = threading.Barrier(len(bodies))

    def post(uid: str, body: bytes) -> str:
        with httpx.Client(verify=context, timeout=20.0) as client:
            barrier.wait(timeout=10)
            try:
                return _classify(client.post(f"{server.base_url}/mutate", content=body, headers=JSON), uid)
            except httpx.HTTPError as exc:
                return f"error: {exc!r}"

    results: list[str] = [""] * len(bodies)

    def run(index: int) -> None:
        results[index] = post(*bodies[index])

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a request hung"
    return results


@pytest.mark.timeout(60)
def test_overload_gets_fast_503s_and_the_server_recovers(tmp_path: Path) -> None:
    env = {"PODGRAFT_MAX_CONCURRENCY": str(LIMIT), "PODGRAFT_REQUEST_TIMEOUT_SECONDS": str(SLOW_TIMEOUT)}
    with podgraft(tmp_path, **env) as server:
        before = scrape(server)["podgraft_overload_rejections_total"]

        # Deterministic: LIMIT clients send their headers and half a body, then hold - each occupies
        # a slot until its body times out. Everything else meanwhile gets the fast 503.
        body = padded_review(256 * 1024, uid="held")
        with contextlib.ExitStack() as stack:
            holders = [stack.enter_context(tls_socket(server)) for _ in range(LIMIT)]
            for holder in holders:
                holder.sendall(request_head(content_length=len(body)) + body[: len(body) // 2])
            held_at = time.monotonic()
            probe = _burst(server, [("probe", json_bytes(injecting_review("probe")))])
            while probe != ["podgraft-503"]:  # until both holders' handlers are running
                assert time.monotonic() < held_at + SLOW_TIMEOUT / 2, probe
                time.sleep(0.05)
                probe = _burst(server, [("probe", json_bytes(injecting_review("probe")))])
            # 2 held + 3 = 5 connections: under uvicorn's own limit of 8, so every answer is Podgraft's.
            small = [(f"small-{i}", json_bytes(injecting_review(f"small-{i}"))) for i in range(3)]
            while_held = _burst(server, small)
            answered_while_held = time.monotonic()
            held = [read_response(holder) for holder in holders]
        metrics = scrape(server)
        rejected_while_held = metrics["podgraft_overload_rejections_total"] - before
        assert answered_while_held < held_at + SLOW_TIMEOUT, "the 503s did not wait for a slot"
        assert while_held == ["podgraft-503"] * len(small)
        assert [r.status for r in held] == [408] * LIMIT
        assert (
            held[0].json()["response"]["status"]["message"] == f"body not received within {SLOW_TIMEOUT:g}s"
        )

        # The 10x burst: BURST clients post bodies near the 3 MiB limit at the same moment.
        big = padded_review(int(2.5 * 1024 * 1024), uid="burst")
        burst = _burst(server, [("burst", big)] * BURST)
        after = scrape(server)
        healthy = _burst(server, [("after", json_bytes(injecting_review("after")))])
        status, _ = readyz(server)
        assert server.process is not None
        alive = server.process.poll() is None

    classes = Counter(burst)
    report(
        "overload",
        limit=LIMIT,
        held_slots=LIMIT,
        rejected_while_held=rejected_while_held,
        burst=BURST,
        burst_outcomes=dict(classes),
        podgraft_503_metric_delta=after["podgraft_overload_rejections_total"]
        - metrics["podgraft_overload_rejections_total"],
    )
    assert rejected_while_held >= len(small) + 1
    # Every answer is a 200 or a fast 503: Podgraft's (AdmissionReview-shaped, counted) or uvicorn's
    # connection backstop (plain text, not counted; when all handshakes land before the first request
    # is parsed, every request of the burst may get it - see the xfail test below).
    assert set(classes) <= {"200", "podgraft-503", "uvicorn-503"}, classes
    assert (
        after["podgraft_overload_rejections_total"] - metrics["podgraft_overload_rejections_total"]
        == (classes["podgraft-503"])
    )
    assert after["podgraft_internal_errors_total"] == 0
    assert healthy == ["200"]
    assert status == 200
    assert alive


@pytest.mark.timeout(30)
def test_idle_connections_are_not_load(tmp_path: Path) -> None:
    """The apiserver keeps idle keep-alive connections to a webhook; they must not refuse requests."""
    with podgraft(tmp_path, PODGRAFT_MAX_CONCURRENCY=str(LIMIT)) as server, contextlib.ExitStack() as stack:
        for _ in range(4 * LIMIT):
            stack.enter_context(tls_socket(server))
        time.sleep(0.3)  # the server has finished every handshake
        answer = _burst(server, [("idle", json_bytes(injecting_review("idle")))])
        assert answer == ["200"]


# --- huge, truncated and trickled requests ----------------------------------------------------------

BODY_LIMIT = 3 * 1024 * 1024  # the default PODGRAFT_MAX_BODY_BYTES
CLIENT_TIMEOUT = 2.0  # PODGRAFT_REQUEST_TIMEOUT_SECONDS of the server below


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Default body limit, a 2 s request timeout (bodies and headers)."""
    env = {"PODGRAFT_REQUEST_TIMEOUT_SECONDS": str(CLIENT_TIMEOUT)}
    with podgraft(tmp_path_factory.mktemp("podgraft-strict"), **env) as server:
        yield server


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("size", "status"),
    [
        pytest.param(BODY_LIMIT - 1, 200, id="just-under-3MiB"),
        pytest.param(BODY_LIMIT, 200, id="exactly-3MiB"),
        pytest.param(BODY_LIMIT + 1, 413, id="just-over-3MiB"),
    ],
)
def test_body_around_the_3_mib_limit(strict: Server, size: int, status: int) -> None:
    body = padded_review(size, uid="big")
    with tls_socket(strict) as sock:
        sock.sendall(request_head(content_length=size) + body)
        response = read_response(sock)
    assert response.status == status, response.body[:200]
    answer = response.json()["response"]
    if status == 200:
        assert answer["uid"] == "big"
        assert "patch" in answer
    else:
        assert answer["status"]["message"] == f"body of {size} bytes is over the {BODY_LIMIT}-byte limit"


@pytest.mark.timeout(30)
def test_oversized_body_is_refused_before_it_is_sent(strict: Server) -> None:
    """The 413 comes from the declared length alone: the server neither waits for nor reads the body."""
    with tls_socket(strict, timeout=CLIENT_TIMEOUT / 2) as sock:
        sock.sendall(request_head(content_length=BODY_LIMIT + 1))
        response = read_response(sock)
    assert response.status == 413
    assert response.json()["response"]["status"]["code"] == 413


@pytest.mark.timeout(30)
def test_truncated_body_held_open_gets_a_408(strict: Server) -> None:
    body = padded_review(100_000, uid="truncated")
    errors = scrape(strict)["podgraft_internal_errors_total"]
    with tls_socket(strict, timeout=CLIENT_TIMEOUT + 5) as sock:
        sock.sendall(request_head(content_length=len(body)) + body[:50_000])
        response = read_response(sock)
    assert response.status == 408
    assert response.json()["response"]["status"]["message"] == f"body not received within {CLIENT_TIMEOUT:g}s"
    assert scrape(strict)["podgraft_internal_errors_total"] == errors
    assert readyz(strict)[0] == 200


@pytest.mark.timeout(30)
@pytest.mark.parametrize("tries", [5])
def test_truncated_body_then_close_leaves_the_server_healthy(strict: Server, tries: int) -> None:
    """Content-Length larger than what is sent, then the client goes away: nothing to answer, no error."""
    body = padded_review(100_000, uid="gone")
    before = scrape(strict)
    for _ in range(tries):
        with tls_socket(strict) as sock:
            sock.sendall(request_head(content_length=len(body)) + body[:50_000])
            time.sleep(0.1)  # the handler is reading the body when the client disappears
    after = wait_for(
        lambda: scrape(strict),
        until=lambda m: m.get(BAD_REQUESTS, 0) >= before.get(BAD_REQUESTS, 0) + tries,
        what="every abandoned request accounted for",
    )
    report(
        "truncated body, client gone",
        tries=tries,
        bad_requests=after[BAD_REQUESTS] - before.get(BAD_REQUESTS, 0),
        internal_errors=after["podgraft_internal_errors_total"] - before["podgraft_internal_errors_total"],
    )
    assert after["podgraft_internal_errors_total"] == before["podgraft_internal_errors_total"]
    assert after.get(ERRORS, 0) == before.get(ERRORS, 0)
    gone = [
        r for r in strict.log_records() if str(r.get("error", "")).startswith("client disconnected after")
    ]
    assert len(gone) >= tries
    assert gone[-1]["level"] == "warning"
    assert readyz(strict)[0] == 200
    assert "Traceback" not in strict.log_text()
    with httpx.Client(verify=client_context(strict.ca_file), timeout=5.0) as client:
        response = client.post(f"{strict.base_url}/mutate", json=injecting_review("after"))
    assert response.status_code == 200


BAD_REQUESTS = 'podgraft_admission_requests_total{outcome="bad_request"}'
ERRORS = 'podgraft_admission_requests_total{outcome="error"}'
SLOWLORIS = 3  # clients trickling their headers at the same time


def _trickle(server: Server, results: list[tuple[int, float | None]]) -> None:
    """Send the request headers one byte per second; record bytes sent and when the server hung up."""
    head = request_head(content_length=2)
    with tls_socket(server) as sock:
        connected = time.monotonic()
        sock.settimeout(1.0)
        for sent in range(len(head)):
            try:
                sock.sendall(head[sent : sent + 1])
                if sock.recv(1) == b"":
                    results.append((sent + 1, time.monotonic() - connected))
                    return
            except TimeoutError:
                continue  # nothing from the server this second: go on trickling
            except (ConnectionError, ssl.SSLError):
                results.append((sent + 1, time.monotonic() - connected))
                return
            if time.monotonic() - connected > CLIENT_TIMEOUT + 5:
                break
        results.append((len(head), None))


@pytest.mark.timeout(30)
def test_slowloris_clients_are_cut_off_while_others_are_served(strict: Server) -> None:
    results: list[tuple[int, float | None]] = []
    tricklers = [
        threading.Thread(target=_trickle, args=(strict, results), daemon=True) for _ in range(SLOWLORIS)
    ]
    with Load(strict, fresh=1, keepalive=1, pause=0.01) as load:
        for thread in tricklers:
            thread.start()
        for thread in tricklers:
            thread.join(timeout=CLIENT_TIMEOUT + 10)
        tally = load.stop()
    report("slowloris", clients=SLOWLORIS, bytes_and_seconds_to_cut=results, others=tally.summary())
    assert len(results) == SLOWLORIS
    head_size = len(request_head(content_length=2))
    for sent, cut_after in results:
        assert cut_after is not None, "a slowloris client was never disconnected"
        assert sent < head_size
        assert CLIENT_TIMEOUT - 0.2 <= cut_after <= CLIENT_TIMEOUT + 3
    assert tally.failures == []
    assert tally.count("ok") >= 20, "others were served while the slow clients were connected"
    assert "closing a connection whose request headers did not arrive in time" in strict.log_text()


# --- broken and expiring certificates ---------------------------------------------------------------

MARGIN = 2 * 24 * 3600  # PODGRAFT_CERT_EXPIRY_MARGIN_SECONDS: /readyz fails 2 days before expiry
REJECTED = "new certificate rejected, still serving the previous one"
GARBAGE_PEM = b"-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"


def _key_mismatch(server: Server) -> tuple[bytes, bytes]:
    cert, _ = issue_serving(server)
    _, other_key = issue_serving(server)
    return cert, other_key


def _garbage(server: Server) -> tuple[bytes, bytes]:
    return GARBAGE_PEM, server.secret.current()[1]


@pytest.mark.timeout(60)
def test_broken_certificates_keep_the_old_one_and_expiry_fails_readiness(tmp_path: Path) -> None:
    with podgraft(tmp_path, PODGRAFT_CERT_EXPIRY_MARGIN_SECONDS=str(MARGIN)) as server:
        live = served_serial(server)
        rejections: dict[str, float] = {}
        with Load(server, fresh=1, keepalive=1, pause=0.01) as load:
            for name, broken in [("key-mismatch", _key_mismatch), ("garbage-pem", _garbage)]:
                errors = scrape(server)["podgraft_certificate_reload_errors_total"]
                server.secret.publish(*broken(server))
                status, detail = wait_for(
                    lambda: readyz(server),
                    until=lambda r: r[1]["certificateError"],
                    timeout=ROTATION_DEADLINE,
                    what=f"/readyz reporting the {name} certificate",
                )
                assert status == 200, "the old certificate is still good: still ready"
                assert detail["certificateError"].startswith(REJECTED), detail
                assert [served_serial(server) for _ in range(3)] == [live] * 3
                time.sleep(1.0)  # four more reload checks with the broken pair on disk
                rejections[name] = scrape(server)["podgraft_certificate_reload_errors_total"] - errors
                assert rejections[name] >= 1

            # A good certificate that expires inside the margin: served, but the pod is not ready.
            cert, key = issue_serving(server, days=1)
            server.secret.publish(cert, key)
            assert within(ROTATION_DEADLINE, serves(server, serial_of(cert))) is not None
            status, detail = wait_for(
                lambda: readyz(server), until=lambda r: r[0] == 503, what="/readyz 503 for the expiring cert"
            )
            metrics = scrape(server)
            answered = load.tally.count("ok")
            load.wait_for_requests(answered + 10)  # still answering with the expiring certificate
            tally = load.stop()

    report(
        "broken and expiring certificates",
        reload_errors_per_broken_pair=rejections,
        readyz_expiring=(status, detail.get("certificateExpiring")),
        outcome=tally.summary(),
    )
    assert detail["ready"] is False
    assert detail["certificateExpiring"] is True
    assert detail["certificateError"] is None
    assert 0 < detail["certificateExpiresInSeconds"] <= 24 * 3600
    assert metrics["podgraft_certificate_expiry_timestamp_seconds"] == not_after(cert)
    assert tally.failures == [], tally.failures[:5]
    assert tally.count("not-sent") == 0
    records = [r for r in server.log_records() if str(r.get("msg", "")).startswith(REJECTED)]
    assert len(records) >= 2
    assert {r["level"] for r in records} == {"error"}


@pytest.mark.timeout(30)
def test_a_connection_that_never_starts_tls_is_closed_after_the_timeout(strict: Server) -> None:
    """Without a handshake timeout asyncio would hold it for 60 s, whatever the request timeout says."""
    with socket.create_connection(("127.0.0.1", strict.port), timeout=20) as raw:
        started = time.monotonic()
        assert raw.recv(16) == b""  # the server closes it: end of stream
        waited = time.monotonic() - started
    assert CLIENT_TIMEOUT - 0.5 <= waited < CLIENT_TIMEOUT + 5, waited
