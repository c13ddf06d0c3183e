"""Helpers of the fault and load tests (test_faults_*.py): a server of its own per test, bounded load
generators, raw TLS sockets, metrics and readiness. Their certificates are in certs_support.py.

Each test starts its own server with the settings it needs (`podgraft`) and prints what it measured
(`report`; run with `-s`). No test asserts a latency, only generous functional deadlines.

Load only ever goes to 127.0.0.1, and every loop here is bounded twice: by a request count and by a
deadline. A request is classified by how far it got:

- *ok*: a 200 whose AdmissionReview echoes the uid (and carries the expected patch);
- *not sent*: the connection or the TLS handshake was refused, so no request bytes reached the server
  (what the apiserver would retry against another replica; not a failure);
- *failed*: everything else - an error status, a malformed answer, a timeout, or a connection reset or
  closed while the request was on the wire.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .support import Server, build_server, client_context, parse_metrics, pod, review, running

INJECT = {"podgraft.io/inject": "wait-for-db"}
OVERLOADED = "podgraft is overloaded; retry"
FAST = {
    "PODGRAFT_CERT_RELOAD_INTERVAL_SECONDS": "0.25",
    "PODGRAFT_DRAIN_SECONDS": "0",  # stop at once when the test is over (the drain test sets its own)
}


@contextlib.contextmanager
def podgraft(root: Path, **env: str) -> Iterator[Server]:
    """A server of its own for one test: fast certificate checks, no drain on stop, plus `env`."""
    with running(build_server(root, env={**FAST, **env})) as server:
        yield server


def report(title: str, **figures: object) -> None:
    """Print what a test measured (run with `-s` to see it)."""
    print(f"\n[{title}] " + " ".join(f"{k}={v}" for k, v in figures.items()))


# --- requests ---------------------------------------------------------------------------------------


def injecting_review(uid: str | None = None) -> dict[str, Any]:
    """A small review that the example policies answer with a patch (wait-for-db is requested)."""
    return review(pod(annotations=INJECT), uid=uid or str(uuid.uuid4()))


def padded_review(size: int, *, uid: str = "padded") -> bytes:
    """A valid review padded with trailing whitespace to exactly `size` bytes."""
    body = json.dumps(injecting_review(uid)).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def answer_problem(response: httpx.Response, uid: str) -> str | None:
    """None when the response is a 200 AdmissionReview for `uid` with a JSON patch; else what is wrong."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:120]}"
    try:
        answer = response.json()["response"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"not an AdmissionReview: {exc!r}"
    if answer.get("uid") != uid or answer.get("allowed") is not True or "patch" not in answer:
        return f"unexpected answer: {str(answer)[:120]}"
    return None


# --- load -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request of a load run."""

    client: str
    started: float  # time.monotonic()
    finished: float
    kind: str  # "ok" | "not-sent" | "failed"
    status: int | None = None
    connection: str | None = None  # the response's Connection header
    detail: str = ""


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def count(self, kind: str) -> int:
        return sum(1 for o in self.snapshot() if o.kind == kind)

    @property
    def sent(self) -> int:
        return sum(1 for o in self.snapshot() if o.kind != "not-sent")

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.snapshot() if o.kind == "failed"]

    def summary(self) -> str:
        kinds = Counter(o.kind for o in self.snapshot())
        clients = Counter(o.client.split("-")[0] for o in self.snapshot() if o.kind != "not-sent")
        return (
            f"sent={self.sent} ok={kinds['ok']} failed={kinds['failed']} not-sent={kinds['not-sent']} "
            f"by-client-kind={dict(clients)}"
        )


