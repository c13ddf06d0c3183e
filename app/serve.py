"""`podgraft serve`: build the policy sources and the app, and run uvicorn over TLS."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import uvicorn

from app import logs
from app.audit.census import Census
from app.metrics import Metrics
from app.server import AdmissionObserver, Runtime, asgi_entry, create_app, settle_heap
from app.settings import Settings
from app.sources import NamespaceLookup, PolicySource
from app.sources.directory import DirectorySource
from app.tls import CertificateReloader
from app.uvicorn_ext import DrainingServer, guarded_protocol

log = logging.getLogger("podgraft")


@dataclass(frozen=True, slots=True)
class Wiring:
    """What the configured mode adds to the app."""

    sources: list[PolicySource]
    namespaces: NamespaceLookup | None = None
    census: Census | None = None  # the running audit (cluster mode, when enabled)
    events: AdmissionObserver | None = None  # Events on the workload (cluster mode, unless off)


def build_wiring(settings: Settings, metrics: Metrics) -> tuple[Wiring, Settings]:
    """Policy sources, namespace lookup, running audit and Events for the configured mode (cluster mode
    also asks the API server its version). Local mode emits no Events."""
    if settings.policy_source == "directory":
        return Wiring([DirectorySource(settings.policy_dir)]), settings
    from app.cluster.mode import cluster_mode

    mode = cluster_mode(settings, metrics)
    return Wiring(mode.sources, mode.namespaces, mode.census, mode.events), mode.settings


Wire = Callable[[Settings, Metrics], tuple[Wiring, Settings]]


def _config(settings: Settings, app: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http=guarded_protocol(settings.request_timeout_seconds),
        timeout_keep_alive=30,
        timeout_graceful_shutdown=max(1, int(settings.request_timeout_seconds)),
        # Open connections (idle keep-alive ones included): a cap against descriptor exhaustion, far
        # above the in-flight limit (`max_concurrency`), which the handler enforces with a fast 503.
        limit_concurrency=settings.max_connections,
        server_header=False,
        date_header=False,
    )


def _run_worker(settings: Settings, sockets: list[socket.socket] | None = None, *, wire: Wire) -> int:
    """One server process: certificates, policy sources, app, uvicorn."""
    try:
        certs = CertificateReloader(
            settings.tls_cert_file, settings.tls_key_file, client_ca=settings.tls_client_ca_file
        )
    except (ssl.SSLError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    metrics = Metrics()
    wiring, settings = wire(settings, metrics)
    app = create_app(
        settings,
        sources=wiring.sources,
        namespaces=wiring.namespaces,
        census=wiring.census,
        certs=certs,
        metrics=metrics,
        events=wiring.events,
    )
    config = _config(settings, asgi_entry(app))
    config.load()
    config.ssl = certs.context  # our context, so rotated certificates are picked up without a restart
    log.info(
        "podgraft listening",
        extra={
            "address": f"https://{settings.host}:{settings.port}",
            "policy_source": settings.policy_source,
            "pid": os.getpid(),
        },
    )
    runtime: Runtime = app.state.runtime
    settle_heap()
    DrainingServer(
        config,
        drain_seconds=settings.drain_seconds,
        handshake_timeout=settings.request_timeout_seconds,
        on_drain=runtime.start_draining,
    ).run(sockets=sockets)
    return 0


def serve(settings: Settings, *, wire: Wire = build_wiring) -> int:
    """Run `settings.workers` server processes sharing one listening socket (forked; Linux). `wire`
    builds what the mode adds (the benchmark gives its own)."""
    logs.configure(settings.log_level)
    if settings.workers == 1:
        return _run_worker(settings, wire=wire)
    listener = _config(settings, None).bind_socket()
    children: list[int] = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = _run_worker(settings, [listener], wire=wire)
            finally:
                os._exit(code)
        children.append(pid)
    listener.close()

    def forward(sig: int, _frame: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    worst = 0
    for child in children:
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        worst = worst or (0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)
    return worst
