"""Who may talk to Podgraft: client certificates (mTLS) and TLS 1.2 cipher suites, against a real server.

The server below requires client certificates from a CA of its own (`PODGRAFT_TLS_CLIENT_CA_FILE`, as the
apiserver's client CA would be) and serves an RSA certificate (cert-manager's default key algorithm),
so that RSA key exchange and CBC suites are possible in principle and must be refused by configuration.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.certs import generate_ca, issue_certificate

from .certs_support import (
    MutualTLSServer,
    issue_rsa_serving,
    mtls_context,
    serial_of,
    with_client_ca,
    write_pair,
)
from .faults_support import FAST, RawResponse, injecting_review, read_response, within
from .support import build_server, peer_certificate, running

pytestmark = pytest.mark.timeout(60)

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


class Clients:
    """Client certificate files: the good one and every kind of bad one."""

    def __init__(self, root: Path) -> None:
        ca_cert, ca_key = generate_ca("kube-apiserver-client-ca")
        self.ca_file = root / "client-ca.crt"
        self.ca_file.write_bytes(ca_cert)
        other_cert, other_key = generate_ca("someone-else")

        def issue(
            name: str, *, days: int = 30, client: bool = True, ca: tuple[bytes, bytes] = (ca_cert, ca_key)
        ) -> tuple[Path, Path]:
            pem = issue_certificate(["kube-apiserver"], ca_cert=ca[0], ca_key=ca[1], days=days, client=client)
            return write_pair(root / "clients", name, *pem)

        self.good = issue("apiserver")
        self.other_ca = issue("other-ca", ca=(other_cert, other_key))
        self.server_usage = issue("server-usage-only", client=False)
        self.expired = issue("expired", days=0)  # notAfter five minutes ago


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Clients:
    return Clients(tmp_path_factory.mktemp("client-certs"))


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory, clients: Clients) -> Iterator[MutualTLSServer]:
    """Client certificates required (and verified against the client CA); an RSA serving certificate."""
    base = build_server(
        tmp_path_factory.mktemp("podgraft-mtls"),
        env={**FAST, "PODGRAFT_TLS_CLIENT_CA_FILE": str(clients.ca_file)},
    )
    base.secret.publish(*issue_rsa_serving(base))
    server = with_client_ca(base, client_cert_file=clients.good[0], client_key_file=clients.good[1])
    with running(server) as started:
        assert isinstance(started, MutualTLSServer)
        yield started


def healthz(server: MutualTLSServer, context: ssl.SSLContext) -> RawResponse:
    """Handshake, then GET /healthz on the same connection (TLS 1.3 reports a refused client cert here)."""
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return read_response(tls)


def refusal(server: MutualTLSServer, context: ssl.SSLContext) -> str:
    """Where the server refused this client: "handshake" or "first-read" (or fail if it answered).

    The server closes the connection without a TLS alert (asyncio drops the alert OpenSSL writes), so
    the client sees an EOF in the handshake (TLS 1.2) or on its first read (TLS 1.3, where the client
    finishes its side of the handshake before the server has checked the client certificate).
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname="localhost")
        except (ssl.SSLError, ConnectionError):
            return "handshake"
        with tls:
            try:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                response = read_response(tls)
            except (ssl.SSLError, ConnectionError):  # http.client.RemoteDisconnected is a ConnectionError
                return "first-read"
    raise AssertionError(f"the server answered a client it should refuse: HTTP {response.status}")


# --- client certificates ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls-1.2", "tls-1.3"])
def test_client_certificate_from_the_configured_ca_is_accepted(
    mtls: MutualTLSServer, clients: Clients, version: ssl.TLSVersion
) -> None:
    context = mtls_context(mtls.ca_file, *clients.good, minimum=version, maximum=version)
    assert healthz(mtls, context).status == 200
    with httpx.Client(base_url=mtls.base_url, verify=context, timeout=5.0) as client:
        response = client.post("/mutate", json=injecting_review("mtls"))
    assert response.status_code == 200
    assert response.json()["response"]["uid"] == "mtls"