class Load:
    """Client threads posting injecting reviews to /mutate until stopped (or a bound is reached).

    `fresh` clients open a new TLS connection for every request (new handshakes see rotated
    certificates); `keepalive` clients reuse one connection as the apiserver does.
    """

    def __init__(
        self,
        server: Server,
        *,
        fresh: int = 2,
        keepalive: int = 2,
        max_requests: int = 2000,
        max_seconds: float = 30.0,
        context: ssl.SSLContext | None = None,
        pause: float = 0.0,
    ) -> None:
        self.url = f"{server.base_url}/mutate"
        self.context = context or client_context(server.ca_file)
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pause = pause
        self.tally = Tally()
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(f"fresh-{i}", False), daemon=True) for i in range(fresh)
        ] + [
            threading.Thread(target=self._run, args=(f"keepalive-{i}", True), daemon=True)
            for i in range(keepalive)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> Tally:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=20)
        assert not any(t.is_alive() for t in self.threads), "a load client hung"
        return self.tally

    def wait_for_requests(self, count: int, *, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.tally.count("ok") < count:
            assert time.monotonic() < deadline, (
                f"fewer than {count} requests answered: {self.tally.summary()}"
            )
            time.sleep(0.02)

    def _client(self) -> httpx.Client:
        return httpx.Client(verify=self.context, timeout=10.0)

    def _run(self, name: str, keepalive: bool) -> None:
        deadline = time.monotonic() + self.max_seconds
        shared = self._client() if keepalive else None
        try:
            for _ in range(self.max_requests):
                if self.stop_event.is_set() or time.monotonic() > deadline:
                    return
                self.tally.add(self._one(name, shared))
                if self.pause:
                    time.sleep(self.pause)
        finally:
            if shared is not None:
                shared.close()

    def _one(self, name: str, shared: httpx.Client | None) -> Outcome:
        uid = str(uuid.uuid4())
        started = time.monotonic()
        client = shared or self._client()
        try:
            response = client.post(self.url, json=injecting_review(uid))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            time.sleep(0.02)  # refused before anything was sent: back off a little, like a retrying client
            return Outcome(name, started, time.monotonic(), "not-sent", detail=repr(exc))
        except httpx.HTTPError as exc:
            return Outcome(name, started, time.monotonic(), "failed", detail=repr(exc))
        finally:
            if shared is None:
                client.close()
        problem = answer_problem(response, uid)
        return Outcome(
            name,
            started,
            time.monotonic(),
            "failed" if problem else "ok",
            status=response.status_code,
            connection=response.headers.get("connection"),
            detail=problem or "",
        )


# --- raw TLS sockets --------------------------------------------------------------------------------


@contextlib.contextmanager
def tls_socket(
    server: Server, *, context: ssl.SSLContext | None = None, timeout: float = 10.0
) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to the server, for requests written by hand."""
    context = context or client_context(server.ca_file)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        tls = context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
    with tls:
        yield tls


def request_head(path: str = "/mutate", *, content_length: int | None = None, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Content-Type: application/json"]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(sock: ssl.SSLSocket) -> RawResponse:
    """Read one HTTP/1.1 response from the socket (raises if the server closes without one)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return RawResponse(response.status, headers, body)


def closed_by_peer(sock: ssl.SSLSocket) -> bool:
    """True when the server has closed the connection (EOF or reset on read)."""
    try:
        return sock.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def port_refuses(port: int) -> bool:
    """True when nothing listens on the port any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


# --- server state -----------------------------------------------------------------------------------


def scrape(server: Server, context: ssl.SSLContext | None = None) -> dict[str, float]:
    with httpx.Client(verify=context or client_context(server.ca_file), timeout=5.0) as http:
        response = http.get(f"{server.base_url}/metrics")
        assert response.status_code == 200
        return parse_metrics(response.text)


def readyz(server: Server, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]]:
    with httpx.Client(verify=context or client_context(server.ca_file), timeout=5.0) as http:
        response = http.get(f"{server.base_url}/readyz")
        detail: dict[str, Any] = response.json()
        return response.status_code, detail


def within(deadline: float, probe: Callable[[], bool], *, interval: float = 0.05) -> float | None:
    """Poll `probe` for at most `deadline` seconds; the seconds it took to hold, or None."""
    started = time.monotonic()
    while time.monotonic() - started <= deadline:
        if probe():
            return time.monotonic() - started
        time.sleep(interval)
    return None
