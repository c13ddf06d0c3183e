"""Version discovery: which Kubernetes the API server runs (it decides what `sidecarMode: auto` means)."""

from __future__ import annotations

import logging
from typing import Any

from app.cluster.client import CALL_TIMEOUT, ClusterError, api_client, describe
from app.retry import Backoff, GaveUp, retry_call

log = logging.getLogger("podgraft.cluster")


def discover_version(
    configuration: Any, *, deadline_seconds: float = 30.0, backoff: Backoff | None = None
) -> str:
    """The API server's gitVersion (e.g. v1.35.4), retried with backoff until `deadline_seconds`."""
    from kubernetes import client

    api = client.VersionApi(api_client(configuration))

    def on_retry(exc: Exception, delay: float) -> None:
        log.warning(
            "asking the API server for its version failed; retrying",
            extra={"error": describe(exc), "retry_in_seconds": round(delay, 2)},
        )

    try:
        info = retry_call(
            lambda: api.get_code(_request_timeout=CALL_TIMEOUT),
            backoff=backoff or Backoff(initial=0.5, cap=5.0),
            deadline_seconds=deadline_seconds,
            on_retry=on_retry,
        )
    except GaveUp as exc:
        raise ClusterError(
            f"cannot ask the API server for its version ({describe(exc.last)}); "
            "set PODGRAFT_KUBERNETES_VERSION (or --kubernetes-version) to skip the question"
        ) from exc.last
    return str(info.git_version)
