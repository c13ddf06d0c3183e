"""Overload against a real `podgraft serve` process: with every slot held, requests get a fast 503
(Podgraft's AdmissionReview-shaped one, or uvicorn's connection backstop); a 10x burst of big bodies
leaves the server healthy; idle keep-alive connections are not load.

How the load is bounded, what counts as a failure, and the servers of their own: faults_support.py.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .faults_support import (
    OVERLOADED,
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
from .support import Server, client_context


def json_bytes(body: object) -> bytes:
    return json.dumps(body).encode()


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
