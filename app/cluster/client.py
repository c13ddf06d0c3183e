"""The Kubernetes client: configuration (kubeconfig or in-cluster), API clients, timeouts, errors.

Every module of `app.cluster` reaches the API through the official (synchronous) client made here;
nothing else in Podgraft imports `kubernetes`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPONENT = "podgraft"  # user agent, Event source
LIST_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds
CALL_TIMEOUT = (10.0, 30.0)
HTTP_GONE = 410


class ClusterError(RuntimeError):
    """The Kubernetes API could not be used for something Podgraft cannot start without."""


def load_configuration(kubeconfig: Path | None) -> Any:
    """A client Configuration: the given kubeconfig, else in-cluster, else the default kubeconfig."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
        return configuration
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def context_namespace(kubeconfig: Path | None) -> str:
    """The namespace of the kubeconfig's current context (as kubectl chooses it), else `default`."""
    from kubernetes import config

    try:
        _contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
    except Exception:  # in-cluster, or no kubeconfig: kubectl's default
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def api_client(configuration: Any) -> Any:
    """An `ApiClient` (one connection pool; make one per thread) that says it is Podgraft."""
    from kubernetes import client

    api = client.ApiClient(configuration)
    api.user_agent = COMPONENT
    return api


def raw_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a generated API function for its raw response (a urllib3 response: `.data` holds the JSON,
    or read it as a stream), without the client's model objects: Podgraft reads the JSON itself,
    which costs a fraction of the memory and time. An error status raises `ApiException`."""
    from kubernetes.client.exceptions import ApiException

    response = function(*args, _preload_content=False, **kwargs)
    if not 200 <= int(response.status) <= 299:
        body = response.data.decode("utf-8", "replace")[:2000]
        response.release_conn()
        raise ApiException(status=int(response.status), reason=str(response.reason), body=body)
    return response


def raw_json(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`raw_call`, read whole and decoded: the JSON object the API answered."""
    import orjson

    response = raw_call(function, *args, **kwargs)
    try:
        return orjson.loads(response.data)
    finally:
        response.release_conn()


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed API call, None for anything else (network, timeouts, bugs)."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def describe(exc: BaseException) -> str:
    """A short, log-safe description of a failed call."""
    status = api_status(exc)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"[:500]
