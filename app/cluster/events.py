"""Kubernetes Events: Warning Events on an object, which `kubectl describe` shows.

Podgraft records one when a policy ConfigMap key is rejected (reason `PolicyRejected`). An Event is
a courtesy to the user: posting one may fail and is never retried.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from typing import Any

from app.cluster.client import CALL_TIMEOUT, COMPONENT, api_client

MAX_EVENT_MESSAGE = 1024  # what the API accepts for an Event's message (note)


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an Event is about (`involvedObject`)."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    api_version: str = "v1"


def bounded_message(message: str) -> str:
    if len(message) > MAX_EVENT_MESSAGE:
        return message[: MAX_EVENT_MESSAGE - 3] + "..."
    return message


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
        "reportingInstance": instance[:128],
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


class EventRecorder:
    """Posts Warning Events through the API (blocking: call it on a worker thread)."""

    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration
        self._core: Any = None

    def warn(self, ref: ObjectRef, reason: str, message: str) -> None:
        from kubernetes import client

        if self._core is None:
            self._core = client.CoreV1Api(api_client(self.configuration))
        body = warning_event(ref, reason, message, now=dt.datetime.now(dt.UTC), instance=socket.gethostname())
        self._core.create_namespaced_event(ref.namespace, body, _request_timeout=CALL_TIMEOUT)
