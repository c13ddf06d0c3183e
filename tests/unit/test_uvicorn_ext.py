"""The uvicorn internals `app/uvicorn_ext.py` leans on: pinned version, and each one still there.

A uvicorn upgrade fails here first, naming what moved, instead of in the fault tier's timing tests.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.uvicorn_ext import CHECKED_UVICORN, DrainingServer, SlowClientGuard, guarded_protocol

REPO = Path(__file__).resolve().parents[2]


def test_the_locked_and_installed_uvicorn_is_the_checked_one() -> None:
    locked = {
        line.split("==")[0]: line.split("==")[1].strip()
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    assert locked["uvicorn"] == CHECKED_UVICORN
    assert uvicorn.__version__ == CHECKED_UVICORN


def test_the_protocol_hooks_the_guard_overrides_exist_with_their_signatures() -> None:
    for name, parameters in {
        "connection_made": ["self", "transport"],
        "on_message_begin": ["self"],
        "on_headers_complete": ["self"],
        "shutdown": ["self"],
        "connection_lost": ["self", "exc"],
    }.items():
        method = getattr(HttpToolsProtocol, name)
        assert list(inspect.signature(method).parameters) == parameters, name
    source = inspect.getsource(HttpToolsProtocol)
    for attribute in ("self.loop", "self.transport", "self.client", "self.cycle"):
        assert attribute in source, attribute
    assert issubclass(guarded_protocol(3.0), SlowClientGuard)
    assert guarded_protocol(3.0).header_timeout == 3.0


def test_the_server_hooks_the_draining_server_overrides_exist() -> None:
    assert list(inspect.signature(uvicorn.Server.handle_exit).parameters) == ["self", "sig", "frame"]
    assert list(inspect.signature(uvicorn.Server.startup).parameters) == ["self", "sockets"]
    assert list(inspect.signature(uvicorn.Server.on_tick).parameters) == ["self", "counter"]
    assert inspect.iscoroutinefunction(uvicorn.Server.startup)
    assert inspect.iscoroutinefunction(uvicorn.Server.on_tick)
    assert "loop.create_server" in inspect.getsource(uvicorn.Server.startup)
    assert "self.should_exit" in inspect.getsource(uvicorn.Server)
    capture = inspect.getsource(uvicorn.Server.capture_signals)
    assert "for captured_signal in reversed(self._captured_signals)" in capture
    assert "self._captured_signals.append(sig)" in inspect.getsource(uvicorn.Server.handle_exit)


def test_the_first_signal_drains_and_the_second_exits() -> None:
    drained: list[bool] = []
    server = DrainingServer(
        uvicorn.Config(app=None),  # type: ignore[arg-type]
        drain_seconds=5,
        handshake_timeout=1,
        on_drain=lambda: drained.append(True),
    )
    server.handle_exit(15, None)
    assert drained == [True]
    assert not server.should_exit
    server.handle_exit(15, None)
    assert server.should_exit
    assert drained == [True]
