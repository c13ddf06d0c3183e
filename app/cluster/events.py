"""Kubernetes Events, which `kubectl describe` and `kubectl events` show.

- Warning Events on a policy ConfigMap (core/v1, reason `PolicyRejected`) when one of its keys is
  rejected: `warning_event`, `EventRecorder`. A courtesy to the user: posting one may fail and is
  never retried.
- Events on workloads (events.k8s.io/v1, `reportingController: podgraft.io/webhook`): the bodies
  (`new_event`, `series_patch`) and `EventsClient`, the blocking calls that write them and read a
  ReplicaSet or Job for its owner. `app.cluster.reporter` decides what to write and when.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from typing import Any

from app.cluster.client import CALL_TIMEOUT, COMPONENT, api_client

MAX_EVENT_MESSAGE = 1024  # bytes the API accepts in an events.k8s.io Event's `note`
TRUNCATED = " [truncated]"
REPORTING_CONTROLLER = "podgraft.io/webhook"
MAX_FIELD = 128  # reportingController, reportingInstance, action, reason
MAX_NAME = 253


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an Event is about (`involvedObject`, `regarding`, `related`)."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    api_version: str = "v1"

    def reference(self) -> dict[str, str]:
        """As an ObjectReference in an events.k8s.io Event."""
        ref = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }
        if self.uid:
            ref["uid"] = self.uid
        return ref


def bounded_message(message: str, limit: int = MAX_EVENT_MESSAGE) -> str:
    """`message` in at most `limit` UTF-8 bytes; a longer one is cut and ends with ` [truncated]`."""
    data = message.encode()
    if len(data) <= limit:
        return message
    kept = data[: limit - len(TRUNCATED)].decode(errors="ignore")  # never half a character
    return kept + TRUNCATED


def micro_time(timestamp: float) -> str:
    """A MicroTime (`2026-12-03T10:04:05.123456Z`) from a Unix timestamp."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_name(regarding: ObjectRef, nanoseconds: int) -> str:
    """`<regarding name>.<nanoseconds, hex>`, as client-go names Events."""
    suffix = f".{nanoseconds:x}"
    return regarding.name[: MAX_NAME - len(suffix)] + suffix


def warning_event(
    ref: ObjectRef, reason: str, message: str, *, now: dt.datetime, instance: str
) -> dict[str, Any]:
    """A core/v1 Warning Event on `ref`, from Podgraft's replica `instance`."""
    timestamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
        "involvedObject": {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "uid": ref.uid,
            "resourceVersion": ref.resource_version,
        },
        "reason": reason,
        "message": bounded_message(message),
        "type": "Warning",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:MAX_FIELD],
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


def new_event(
    *,
    name: str,
    regarding: ObjectRef,
    related: ObjectRef | None,
    type_: str,
    reason: str,
    action: str,
    note: str,
    instance: str,
    first: float,
    last: float,
    count: int,
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event in the regarding object's namespace; a count of 2 or more is a series."""
    body: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": regarding.namespace},
        "eventTime": micro_time(first),
        "regarding": regarding.reference(),
        "type": type_,
        "reason": reason[:MAX_FIELD],
        "action": action[:MAX_FIELD],
        "note": bounded_message(note),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:MAX_FIELD],
    }
    if related is not None:
        body["related"] = related.reference()
    if count >= 2:
        body["series"] = series_patch(count, last)["series"]
    return body


def series_patch(count: int, last: float) -> dict[str, Any]:
    """The merge patch that brings an Event's series to `count`, last observed at `last`."""
    return {"series": {"count": count, "lastObservedTime": micro_time(last)}}


class EventRecorder:
    """Posts core/v1 Warning Events through the API (blocking: call it on a worker thread)."""

    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration
        self._core: Any = None

    def warn(self, ref: ObjectRef, reason: str, message: str) -> None:
        from kubernetes import client

        if self._core is None:
            self._core = client.CoreV1Api(api_client(self.configuration))
        body = warning_event(ref, reason, message, now=dt.datetime.now(dt.UTC), instance=socket.gethostname())
        self._core.create_namespaced_event(ref.namespace, body, _request_timeout=CALL_TIMEOUT)


OWNER_PATHS = {  # (API group, kind) -> the resource path of one object
    ("apps", "ReplicaSet"): "/apis/{apiVersion}/namespaces/{namespace}/replicasets/{name}",
    ("batch", "Job"): "/apis/{apiVersion}/namespaces/{namespace}/jobs/{name}",
}


class EventsClient:
    """events.k8s.io Events written, ReplicaSets and Jobs read: raw JSON over one connection pool
    (blocking: one thread uses it). Errors raise `ApiException` (with the HTTP status) or the
    transport's exception."""

    def __init__(self, configuration: Any) -> None:
        self.api = api_client(configuration)

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "POST", "/apis/events.k8s.io/v1/namespaces/{namespace}/events", {"namespace": namespace}, body
        )

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "PATCH",
            "/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}",
            {"namespace": namespace, "name": name},
            body,
            content_type="application/merge-patch+json",
        )

    def get(self, ref: ObjectRef) -> dict[str, Any]:
        path = OWNER_PATHS[(ref.api_version.rpartition("/")[0], ref.kind)]
        return self._call(
            "GET", path, {"apiVersion": ref.api_version, "namespace": ref.namespace, "name": ref.name}
        )

    def _call(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: dict[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        import orjson
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method=method,
            resource_path=path.replace("{apiVersion}", params.pop("apiVersion", "")),
            path_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=CALL_TIMEOUT)
        data = response.read()
        if not 200 <= int(response.status) <= 299:
            raise ApiException(status=int(response.status), reason=str(response.reason), body=data[:2000])
        result: dict[str, Any] = orjson.loads(data) if data else {}
        return result
