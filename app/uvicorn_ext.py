"""Podgraft's extensions of uvicorn: every uvicorn internal Podgraft leans on is here, and only here.

- `SlowClientGuard` subclasses `HttpToolsProtocol` (uvicorn's private httptools protocol): it uses
  its `loop`, `transport`, `client` and `cycle` attributes and overrides `connection_made`,
  `on_message_begin`, `on_headers_complete`, `shutdown` and `connection_lost`;
- `DrainingServer` subclasses `uvicorn.Server`: it overrides `handle_exit`, `startup`, `on_tick` and
  `capture_signals` (clearing `_captured_signals`, which uvicorn would re-raise) and reads
  `should_exit`; `startup` wraps the loop's `create_server` to add a TLS handshake timeout.

`tests/unit/test_uvicorn_ext.py` pins the uvicorn version these were checked against and checks
that the internals still exist; a uvicorn upgrade starts there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("podgraft")

CHECKED_UVICORN = "0.54.0"


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

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        drain_seconds: float,
        handshake_timeout: float,
        on_drain: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.handshake_timeout = handshake_timeout
        self.on_drain = on_drain
        self._drain_until: float | None = None
        self._signal = signal.SIGTERM

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.drain_seconds
        if self._drain_until is None and drain > 0:
            self.on_drain()
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
        timeout = self.handshake_timeout

        async def with_handshake_timeout(*args: Any, **kwargs: Any) -> asyncio.Server:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", timeout)
            return await create_server(*args, **kwargs)

        loop.create_server = with_handshake_timeout  # type: ignore[method-assign]
        try:
            await super().startup(sockets=sockets)
        finally:
            del loop.create_server

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal capture, without its re-raise of the signal after a graceful shutdown: a
        drained stop is a clean exit (status 0, as gunicorn and Go servers do), so a supervisor or
        `make run` sees success, not death by SIGTERM."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and not self.should_exit and time.monotonic() >= self._drain_until:
            log.info("drain window over; finishing in-flight requests and exiting")
            super().handle_exit(self._signal, None)
        return await super().on_tick(counter)
