"""Certificates of the fault and mTLS tests: renewals issued from the server's CA, their serials and
expiry, an RSA serving certificate (cert-manager's default), client contexts presenting a certificate,
and a server that requires client certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass, fields
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.certs import issue_certificate, service_hostnames

from .support import Server, client_context


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
