"""`podgraft serve`: build the policy sources and the app, and run uvicorn over TLS."""

from __future__ import annotations

import logging
import ssl

import uvicorn

from app import logs
from app.policy.sources import DirectorySource, NamespaceLookup, PolicySource
from app.server import create_app
from app.settings import Settings
from app.tls import CertificateReloader

log = logging.getLogger("podgraft")


def build_sources(settings: Settings) -> tuple[list[PolicySource], NamespaceLookup | None, Settings]:
    """Policy sources and namespace lookup for the configured mode (cluster mode also asks the version)."""
    if settings.policy_source == "directory":
        return [DirectorySource(settings.policy_dir)], None, settings
    from app.cluster import cluster_sources

    return cluster_sources(settings)


def serve(settings: Settings) -> int:
    logs.configure(settings.log_level)
    try:
        certs = CertificateReloader(
            settings.tls_cert_file, settings.tls_key_file, client_ca=settings.tls_client_ca_file
        )
    except (ssl.SSLError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    sources, namespaces, settings = build_sources(settings)
    app = create_app(settings, sources=sources, namespaces=namespaces, certs=certs)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=max(1, int(settings.request_timeout_seconds)),
        limit_concurrency=settings.max_concurrency * 4,
        server_header=False,
        date_header=False,
    )
    config.load()
    config.ssl = certs.context  # our context, so rotated certificates are picked up without a restart
    log.info(
        "podgraft listening",
        extra={
            "address": f"https://{settings.host}:{settings.port}",
            "policy_source": settings.policy_source,
        },
    )
    uvicorn.Server(config).run()
    return 0
