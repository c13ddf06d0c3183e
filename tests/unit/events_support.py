"""A fake Events API for the Events tests: it keeps the Events it is sent as the apiserver would
(create, then merge patches of `series`), answers GETs of ReplicaSets and Jobs from the objects it is
given, and can be told to fail or to hang until released."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from app.cluster.events import ObjectRef


class FakeEventsAPI:
    def __init__(self, objects: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None) -> None:
        self.objects = dict(objects or {})  # (kind, namespace, name) -> the object as the API returns it
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []  # (verb, event name or object)
        self.failures: list[Exception | None] = []  # raised by the next calls, in order (None: succeed)
        self.gate = threading.Event()  # cleared: every call hangs until it is set
        self.gate.set()
        self.entered = threading.Event()  # set when a call arrived (hung or not)
        self.lock = threading.Lock()

    def _enter(self, verb: str, what: str) -> None:
        self.entered.set()
        self.gate.wait()
        with self.lock:
            self.calls.append((verb, what))
            failure = self.failures.pop(0) if self.failures else None
            if failure is not None:
                raise failure

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self._enter("create", name)
        assert body["metadata"]["namespace"] == namespace == body["regarding"]["namespace"]
        if (namespace, name) in self.events:
            raise ApiException(status=409, reason="AlreadyExists")
        self.events[(namespace, name)] = copy.deepcopy(body)
        return body

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._enter("patch", name)
        event = self.events.get((namespace, name))
        if event is None:
            raise ApiException(status=404, reason="NotFound")
        assert set(body) == {"series"}, body  # the only field a series update may change
        event["series"] = copy.deepcopy(body["series"])
        return event

    def get(self, ref: ObjectRef) -> dict[str, Any]:
        self._enter("get", f"{ref.kind}/{ref.name}")
        obj = self.objects.get((ref.kind, ref.namespace, ref.name))
        if obj is None:
            raise ApiException(status=404, reason="NotFound")
        return dict(obj)

    def count(self, event: Mapping[str, Any]) -> int:
        series = event.get("series")
        return int(series["count"]) if series else 1

    def on(self, kind: str, name: str) -> list[dict[str, Any]]:
        """The Events regarding `kind/name`."""
        return [
            e
            for e in self.events.values()
            if (e["regarding"]["kind"], e["regarding"]["name"]) == (kind, name)
        ]


def owned(
    kind: str, name: str, uid: str, owner: tuple[str, str, str, str] | None, namespace: str = "shop"
) -> dict[str, Any]:
    """An object as the API returns it, controlled by `owner` = (apiVersion, kind, name, uid)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid}
    if owner is not None:
        api_version, owner_kind, owner_name, owner_uid = owner
        metadata["ownerReferences"] = [
            {
                "apiVersion": api_version,
                "kind": owner_kind,
                "name": owner_name,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {"kind": kind, "metadata": metadata}
