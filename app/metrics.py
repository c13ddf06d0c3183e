"""Podgraft's Prometheus metrics, on a registry of their own (several apps may live in one process).

The server counts requests, outcomes, injections, warnings and errors here; the policy store
reports every swap (`policy_set_changed`); the running audit's counts are read at scrape time
(`CensusCollector`). `/metrics` serves `registry`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.audit.census import Census
from app.audit.classify import STATES
from app.engine.policyset import PolicySet
from app.sources.store import ErrorTracker

disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ByLabel:
    """The children of a one-label counter, each bound once: `Counter.labels()` checks the value and
    takes a lock on every call, four times what the increment costs."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._children: dict[str, Counter] = {}

    def inc(self, value: str, amount: float = 1) -> None:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self.counter.labels(value)
        child.inc(amount)


class Metrics:
    """Prometheus metrics on a registry of their own (several apps may live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "podgraft_admission_requests_total", "Admission requests by outcome", ["outcome"], registry=r
        )
        self.latency = Histogram(
            "podgraft_admission_duration_seconds",
            "Time to answer /mutate",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.injections = Counter(
            "podgraft_injections_total", "Policies injected, by policy", ["policy"], registry=r
        )
        self.skips = Counter(
            "podgraft_skips_total", "Pods or policies skipped, by reason", ["reason"], registry=r
        )
        self.warnings = Counter(
            "podgraft_admission_warnings_total", "Warnings returned to clients", registry=r
        )
        self.reloads = Counter("podgraft_policy_reloads_total", "Policy set rebuilds", registry=r)
        self.policy_errors = Counter("podgraft_policy_errors_total", "Policy sources rejected", registry=r)
        self.invalid_sources = Gauge(
            "podgraft_policy_invalid_sources", "Sources currently rejected", registry=r
        )
        self.policies = Gauge("podgraft_policies_loaded", "Policies in force", registry=r)
        self.cert_expiry = Gauge(
            "podgraft_certificate_expiry_timestamp_seconds", "notAfter of the serving certificate", registry=r
        )
        self.cert_reload_errors = Counter(
            "podgraft_certificate_reload_errors_total",
            "Reload checks that found a broken certificate pair on disk (counts every check until fixed)",
            registry=r,
        )
        self.internal_errors = Counter("podgraft_internal_errors_total", "Unexpected exceptions", registry=r)
        self.overload = Counter("podgraft_overload_rejections_total", "Requests refused with 503", registry=r)
        self.cache_hits = Counter(
            "podgraft_decision_cache_hits_total", "Pod CREATEs answered from the decision cache", registry=r
        )
        self.events = Counter(
            "podgraft_events_total",
            "Pod outcomes told as Events on their workload (a series of N counts N), by reason",
            ["reason"],
            registry=r,
        )
        self.events_dropped = Counter(
            "podgraft_events_dropped_total",
            "Pod outcomes not told, by cause: queue_full, overflow, rate_limited, rejected, unavailable",
            ["cause"],
            registry=r,
        )
        self.policy_validations = Counter(
            "podgraft_policy_validations_total",
            "Reviews of policy ConfigMaps (/validate-policies), by outcome: allowed, warned, denied, "
            "ignored (not labelled, or not CREATE or UPDATE), bad_request, error",
            ["outcome"],
            registry=r,
        )

        self.by_outcome = ByLabel(self.requests)
        self.by_policy = ByLabel(self.injections)
        self.by_reason = ByLabel(self.skips)

        self._reported = ErrorTracker()

    def policy_set_changed(self, policies: PolicySet, errors: Mapping[str, str]) -> None:
        self.reloads.inc()
        fresh = self._reported.fresh(errors, errors)
        if fresh:
            self.policy_errors.inc(len(fresh))
        self.policies.set(len(policies))
        self.invalid_sources.set(len(errors))


class CensusCollector(Collector):
    """`podgraft_pods{policy,state}`: the running audit's counts, read at scrape time."""

    def __init__(self, census: Census) -> None:
        self.census = census

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "podgraft_pods",
            f"Audited pods by policy and state ({'|'.join(STATES)})",
            labels=["policy", "state"],
        )
        for (policy, state), count in sorted(self.census.counts().items()):
            gauge.add_metric([policy, state], count)
        yield gauge