REFUSED = [
    pytest.param(None, id="no-certificate"),
    pytest.param("other_ca", id="another-ca"),
    pytest.param("expired", id="expired"),
    pytest.param("server_usage", id="server-auth-usage-only"),
]


@pytest.mark.parametrize(
    ("version", "where"),
    [
        pytest.param(TLS12, {"handshake"}, id="tls-1.2"),
        pytest.param(TLS13, {"handshake", "first-read"}, id="tls-1.3"),
    ],
)
@pytest.mark.parametrize("which", REFUSED)
def test_client_without_an_acceptable_certificate_is_refused(
    mtls: MutualTLSServer, clients: Clients, which: str | None, version: ssl.TLSVersion, where: set[str]
) -> None:
    cert = (None, None) if which is None else getattr(clients, which)
    context = mtls_context(mtls.ca_file, *cert, minimum=version, maximum=version)
    assert refusal(mtls, context) in where
    with (
        httpx.Client(base_url=mtls.base_url, verify=context, timeout=5.0) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.post("/mutate", json=injecting_review())


def test_client_certificates_are_still_required_after_a_rotation(
    mtls: MutualTLSServer, clients: Clients
) -> None:
    """The rotated serving certificate goes live in a context that verifies clients as the first did."""
    good = mtls_context(mtls.ca_file, *clients.good)
    cert, key = issue_rsa_serving(mtls)  # RSA again: the cipher tests below need an RSA certificate
    mtls.secret.publish(cert, key)
    took = within(5.0, lambda: peer_certificate(mtls.port, good).serial_number == serial_of(cert))
    assert took is not None, "the rotated certificate was not served"
    assert healthz(mtls, good).status == 200
    for which in (None, "other_ca"):
        pair = (None, None) if which is None else getattr(clients, which)
        assert refusal(mtls, mtls_context(mtls.ca_file, *pair, maximum=TLS12)) == "handshake"


# --- TLS 1.2 cipher suites --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cipher",
    [
        pytest.param("AES128-GCM-SHA256", id="rsa-key-exchange-aes128-gcm"),
        pytest.param("AES256-GCM-SHA384", id="rsa-key-exchange-aes256-gcm"),
        pytest.param("DHE-RSA-AES128-GCM-SHA256", id="finite-field-dhe"),
        pytest.param("ECDHE-RSA-AES128-SHA", id="ecdhe-cbc-sha1"),
        pytest.param("ECDHE-RSA-AES128-SHA256", id="ecdhe-cbc-sha256"),
        pytest.param("ECDHE-RSA-AES256-SHA384", id="ecdhe-cbc-sha384"),
        pytest.param("AES128-SHA", id="rsa-cbc"),
    ],
)
def test_tls_1_2_client_without_ecdhe_and_aead_is_refused(
    mtls: MutualTLSServer, clients: Clients, cipher: str
) -> None:
    context = mtls_context(mtls.ca_file, *clients.good, maximum=TLS12)
    context.set_ciphers(cipher)
    assert [c["name"] for c in context.get_ciphers() if not c["name"].startswith("TLS_")] == [cipher]
    assert refusal(mtls, context) == "handshake"


@pytest.mark.parametrize(
    "cipher",
    ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"],
)
def test_tls_1_2_client_with_a_modern_suite_is_served(
    mtls: MutualTLSServer, clients: Clients, cipher: str
) -> None:
    context = mtls_context(mtls.ca_file, *clients.good, maximum=TLS12)
    context.set_ciphers(cipher)
    with (
        socket.create_connection(("127.0.0.1", mtls.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.2"
        negotiated = tls.cipher()
        assert negotiated is not None
        assert negotiated[0] == cipher
    assert healthz(mtls, context).status == 200


def test_a_client_offering_old_and_modern_suites_gets_a_modern_one(
    mtls: MutualTLSServer, clients: Clients
) -> None:
    """Server preference: the weak suites a client lists first are never chosen."""
    context = mtls_context(mtls.ca_file, *clients.good, maximum=TLS12)
    context.set_ciphers("AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
    with (
        socket.create_connection(("127.0.0.1", mtls.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        negotiated = tls.cipher()
    assert negotiated is not None
    assert negotiated[0] == "ECDHE-RSA-AES256-GCM-SHA384"
