"""Faults of certificates against real `podgraft serve` processes: serving certificates swapped under
sustained load, broken pairs (key mismatch, garbage PEM) that keep the old one, and a certificate
expiring inside the margin, which fails readiness.

How the load is bounded, what counts as a failure, and the servers of their own: faults_support.py.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from .certs_support import issue_serving, not_after, serial_of
from .faults_support import Load, podgraft, readyz, report, scrape, within
from .support import Server, client_context, peer_certificate, wait_for

ROTATION_DEADLINE = 5.0  # new handshakes see a rotated certificate within this many seconds


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
