"""The HTTP layer: `/mutate`, `/validate-policies`, `/healthz`, `/readyz`, `/metrics`. Thin and strict.

It reads the body (bounded in size and time), hands it to `admission`, and writes the answer. It
never answers 500: a bad request is a 4xx with an AdmissionReview-shaped body, overload is a fast
503, and an unexpected exception is logged with its traceback and answered as an AdmissionResponse
(by default the pod is admitted unmodified with a warning, so a Podgraft bug never blocks pods;
`PODGRAFT_INTERNAL_ERROR=deny` refuses instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app import logs
from app.admission.cache import DecisionCache
from app.admission.decide import Verdict
from app.admission.engine import engine_config
from app.admission.policies import PolicyCheck, Validation, validate_policy_configmap
from app.admission.responses import allowed, bad_review_body, errored, review
from app.admission.review import V1, AdmissionRequest, BadReview, parse_review
from app.audit.census import Census
from app.engine.config import EngineConfig
from app.metrics import CensusCollector, Metrics
from app.retry import Backoff
from app.settings import Settings
from app.sources import NamespaceLookup, PolicySource
from app.sources.store import PolicyStore
from app.tls import CertificateReloader

log = logging.getLogger("podgraft.server")


class AdmissionObserver(Protocol):
    """Told of every decided admission request (cluster mode's Events on the workload,
    `app.cluster.reporter`). `observe` runs on the admission path: it must return at once, never
    block and never raise; `run` is its background task, started and cancelled with the app."""

    def observe(self, request: AdmissionRequest, verdict: Verdict) -> None: ...

    async def run(self) -> None: ...


@dataclass
class Runtime:
    """Everything a request handler needs; built once per app."""

    settings: Settings
    store: PolicyStore
    engine: EngineConfig
    metrics: Metrics
    namespaces: NamespaceLookup | None = None
    certs: CertificateReloader | None = None
    events: AdmissionObserver | None = None
    inflight: int = 0
    draining: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cache: DecisionCache = field(default_factory=DecisionCache)

    def start_draining(self) -> None:
        """Shutting down: `/readyz` fails and responses ask clients to close their connections."""
        self.draining = True


def _json(body: Mapping[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


Reply = tuple[int, bytes]  # HTTP status, JSON body


def _bad(error: BadReview) -> Reply:
    return error.status, orjson.dumps(bad_review_body(error))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(scope: Scope, receive: Receive, limit: int, timeout: float) -> bytes:
    """The body, at most `limit` bytes (413 past it) and within `timeout` seconds (408 past it)."""
    declared = _header(scope, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadReview(f"invalid Content-Length {declared[:20]!r}")
        if int(declared) > limit:
            raise BadReview(f"body of {declared} bytes is over the {limit}-byte limit", status=413)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":  # a bad request, not a Podgraft bug
                    raise BadReview(f"client disconnected after {size} bytes of the body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BadReview(f"body is over the {limit}-byte limit", status=413)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BadReview(f"body not received within {timeout:g}s", status=408) from None
    return b"".join(chunks)


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class Handler:
    """`/mutate` as a plain ASGI app (no framework per-request machinery on the hot path): transport
    only. The decision is `app.admission.decide`."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.rt
        if rt.inflight >= rt.settings.max_concurrency:
            rt.metrics.overload.inc()
            status, body = _bad(BadReview("podgraft is overloaded; retry", status=503))
        else:
            rt.inflight += 1
            started = time.perf_counter()
            try:
                status, body = await self._handle(scope, receive)
            finally:
                rt.inflight -= 1
                rt.metrics.latency.observe(time.perf_counter() - started)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if rt.draining:  # shutting down: ask the client to move to another replica
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive) -> Reply:
        rt = self.rt
        parsed: AdmissionRequest | None = None
        try:
            content_type = _header(scope, b"content-type")
            if not _is_json(content_type or ""):
                raise BadReview(
                    f"Content-Type must be application/json, got {(content_type or '(none)')[:60]!r}"
                )
            body = await _read_body(
                scope, receive, rt.settings.max_body_bytes, rt.settings.request_timeout_seconds
            )
            parsed = parse_review(body)
            hits = rt.cache.hits
            decision = rt.cache.decide(
                parsed,
                policies=rt.store.current(),
                config=rt.engine,
                namespace_labels=self._namespace_labels(parsed),
            )
            if rt.cache.hits > hits:
                rt.metrics.cache_hits.inc()
            self._record(parsed, decision)
            if rt.events is not None:
                rt.events.observe(parsed, decision)
            return 200, orjson.dumps(review(parsed.api_version, decision.response))
        except BadReview as exc:
            rt.metrics.by_outcome.inc("bad_request")
            log.warning("bad admission request", extra={"status": exc.status, "error": exc.message})
            return _bad(exc)
        except Exception:
            return self._internal_error(parsed)

    def _namespace_labels(self, request: AdmissionRequest) -> Mapping[str, str] | None:
        if self.rt.namespaces is None or not request.namespace:
            return None
        return self.rt.namespaces.labels(request.namespace)

    def _internal_error(self, parsed: AdmissionRequest | None) -> Reply:
        rt = self.rt
        rt.metrics.internal_errors.inc()
        rt.metrics.by_outcome.inc("error")
        uid = parsed.uid if parsed else ""
        log.exception("internal error while handling an admission request", extra={"uid": uid})
        message = f"podgraft: internal error (uid {uid}); see the webhook logs"
        if rt.settings.internal_error == "deny":
            response = errored(uid, 500, message)
        else:
            response = allowed(uid, warnings=[message + "; pod admitted without injection"])
        return 200, orjson.dumps(review(parsed.api_version if parsed else V1, response))

    def _record(self, request: AdmissionRequest, decision: Verdict) -> None:
        metrics = self.rt.metrics
        metrics.by_outcome.inc(decision.outcome)
        result = decision.result
        extra: dict[str, Any] = {
            "uid": request.uid,
            "namespace": request.namespace,
            "pod": request.pod_label(),
            "operation": request.operation,
            "outcome": decision.outcome,
        }
        if result is not None:
            for name in result.injected:
                metrics.by_policy.inc(name)
            if result.skip_code:
                metrics.by_reason.inc(result.skip_code)
                extra["skip"] = result.skip_reason
            for item in result.decisions:
                if not item.applied:
                    metrics.by_reason.inc("policy-not-applied")
            if result.warnings:
                metrics.warnings.inc(len(result.warnings))
                extra["warnings"] = list(result.warnings)
            extra["injected"] = list(result.injected)
            if result.denial:
                extra["denial"] = result.denial
        logs.event(log, "admission", extra)


