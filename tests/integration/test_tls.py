"""TLS of the running server: trust, protocol versions, and certificate rotation without a restart."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509

from app.certs import generate_ca, issue_certificate, service_hostnames

from .conftest import Metrics, Ready
from .support import Server, client_context, peer_certificate, wait_for

pytestmark = pytest.mark.timeout(60)

ROTATION_DEADLINE = 5.0  # new handshakes must see a rotated certificate within this many seconds
REJECTED = "new certificate rejected, still serving the previous one"


# --- trust ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1", "podgraft.podgraft.svc"])
def test_client_trusting_the_generated_ca_completes_the_handshake(
    server: Server, tls_context: ssl.SSLContext, server_name: str
) -> None:
    cert = peer_certificate(server.port, tls_context, server_name=server_name)
    ca = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    assert cert.issuer == ca.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {
        "podgraft",
        "podgraft.podgraft",
        "podgraft.podgraft.svc",
        "podgraft.podgraft.svc.cluster.local",
        "localhost",
    }
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


def _context_trusting_another_ca() -> ssl.SSLContext:
    other_ca, _ = generate_ca("someone-else")
    return ssl.create_default_context(cadata=other_ca.decode())


@pytest.mark.parametrize(
    ("make_context", "server_name"),
    [
        pytest.param(ssl.create_default_context, "localhost", id="system-cas-only"),
        pytest.param(_context_trusting_another_ca, "localhost", id="another-ca"),
    ],
)
def test_client_not_trusting_the_ca_fails_the_handshake(
    server: Server, make_context: Any, server_name: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        peer_certificate(server.port, make_context(), server_name=server_name)


def test_name_not_in_the_certificate_fails_the_handshake(server: Server, tls_context: ssl.SSLContext) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        peer_certificate(server.port, tls_context, server_name="podgraft.elsewhere.svc")


def test_httpx_with_default_trust_refuses_the_server(server: Server) -> None:
    with (
        httpx.Client(base_url=server.base_url, timeout=5.0) as untrusting,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        untrusting.get("/healthz")


# --- protocol versions and ciphers ------------------------------------------------------------------


def _version_context(version: ssl.TLSVersion, server: Server) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(server.ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: that is the point
        context.minimum_version = version
        context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("ALL:@SECLEVEL=0")  # let this client really offer the old protocol
    return context


def _client_hello(context: ssl.SSLContext) -> bytes:
    """The ClientHello record this context sends first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _server_reply(port: int, hello: bytes) -> bytes:
    """What the server answers to a raw ClientHello (b"" when it just closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(hello)
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""


def test_tls_1_1_client_hello_is_refused(server: Server) -> None:
    hello = _client_hello(_version_context(ssl.TLSVersion.TLSv1_1, server))
    assert hello[0] == 0x16, "a TLS handshake record"
    assert hello[5] == 0x01, "holding a ClientHello"
    assert hello[9:11] == b"\x03\x02", "the client really offers TLS 1.1 (and nothing newer)"
    reply = _server_reply(server.port, hello)
    assert reply == b"" or reply[0] == 0x15, f"no ServerHello, only an alert or a close: {reply[:16].hex()}"


@pytest.mark.parametrize(
    ("version", "wire"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_2, b"\x03\x03", id="tls-1.2"),
        pytest.param(ssl.TLSVersion.TLSv1_3, b"\x03\x03", id="tls-1.3"),  # 1.3 is negotiated in an extension
    ],
)
def test_tls_1_2_and_newer_client_hello_gets_a_server_hello(
    server: Server, version: ssl.TLSVersion, wire: bytes
) -> None:
    reply = _server_reply(server.port, _client_hello(_version_context(version, server)))
    assert reply[:1] == b"\x16", f"a handshake record: {reply[:16].hex()}"
    assert reply[5] == 0x02, f"a ServerHello: {reply[:16].hex()}"
    assert reply[9:11] == wire


@pytest.mark.parametrize(
    ("version", "name"),
    [
        pytest.param(ssl.TLSVersion.TLSv1_2, "TLSv1.2", id="tls-1.2"),
        pytest.param(ssl.TLSVersion.TLSv1_3, "TLSv1.3", id="tls-1.3"),
    ],
)
def test_full_handshake_and_request_over_each_accepted_version(
    server: Server, version: ssl.TLSVersion, name: str
) -> None:
    context = _version_context(version, server)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == name
        cipher = tls.cipher()
        assert cipher is not None
        assert "GCM" in cipher[0] or "CHACHA20" in cipher[0], cipher
    with httpx.Client(base_url=server.base_url, verify=context, timeout=5.0) as pinned:
        assert pinned.get("/healthz").status_code == 200


def test_tls_1_2_without_forward_secrecy_or_aead_is_refused(server: Server) -> None:
    context = _version_context(ssl.TLSVersion.TLSv1_2, server)
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA:AES128-SHA:AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        peer_certificate(server.port, context)


# --- rotation ---------------------------------------------------------------------------------------


def _issue(server: Server, *, days: int = 365) -> tuple[bytes, bytes]:
    """A new serving certificate and key, signed by the session's CA (as a cert-manager renewal is)."""
    return issue_certificate(
        service_hostnames("podgraft", "podgraft"),
        ca_cert=server.ca_file.read_bytes(),
        ca_key=server.ca_key_file.read_bytes(),
        days=days,
    )


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def _served_serial(server: Server, context: ssl.SSLContext) -> int:
    return peer_certificate(server.port, context).serial_number


