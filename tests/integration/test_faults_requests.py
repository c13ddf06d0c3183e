"""Huge, truncated and trickled requests against a real `podgraft serve` process (one server for the
module, with a 2 s request timeout): bodies around the 3 MiB limit, a 413 before the body is sent, a
body held open (408) or abandoned, slowloris headers, and a connection that never starts TLS.

How the load is bounded, what counts as a failure, and the servers of their own: faults_support.py.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from .faults_support import (
    Load,
    injecting_review,
    padded_review,
    podgraft,
    read_response,
    readyz,
    report,
    request_head,
    scrape,
    tls_socket,
)
from .support import Server, client_context, wait_for

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


@pytest.mark.timeout(30)
def test_a_connection_that_never_starts_tls_is_closed_after_the_timeout(strict: Server) -> None:
    """Without a handshake timeout asyncio would hold it for 60 s, whatever the request timeout says."""
    with socket.create_connection(("127.0.0.1", strict.port), timeout=20) as raw:
        started = time.monotonic()
        assert raw.recv(16) == b""  # the server closes it: end of stream
        waited = time.monotonic() - started
    assert CLIENT_TIMEOUT - 0.5 <= waited < CLIENT_TIMEOUT + 5, waited
