"""/healthz, /readyz and /metrics of the running server."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest

from .conftest import Metrics, Mutate, Ready
from .support import Server, load_pod, peer_certificate, pod, review

pytestmark = pytest.mark.timeout(60)

REQUESTS = "podgraft_admission_requests_total"
LATENCY = "podgraft_admission_duration_seconds"


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_policies_and_certificate(
    ready: Ready, server: Server, tls_context: ssl.SSLContext
) -> None:
    status, detail = ready()
    assert status == 200
    expires_in = detail.pop("certificateExpiresInSeconds")
    assert detail == {
        "ready": True,
        "policies": 5,
        "policiesSynced": True,
        "policyErrors": {},
        "draining": False,
        "certificateError": None,
    }
    not_after = peer_certificate(server.port, tls_context).not_valid_after_utc.timestamp()
    assert abs(expires_in - (not_after - time.time())) < 60


def test_metrics_count_requests_by_outcome_latency_and_injections(
    mutate: Mutate, metrics: Metrics, client: httpx.Client
) -> None:
    before = metrics()
    mutate(review(load_pod()))  # patched: wait-for-db, mesh-proxy, log-shipper
    mutate(review(pod(annotations={"podgraft.io/inject": "false"})))  # skipped: opt-out
    mutate(review(pod(), operation="DELETE", old_object=pod()))  # ignored
    mutate(review(pod(annotations={"podgraft.io/inject": "nope"})))  # allowed, with a warning
    clash = pod(
        annotations={"podgraft.io/inject": "mesh-proxy"},
        containers=[{"name": "app", "image": "nginx", "ports": [{"containerPort": 15000}]}],
    )
    mutate(review(clash))  # denied
    client.post("/mutate", content=b"{", headers={"content-type": "application/json"})  # bad_request
    after = metrics()

    for outcome in ("patched", "skipped", "ignored", "allowed", "denied", "bad_request"):
        assert delta(before, after, f'{REQUESTS}{{outcome="{outcome}"}}') == 1, outcome
    for policy in ("wait-for-db", "mesh-proxy", "log-shipper"):
        assert delta(before, after, f'podgraft_injections_total{{policy="{policy}"}}') == 1, policy
    assert delta(before, after, 'podgraft_skips_total{reason="opt-out"}') == 1
    assert delta(before, after, "podgraft_admission_warnings_total") == 1
    assert delta(before, after, f"{LATENCY}_count") == 6
    assert delta(before, after, f'{LATENCY}_bucket{{le="+Inf"}}') == 6
    buckets = [key for key in after if key.startswith(f"{LATENCY}_bucket")]
    assert len(buckets) >= 5
    assert after[f"{LATENCY}_sum"] > before.get(f"{LATENCY}_sum", 0.0)
    assert delta(before, after, "podgraft_internal_errors_total") == 0


def test_metrics_expose_types_and_the_certificate_expiry(
    client: httpx.Client, server: Server, tls_context: ssl.SSLContext
) -> None:
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        f"# TYPE {REQUESTS} counter",
        f"# TYPE {LATENCY} histogram",
        "# TYPE podgraft_injections_total counter",
        "# TYPE podgraft_skips_total counter",
        "# TYPE podgraft_policy_reloads_total counter",
        "# TYPE podgraft_policy_errors_total counter",
        "# TYPE podgraft_certificate_expiry_timestamp_seconds gauge",
    ):
        assert line in text, line
    not_after = peer_certificate(server.port, tls_context).not_valid_after_utc.timestamp()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples["podgraft_certificate_expiry_timestamp_seconds"]) == pytest.approx(not_after)
    assert float(samples["podgraft_policies_loaded"]) == 5
    assert float(samples["podgraft_policy_invalid_sources"]) == 0