async def _review_body(scope: Scope, receive: Receive, settings: Settings) -> bytes:
    """The body of a webhook request: JSON, bounded in size and time. Raises `BadReview`."""
    content_type = _header(scope, b"content-type")
    if not _is_json(content_type or ""):
        raise BadReview(f"Content-Type must be application/json, got {(content_type or '(none)')[:60]!r}")
    return await _read_body(scope, receive, settings.max_body_bytes, settings.request_timeout_seconds)


async def _reply(send: Send, status: int, body: bytes, *, close: bool) -> None:
    """Write a JSON answer; `close` (draining) asks the client to move to another replica."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


MAX_VALIDATIONS = 8  # policy ConfigMap reviews in flight per process; more get a fast 503


class PolicyValidation:
    """`/validate-policies`, the validating webhook on policy ConfigMaps, as a plain ASGI app:
    transport only, the decision is `app.admission.policies`.

    A check costs what loading the policy costs (YAML, schemas, templates: about 7 ms for one
    policy, 3 s for 256), so it runs in a worker thread, one at a time, and at most
    `MAX_VALIDATIONS` wait: the event loop keeps answering `/mutate`, and a burst of ConfigMap
    writes (a GitOps sync) can never take `/mutate`'s in-flight slots. Past that bound the answer
    is a fast 503 (under failurePolicy Ignore the write goes through and the loader judges it). An
    unexpected exception admits the ConfigMap with a warning: a Podgraft bug never blocks a
    ConfigMap write."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.check = PolicyCheck.from_settings(runtime.settings)
        self.inflight = 0
        self.one_at_a_time = asyncio.Semaphore(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.inflight >= MAX_VALIDATIONS:
            self.rt.metrics.overload.inc()
            status, body = _bad(BadReview("podgraft is checking other policy ConfigMaps; retry", status=503))
        else:
            self.inflight += 1
            try:
                status, body = await self._handle(scope, receive)
            finally:
                self.inflight -= 1
        await _reply(send, status, body, close=self.rt.draining)

    async def _handle(self, scope: Scope, receive: Receive) -> Reply:
        rt = self.rt
        parsed: AdmissionRequest | None = None
        try:
            parsed = parse_review(await _review_body(scope, receive, rt.settings))
            async with self.one_at_a_time:
                validation = await asyncio.to_thread(
                    validate_policy_configmap, parsed, live=rt.store.current(), check=self.check
                )
            self._record(parsed, validation)
            return 200, orjson.dumps(review(parsed.api_version, validation.response))
        except BadReview as exc:
            rt.metrics.policy_validations.labels("bad_request").inc()
            log.warning("bad policy validation request", extra={"status": exc.status, "error": exc.message})
            return _bad(exc)
        except Exception:
            rt.metrics.internal_errors.inc()
            rt.metrics.policy_validations.labels("error").inc()
            uid = parsed.uid if parsed else ""
            log.exception("internal error while validating a policy ConfigMap", extra={"uid": uid})
            message = (
                f"podgraft: internal error (uid {uid}) while checking this policy ConfigMap; not checked"
            )
            response = allowed(uid, warnings=[message])
            return 200, orjson.dumps(review(parsed.api_version if parsed else V1, response))

    def _record(self, request: AdmissionRequest, validation: Validation) -> None:
        self.rt.metrics.policy_validations.labels(validation.outcome).inc()
        extra = {
            "uid": request.uid,
            "configmap": validation.configmap,
            "operation": request.operation,
            "outcome": validation.outcome,
            "why": validation.why,
            "errors": validation.errors,
            "warnings": validation.warnings,
            "dry_run": request.dry_run,
        }
        log.info("policy validation", extra=extra)


def readiness(rt: Runtime) -> tuple[bool, dict[str, Any]]:
    """Ready when policies are synced, a certificate is loaded and not about to expire, and not draining."""
    detail: dict[str, Any] = {
        "policies": len(rt.store.current()),
        "policiesSynced": rt.store.synced,
        "policyErrors": rt.store.errors(),
        "draining": rt.draining,
    }
    ok = rt.store.synced and not rt.draining
    if rt.certs is not None:
        state = rt.certs.state
        detail["certificateError"] = rt.certs.last_error
        if state is None:
            ok = False
        else:
            remaining = state.expires_at - time.time()
            detail["certificateExpiresInSeconds"] = int(remaining)
            if remaining < rt.settings.cert_expiry_margin_seconds:
                ok = False
                detail["certificateExpiring"] = True
    return ok, detail


async def _certificate_loop(rt: Runtime) -> None:
    assert rt.certs is not None
    while True:
        await asyncio.sleep(rt.settings.cert_reload_interval_seconds)
        failures = rt.certs.failures
        try:
            rt.certs.check()
        except Exception:  # never let the reload loop die
            log.exception("certificate reload check failed")
        if rt.certs.failures > failures:
            rt.metrics.cert_reload_errors.inc()
        if rt.certs.state is not None:
            rt.metrics.cert_expiry.set(rt.certs.state.expires_at)


async def _supervised(what: str, run: Callable[[], Awaitable[None]]) -> None:
    """`run()` until it returns; restarted with backoff when it fails (a policy source, the Events)."""
    backoff = Backoff(initial=2.0, cap=30.0)
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = backoff.next()
            log.exception(f"{what} failed; restarting it", extra={"retry_in_seconds": round(delay, 2)})
            await asyncio.sleep(delay)


def create_app(
    settings: Settings,
    *,
    store: PolicyStore | None = None,
    sources: Sequence[PolicySource] = (),
    namespaces: NamespaceLookup | None = None,
    census: Census | None = None,
    certs: CertificateReloader | None = None,
    metrics: Metrics | None = None,
    events: AdmissionObserver | None = None,
    on_start: Callable[[Runtime], None] | None = None,
) -> FastAPI:
    """Build the app. Tests inject settings, a pre-filled store, sources, a certificate reloader, the
    metrics and an admission observer (which counts into these metrics)."""
    if metrics is None:
        metrics = Metrics()
    if store is None:
        store = PolicyStore(
            max_bytes=settings.max_policy_bytes,
            kubernetes_version=settings.kubernetes_version,
            on_change=metrics.policy_set_changed,
        )
    rt = Runtime(
        settings=settings,
        store=store,
        engine=engine_config(settings),
        metrics=metrics,
        namespaces=namespaces,
        certs=certs,
        events=events,
        cache=DecisionCache(settings.decision_cache_size),
    )
    if certs is not None and certs.state is not None:
        metrics.cert_expiry.set(certs.state.expires_at)
    if census is not None:
        metrics.registry.register(CensusCollector(census))
    metrics.policies.set(len(store.current()))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        rt.tasks = [
            asyncio.create_task(_supervised("policy source", functools.partial(s.run, rt.store)))
            for s in sources
        ]
        if events is not None:
            rt.tasks.append(asyncio.create_task(_supervised("Events on the workload", events.run)))
        if certs is not None:
            rt.tasks.append(asyncio.create_task(_certificate_loop(rt)))
        if on_start is not None:
            on_start(rt)
        try:
            yield
        finally:
            for task in rt.tasks:
                task.cancel()
            await asyncio.gather(*rt.tasks, return_exceptions=True)

    app = FastAPI(
        title="Podgraft", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.runtime = rt
    # The webhooks: POST only, served straight by `asgi_entry`.
    app.state.webhooks = {"/mutate": Handler(rt), "/validate-policies": PolicyValidation(rt)}
    for path, handler in app.state.webhooks.items():
        app.router.routes.append(Route(path, handler, methods=["POST"]))

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        ok, detail = readiness(rt)
        return _json({"ready": ok, **detail}, 200 if ok else 503)

    @app.get("/audit")
    async def audit() -> Response:
        if census is None:
            return _json(
                {"error": "the pod audit is off: set PODGRAFT_AUDIT_ENABLED=true (chart: audit.enabled)"}, 404
            )
        return _json(census.snapshot())

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def settle_heap() -> None:
    """Before serving: collect, then freeze what start-up built (modules, the app, pydantic and
    Jinja2 internals: most of the heap) out of the garbage collector's sight, so that an oldest-
    generation collection walks only what serving keeps, not the whole process (README, "The tail")."""
    gc.collect()
    gc.freeze()


def asgi_entry(app: FastAPI) -> ASGIApp:
    """What uvicorn serves: `POST` to a webhook (`/mutate`) straight to its handler (the framework's
    middleware and routing cost a sixth of a request), everything else (health, metrics, lifespan) to
    FastAPI."""
    webhooks: Mapping[str, ASGIApp] = app.state.webhooks

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        handler = webhooks.get(scope["path"]) if scope["type"] == "http" else None
        if handler is not None and scope["method"] == "POST":
            await handler(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch
