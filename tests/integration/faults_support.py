"""Helpers of the fault and load tests: bounded load generators, raw TLS sockets, metrics, certificates.

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
import datetime as dt
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.certs import issue_certificate, service_hostnames

from .support import Server, client_context, parse_metrics, pod, review

INJECT = {"podgraft.io/inject": "wait-for-db"}
OVERLOADED = "podgraft is overloaded; retry"


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


def issue_serving(server: Server, *, days: int = 365) -> tuple[bytes, bytes]:
    """A new serving certificate (new key, new serial) from the server's CA, as a renewal is."""
    return issue_certificate(
        service_hostnames("podgraft", "podgraft"),
        ca_cert=server.ca_file.read_bytes(),
        ca_key=server.ca_key_file.read_bytes(),
        days=days,
    )


def serial_of(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(cert_pem).serial_number


def not_after(cert_pem: bytes) -> float:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


def within(deadline: float, probe: Callable[[], bool], *, interval: float = 0.05) -> float | None:
    """Poll `probe` for at most `deadline` seconds; the seconds it took to hold, or None."""
    started = time.monotonic()
    while time.monotonic() - started <= deadline:
        if probe():
            return time.monotonic() - started
        time.sleep(interval)
    return None


# --- mTLS -------------------------------------------------------------------------------------------


@dataclass
class MutualTLSServer(Server):
    """A server that requires client certificates: its readiness wait presents one."""

    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def client_context(self, **versions: ssl.TLSVersion) -> ssl.SSLContext:
        assert self.client_cert_file is not None
        assert self.client_key_file is not None
        return mtls_context(self.ca_file, self.client_cert_file, self.client_key_file, **versions)

    def readiness_context(self) -> ssl.SSLContext:
        return self.client_context()


def with_client_ca(server: Server, *, client_cert_file: Path, client_key_file: Path) -> MutualTLSServer:
    values = {f.name: getattr(server, f.name) for f in fields(server)}
    return MutualTLSServer(**values, client_cert_file=client_cert_file, client_key_file=client_key_file)


def mtls_context(
    ca_file: Path,
    cert_file: Path | None,
    key_file: Path | None,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client context trusting the server's CA and presenting `cert_file` (None: no certificate)."""
    context = client_context(ca_file)
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    return context


def write_pair(directory: Path, name: str, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    return cert_file, key_file


def issue_rsa_serving(server: Server) -> tuple[bytes, bytes]:
    """An RSA serving certificate from the server's CA (cert-manager's default key algorithm)."""
    ca_cert = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(server.ca_key_file.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podgraft.podgraft.svc")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
