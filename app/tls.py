"""The server's SSL context, with hot reload of rotated certificate files.

One `ssl.SSLContext` is handed to uvicorn for the life of the process. `CertificateReloader.check()`
(called every few seconds) reloads the certificate and key into that same context when the files'
contents change - as a mounted Secret does on rotation. New handshakes use the new certificate;
connections already open keep theirs. A new pair is first loaded into a scratch context, so a
broken or mismatched pair never reaches the live one: the old certificate stays and the error is
reported.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

log = logging.getLogger("podgraft.tls")

MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"  # TLS 1.2 suites with forward secrecy and AEAD only


def server_context(*, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context: TLS 1.2 minimum, modern ciphers, client certificates required when a CA is given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MODERN_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(client_ca))
    return context


def certificate_expiry(cert_pem: bytes) -> float:
    """The `notAfter` of the first certificate in a PEM chain, as a Unix timestamp."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()


@dataclass(frozen=True, slots=True)
class CertificateState:
    fingerprint: str
    expires_at: float
    loaded_at: float


class CertificateReloader:
    """Owns the SSL context given to the server and swaps in a new certificate when the files change.

    The context handed to uvicorn (`self.context`) selects, in its SNI callback (OpenSSL runs it for
    every ClientHello, with or without SNI), the newest context that loaded cleanly. A new pair is
    loaded into a fresh context first, so a broken or mismatched pair never goes live.
    """

    def __init__(self, cert_file: Path, key_file: Path, *, client_ca: Path | None = None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca = client_ca
        self.state: CertificateState | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.failures = 0
        self._current: ssl.SSLContext | None = None
        self.check()
        if self._current is None:
            raise ssl.SSLError(f"cannot load the serving certificate: {self.last_error}")
        self.context: ssl.SSLContext = self._current
        self.context.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
        current = self._current
        if current is not None and connection.context is not current:
            connection.context = current

    def check(self) -> bool:
        """Reload if the files changed. Returns True when a new certificate went live."""
        try:
            cert_pem = self.cert_file.read_bytes()
            key_pem = self.key_file.read_bytes()
            client_ca = self.client_ca.read_bytes() if self.client_ca is not None else b""
        except OSError as exc:
            return self._fail(f"cannot read certificate files: {exc}")
        # The client CA is part of the identity: rotating it alone takes effect too.
        fingerprint = hashlib.sha256(cert_pem + b"\0" + key_pem + b"\0" + client_ca).hexdigest()
        if self.state is not None and fingerprint == self.state.fingerprint:
            self.last_error = None  # the live pair is back on disk (e.g. a broken rotation rolled back)
            return False
        try:
            expires_at = certificate_expiry(cert_pem)
            fresh = server_context(client_ca=self.client_ca)
            fresh.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, ValueError, OSError) as exc:
            return self._fail(f"new certificate rejected, still serving the previous one: {exc}")
        self._current = fresh
        self.state = CertificateState(fingerprint=fingerprint, expires_at=expires_at, loaded_at=time.time())
        self.last_error = None
        self.reloads += 1
        log.info("serving certificate loaded", extra={"expires_at": int(expires_at), "reloads": self.reloads})
        return True

    def _fail(self, message: str) -> bool:
        if message != self.last_error:
            log.error(message)
        self.last_error = message
        self.failures += 1
        return False