@pytest.fixture
def rotation(server: Server, tls_context: ssl.SSLContext, ready: Ready) -> Iterator[None]:
    """Afterwards, publish a fresh good certificate and wait until it is served with no error reported."""
    yield
    cert, key = _issue(server)
    server.secret.publish(cert, key)
    wait_for(lambda: _served_serial(server, tls_context) == _serial(cert), what="a good certificate served")
    wait_for(ready, until=lambda r: r[0] == 200 and r[1]["certificateError"] is None, what="a clean /readyz")


def test_rotated_certificate_is_served_to_new_handshakes_without_restart(
    server: Server,
    client: httpx.Client,
    tls_context: ssl.SSLContext,
    metrics: Metrics,
    ready: Ready,
    rotation: None,
) -> None:
    assert server.process is not None
    pid = server.process.pid
    old_serial = _served_serial(server, tls_context)
    assert client.get("/healthz").status_code == 200  # a keep-alive connection opened before the rotation

    cert, key = _issue(server, days=200)
    new_serial = _serial(cert)
    assert new_serial != old_serial
    started = time.monotonic()
    server.secret.publish(cert, key)
    wait_for(
        lambda: _served_serial(server, tls_context) == new_serial,
        timeout=ROTATION_DEADLINE,
        interval=0.05,
        what="the new certificate served",
    )
    assert time.monotonic() - started < ROTATION_DEADLINE

    assert server.process.poll() is None
    assert server.process.pid == pid, "no restart"
    assert client.get("/healthz").status_code == 200, "the connection opened before still works"
    with httpx.Client(base_url=server.base_url, verify=client_context(server.ca_file), timeout=5.0) as fresh:
        assert fresh.get("/healthz").status_code == 200

    not_after = x509.load_pem_x509_certificate(cert).not_valid_after_utc.timestamp()
    wait_for(
        lambda: metrics()["podgraft_certificate_expiry_timestamp_seconds"] == not_after,
        what="the expiry gauge updated",
    )
    status, detail = ready()
    assert status == 200
    assert detail["certificateError"] is None
    assert abs(detail["certificateExpiresInSeconds"] - (not_after - time.time())) < 60


def _mismatched_pair(server: Server) -> tuple[bytes, bytes]:
    cert, _ = _issue(server)
    return cert, server.secret.current()[1]


def _garbage_cert(server: Server) -> tuple[bytes, bytes]:
    garbage = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    return garbage, server.secret.current()[1]


def _empty_files(_server: Server) -> tuple[bytes, bytes]:
    return b"", b""


def _key_of_another_cert(server: Server) -> tuple[bytes, bytes]:
    cert, _ = _issue(server)
    _, other_key = _issue(server)
    return cert, other_key


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(_mismatched_pair, id="new-cert-old-key"),
        pytest.param(_key_of_another_cert, id="new-cert-foreign-key"),
        pytest.param(_garbage_cert, id="garbage-cert"),
        pytest.param(_empty_files, id="empty-files"),
    ],
)
def test_broken_new_certificate_keeps_the_old_one_and_is_reported(
    server: Server,
    client: httpx.Client,
    tls_context: ssl.SSLContext,
    metrics: Metrics,
    ready: Ready,
    rotation: None,
    broken: Any,
) -> None:
    old_serial = _served_serial(server, tls_context)
    errors_before = metrics()["podgraft_certificate_reload_errors_total"]
    server.secret.publish(*broken(server))

    status, detail = wait_for(
        ready,
        until=lambda r: r[1]["certificateError"],
        timeout=ROTATION_DEADLINE,
        what="/readyz reporting the certificate error",
    )
    assert detail["certificateError"].startswith(REJECTED), detail
    assert status == 200, "still serving a good certificate: still ready"
    for _ in range(3):
        assert _served_serial(server, tls_context) == old_serial
    assert client.get("/healthz").status_code == 200
    assert metrics()["podgraft_certificate_reload_errors_total"] > errors_before
    records = [r for r in server.log_records() if str(r.get("msg", "")).startswith(REJECTED)]
    assert records
    assert records[-1]["level"] == "error"


def test_certificate_error_clears_when_the_served_files_come_back(
    server: Server, tls_context: ssl.SSLContext, ready: Ready, rotation: None
) -> None:
    """A broken rotation rolled back (the Secret gets the served pair again) is no longer an error."""
    good = server.secret.current()
    server.secret.publish(*_mismatched_pair(server))
    wait_for(lambda: ready()[1]["certificateError"], timeout=ROTATION_DEADLINE, what="the error reported")
    server.secret.publish(*good)
    wait_for(
        lambda: ready()[1]["certificateError"] is None,
        timeout=ROTATION_DEADLINE,
        what="the certificate error cleared after the rollback",
    )
    assert _served_serial(server, tls_context) == _serial(good[0])


def test_certificate_about_to_expire_makes_readyz_fail(
    server: Server, tls_context: ssl.SSLContext, ready: Ready, rotation: None
) -> None:
    cert, key = _issue(server, days=1)  # under the default 24 h margin
    server.secret.publish(cert, key)
    wait_for(lambda: _served_serial(server, tls_context) == _serial(cert), timeout=ROTATION_DEADLINE)
    _, detail = wait_for(
        ready,
        until=lambda r: r[0] == 503,
        timeout=ROTATION_DEADLINE,
        what="/readyz 503",
    )
    assert detail["ready"] is False
    assert detail["certificateExpiring"] is True
    assert 0 < detail["certificateExpiresInSeconds"] < 24 * 3600
    assert detail["certificateError"] is None
