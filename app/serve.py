"""`podgraft serve`: build the policy sources and the app, and run uvicorn over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import time
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app import logs
from app.policy.sources import DirectorySource, NamespaceLookup, PolicySource
from app.server import Runtime, asgi_entry, create_app
from app.settings import Settings
from app.tls import CertificateReloader

log = logging.getLogger("podgraft")


def build_sources(settings: Settings) -> tuple[list[PolicySource], NamespaceLookup | None, Settings]:
    """Policy sources and namespace lookup for the configured mode (cluster mode also asks the version)."""
    if settings.policy_source == "directory":
        return [DirectorySource(settings.policy_dir)], None, settings
    from app.cluster import cluster_sources

    return cluster_sources(settings)


class SlowClientGuard(HttpToolsProtocol):
    """httptools protocol that closes a connection whose request headers do not arrive in time.

    uvicorn times out idle keep-alive connections but not a client that trickles its headers
    (slowloris); this arms a timer when the connection opens and when each request starts, and
    disarms it once the headers are complete. Bodies are bounded by the handler's own timeout.
    """

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _close_after_first_request = False

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        log.warning(
            "closing a connection whose request headers did not arrive in time",
            extra={"client": self.client, "timeout_seconds": self.header_timeout},
        )
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self._close_after_first_request and self.cycle is not None:
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """Graceful shutdown. uvicorn closes a connection with no request in progress at once; one whose
        first request has not arrived yet keeps until the header timeout, is answered, then closed (as
        Go's `http.Server.Shutdown` treats new connections): its client may already have sent a POST
        that it will not retry, because a fresh connection gives no sign it was never read."""
        if self.cycle is None and not self.transport.is_closing():
            self._close_after_first_request = True
            return
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded_protocol(timeout: float) -> type[SlowClientGuard]:
    return type("SlowClientGuardConfigured", (SlowClientGuard,), {"header_timeout": timeout})


class DrainingServer(uvicorn.Server):
    """On SIGTERM (or Ctrl-C): `/readyz` fails at once, responses ask clients to close their
    connections, and the server keeps serving for `drain_seconds` while endpoints and the
    apiserver stop sending; then uvicorn's graceful shutdown completes in-flight requests.
    A second signal skips the rest of the drain."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._drain_until: float | None = None
        self._signal = signal.SIGTERM

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.runtime.settings.drain_seconds
        if self._drain_until is None and drain > 0:
            self.runtime.draining = True
            self._drain_until = time.monotonic() + drain
            self._signal = signal.Signals(sig)
            log.info("draining before shutdown", extra={"signal": self._signal.name, "drain_seconds": drain})
            return
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, with a TLS handshake timeout: without one asyncio keeps a connection
        that never finishes its handshake for 60 s, whatever the request timeout says."""
        loop = asyncio.get_running_loop()
        create_server = loop.create_server
        timeout = self.runtime.settings.request_timeout_seconds

        async def with_handshake_timeout(*args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", timeout)
            return await create_server(*args, **kwargs)

        loop.create_server = with_handshake_timeout  # type: ignore[method-assign]
        try:
            await super().startup(sockets=sockets)
        finally:
            del loop.create_server

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and not self.should_exit and time.monotonic() >= self._drain_until:
            log.info("drain window over; finishing in-flight requests and exiting")
            super().handle_exit(self._signal, None)
        return await super().on_tick(counter)


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


def _run_worker(settings: Settings, sockets: list[socket.socket] | None = None) -> int:
    """One server process: certificates, policy sources, app, uvicorn."""
    try:
        certs = CertificateReloader(
            settings.tls_cert_file, settings.tls_key_file, client_ca=settings.tls_client_ca_file
        )
    except (ssl.SSLError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    sources, namespaces, settings = build_sources(settings)
    app = create_app(settings, sources=sources, namespaces=namespaces, certs=certs)
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
    DrainingServer(config, app.state.runtime).run(sockets=sockets)
    return 0


def serve(settings: Settings) -> int:
    """Run `settings.workers` server processes sharing one listening socket (forked; Linux)."""
    logs.configure(settings.log_level)
    if settings.workers == 1:
        return _run_worker(settings)
    listener = _config(settings, None).bind_socket()
    children: list[int] = []
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = _run_worker(settings, [listener])
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
