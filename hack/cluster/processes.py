"""The processes of the local cluster: each in a process group of its own, logging to a file, and
stopped by its PID (never by name). A process dies with the Python process that started it, unless
it is `detached` (`make cluster`): then `make cluster-down` finds it again by PID and start time
(`Managed.adopt`), so that a recycled PID is never signalled. Also: waiting for what they serve."""

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

_LIVE: dict[int, Managed] = {}


def _with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """Prefix `setpriv --pdeathsig KILL` (util-linux) when present: the child then dies with the test
    process even when that is SIGKILLed and no finalizer runs. (No preexec_fn: unsafe with threads.)"""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None when it is
    gone or a zombie: with the PID, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


@dataclass
class Managed:
    """A process in its own process group, logging to a file: a child (`spawn`) or one that an
    earlier, detached start left running (`adopt`)."""

    name: str
    popen: subprocess.Popen[bytes] | None
    log_path: Path
    pid: int = 0
    started: int | None = None

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        detached: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> Managed:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv) if detached else _with_parent_death_signal(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: killpg reaches any grandchildren
                pass_fds=tuple(pass_fds),
            )
        managed = cls(name, popen, log_path, popen.pid, start_time(popen.pid))
        if not detached:
            _LIVE[popen.pid] = managed
        return managed

    @classmethod
    def adopt(cls, name: str, pid: int, started: int | None, log_path: Path) -> Managed:
        """The process `pid` that a detached start recorded, if it is still that one."""
        return cls(name, None, log_path, pid, started)

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return self.started is not None and start_time(self.pid) == self.started

    def _wait(self, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.alive()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited within `timeout`."""
        _LIVE.pop(self.pid, None)
        if self.popen is None and not self.alive():
            return  # gone already, and its PID may be someone else's by now
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            if self._wait(wait):
                break
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


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, process: Managed | None = None) -> None:
    """Poll `check` until it is true; fail early (with the log tail) if `process` exits."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.returncode} while waiting for {what}:\n{process.tail()}"
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
    port: int,
    path: str,
    *,
    ca_file: Path,
    token: str | None = None,
    timeout: float = 5.0,
    host: str = LOOPBACK,
) -> tuple[int, bytes]:
    """GET https://host:port/path, verifying the server against `ca_file`; never uses a proxy."""
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
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
