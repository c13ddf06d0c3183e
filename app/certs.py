"""CA and serving-certificate generation with `cryptography` (pure functions), and file output.

`generate_ca()` and `issue_certificate()` return PEM bytes and touch no file; `write_bundle()`
writes them with a private-key mode of 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class Bundle:
    ca_cert: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def ca_bundle(self) -> str:
        """The base64 caBundle for a MutatingWebhookConfiguration."""
        return base64.b64encode(self.ca_cert).decode()


def service_hostnames(service: str, namespace: str) -> list[str]:
    """The names the apiserver may use to reach a Service, plus loopback for local runs."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ]


def _san(hostnames: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_ca(common_name: str = "podgraft-ca", *, days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA: (cert_pem, key_pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now() - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_certificate(
    hostnames: list[str], *, ca_cert: bytes, ca_key: bytes, days: int = 365, client: bool = False
) -> tuple[bytes, bytes]:
    """A leaf certificate for `hostnames` (DNS names and IPs told apart), signed by the CA."""
    if not hostnames:
        raise ValueError("at least one hostname is needed")
    issuer = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - dt.timedelta(minutes=5)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(_san(hostnames), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def generate_bundle(hostnames: list[str], *, days: int = 365) -> Bundle:
    ca_cert, ca_key = generate_ca()
    cert, key = issue_certificate(hostnames, ca_cert=ca_cert, ca_key=ca_key, days=days)
    return Bundle(ca_cert=ca_cert, ca_key=ca_key, cert=cert, key=key)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)


def write_bundle(bundle: Bundle, out: Path) -> None:
    """Write ca.crt, ca.key, tls.crt and tls.key (keys 0600), each replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "ca.crt", bundle.ca_cert, 0o644)
    _write(out / "ca.key", bundle.ca_key, 0o600)
    _write(out / "tls.key", bundle.key, 0o600)
    _write(out / "tls.crt", bundle.cert, 0o644)


def read_ca_bundle(ca_path: Path) -> str:
    """The base64 caBundle of a PEM file holding one or more CA certificates (checked)."""
    data = Path(ca_path).read_bytes()
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{ca_path} holds no PEM certificate: {exc}") from None
    if not certificates:
        raise ValueError(f"{ca_path} holds no PEM certificate")
    return base64.b64encode(data).decode()
