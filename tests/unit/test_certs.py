"""Certificates: SANs, the chain, file modes, the caBundle, and a real (in-memory) TLS handshake."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.certs import Bundle, generate_bundle, generate_ca, issue_certificate, service_hostnames, write_bundle

HOSTS = service_hostnames("podgraft", "podgraft-system")


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return generate_bundle([*HOSTS, "::1", "10.0.0.7", "podgraft"], days=30)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_service_hostnames() -> None:
    assert HOSTS == [
        "podgraft",
        "podgraft.podgraft-system",
        "podgraft.podgraft-system.svc",
        "podgraft.podgraft-system.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ]


def test_sans_tell_ips_from_dns_names(bundle: Bundle) -> None:
    san = _cert(bundle.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "podgraft",
        "podgraft.podgraft-system",
        "podgraft.podgraft-system.svc",
        "podgraft.podgraft-system.svc.cluster.local",
        "localhost",
    ], "each name once, in order; IPs are not DNS names"
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.0.0.7"),
    ]


def test_leaf_is_issued_by_the_ca(bundle: Bundle) -> None:
    ca, leaf = _cert(bundle.ca_cert), _cert(bundle.cert)
    leaf.verify_directly_issued_by(ca)
    assert leaf.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True


def test_leaf_is_not_issued_by_another_ca(bundle: Bundle) -> None:
    other_ca, _ = generate_ca("someone-else")
    with pytest.raises((ValueError, TypeError)):
        _cert(bundle.cert).verify_directly_issued_by(_cert(other_ca))


def test_key_matches_certificate(bundle: Bundle) -> None:
    key = serialization.load_pem_private_key(bundle.key, password=None)
    assert key.public_key() == _cert(bundle.cert).public_key()
    ca_key = serialization.load_pem_private_key(bundle.ca_key, password=None)
    assert ca_key.public_key() == _cert(bundle.ca_cert).public_key()


def test_validity(bundle: Bundle) -> None:
    leaf = _cert(bundle.cert)
    now = dt.datetime.now(dt.UTC)
    assert leaf.not_valid_before_utc <= now
    assert dt.timedelta(days=29) < leaf.not_valid_after_utc - now <= dt.timedelta(days=30)
    assert _cert(bundle.ca_cert).not_valid_after_utc > leaf.not_valid_after_utc


def test_client_certificate_usage(bundle: Bundle) -> None:
    cert, _ = issue_certificate(["apiserver"], ca_cert=bundle.ca_cert, ca_key=bundle.ca_key, client=True)
    usage = _cert(cert).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_issue_certificate_refuses_bad_input(bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="at least one hostname"):
        issue_certificate([], ca_cert=bundle.ca_cert, ca_key=bundle.ca_key)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="EC key"):
        issue_certificate(["x"], ca_cert=bundle.ca_cert, ca_key=rsa_pem)


def test_ca_bundle_is_base64_of_the_ca_certificate(bundle: Bundle) -> None:
    assert base64.b64decode(bundle.ca_bundle()) == bundle.ca_cert
    assert "\n" not in bundle.ca_bundle()


def test_write_bundle_modes_and_contents(bundle: Bundle, tmp_path: Path) -> None:
    out = tmp_path / "certs" / "nested"
    old_umask = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        write_bundle(bundle, out)
    finally:
        os.umask(old_umask)
    files = {path.name: path for path in out.iterdir()}
    assert sorted(files) == ["ca.crt", "ca.key", "tls.crt", "tls.key"], "no temporary files are left behind"
    assert files["ca.crt"].read_bytes() == bundle.ca_cert
    assert files["tls.crt"].read_bytes() == bundle.cert
    assert files["tls.key"].read_bytes() == bundle.key
    assert files["ca.key"].read_bytes() == bundle.ca_key
    modes = {name: stat.S_IMODE(path.stat().st_mode) for name, path in files.items()}
    assert modes == {"ca.crt": 0o644, "tls.crt": 0o644, "ca.key": 0o600, "tls.key": 0o600}


def test_rewriting_a_bundle_keeps_key_modes(bundle: Bundle, tmp_path: Path) -> None:
    key = tmp_path / "tls.key"
    key.write_bytes(b"old")
    key.chmod(0o644)
    write_bundle(bundle, tmp_path)
    assert key.read_bytes() == bundle.key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def _handshake(bundle: Bundle, tmp_path: Path, server_name: str) -> None:
    write_bundle(bundle, tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not complete")


@pytest.mark.parametrize(
    "server_name",
    ["podgraft.podgraft-system.svc", "localhost", "127.0.0.1", "::1"],
)
def test_a_client_trusting_the_ca_accepts_every_name(
    bundle: Bundle, tmp_path: Path, server_name: str
) -> None:
    _handshake(bundle, tmp_path, server_name)


def test_a_name_outside_the_sans_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _handshake(bundle, tmp_path, "evil.example.com")
