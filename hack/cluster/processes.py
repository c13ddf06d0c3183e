"""The processes of the local cluster: each in a process group of its own, logging to a file,
stopped by its PID (never by name), and killed with the Python process that started it unless it
is meant to outlive it (`make cluster`); waiting for what they serve."""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

# --- processes ------------------------------------------------------------------------------------

_LIVE: dict[int, Managed] = {}


def _with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """Prefix `setpriv --pdeathsig KILL` (util-linux) when present: the child then dies with the test
    process even when that is SIGKILLed and no finalizer runs. (No preexec_fn: unsafe with threads.)"""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


@dataclass
class Managed:
    """A child process in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(
        cls, name: str, argv: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None
    ) -> Managed:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                _with_parent_death_signal(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: killpg reaches any grandchildren
            )
        managed = cls(name, popen, log_path)
        _LIVE[popen.pid] = managed
        return managed

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited within `timeout`."""
        _LIVE.pop(self.pid, None)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the leader may be gone while group members linger
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@atexit.register
def _kill_leftovers() -> None:
    """Last resort (an interrupted session): nothing we started may outlive the test process."""
    for managed in list(_LIVE.values()):
        managed.stop(timeout=3)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, process: Managed | None = None) -> None:
    """Poll `check` until it is true; fail early (with the log tail) if `process` exits."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode} while waiting for {what}:\n"
                f"{process.tail()}"
            )
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(0.2)
    tail = f"\n{process.name} log:\n{process.tail()}" if process is not None else ""
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last error: {last_error}){tail}")


def https_get(
    port: int, path: str, *, ca_file: Path, token: str | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET https://127.0.0.1:port/path, verifying the server against `ca_file`; never uses a proxy."""
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_all(steps: Sequence[Callable[[], None]], *, stop: Callable[[], None]) -> float:
    """Run the start-up `steps` in order; if any fails, `stop` what was started and re-raise.
    Returns the seconds they took."""
    started = time.monotonic()
    try:
        for step in steps:
            step()
    except BaseException:
        stop()
        raise
    return time.monotonic() - started
