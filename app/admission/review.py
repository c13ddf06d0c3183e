"""AdmissionReview requests: decoded and checked, or refused as a `BadReview` with a specific message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

from app.policy.messages import kind_of

V1 = "admission.k8s.io/v1"
V1BETA1 = "admission.k8s.io/v1beta1"
VERSIONS = (V1, V1BETA1)
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
MAX_DEPTH = 64


class BadReview(ValueError):
    """The webhook request itself is unusable; answered with an HTTP 4xx."""

    def __init__(self, message: str, *, status: int = 400, api_version: str = V1, uid: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.api_version = api_version
        self.uid = uid


class AdmissionRequest:
    """The checked `request` of an AdmissionReview. (A plain class with `Final` attributes, like the
    engine's per-request values: see `app.engine.select.PolicyDecision`.)"""

    __slots__ = (
        "api_version",
        "dry_run",
        "kind",
        "name",
        "namespace",
        "object",
        "old_object",
        "operation",
        "resource",
        "sub_resource",
        "uid",
    )

    def __init__(
        self,
        *,
        api_version: str,
        uid: str,
        kind: Mapping[str, Any],
        resource: Mapping[str, Any],
        sub_resource: str,
        operation: Operation,
        namespace: str,
        name: str,
        object: Mapping[str, Any] | None,
        old_object: Mapping[str, Any] | None,
        dry_run: bool,
    ) -> None:
        self.api_version: Final = api_version
        self.uid: Final = uid
        self.kind: Final = kind
        self.resource: Final = resource
        self.sub_resource: Final = sub_resource
        self.operation: Final = operation
        self.namespace: Final = namespace
        self.name: Final = name
        self.object: Final = object
        self.old_object: Final = old_object
        self.dry_run: Final = dry_run

    def is_pod(self) -> bool:
        return self.resource.get("group", "") == "" and self.resource.get("resource") == "pods"

    def pod_label(self) -> str:
        """The pod's name for logs: its name, or its generateName prefix while it has none."""
        metadata = (self.object or {}).get("metadata") or {}
        if not isinstance(metadata, dict):
            return self.name
        return str(metadata.get("name") or self.name or str(metadata.get("generateName") or "") + "*")


def _deeper(value: object, levels: int) -> bool:
    """Whether containers nest in `value` more than `levels` further levels down (scalars, most of a
    pod, cost one type check each)."""
    children = value.values() if type(value) is dict else value if type(value) is list else ()
    for child in children:
        if (type(child) is dict or type(child) is list) and (levels == 0 or _deeper(child, levels - 1)):
            return True
    return False


def _shallow_enough(request: Mapping[str, Any]) -> bool:
    """Nesting limit on the envelope and on the objects' metadata (the parts the engine walks).

    Specs are not walked here (a full walk costs as much as the rest of a request): nothing in the
    engine recurses through a spec, and the JSON parser refuses nesting beyond 1024 levels.
    """
    for key, value in request.items():
        if key not in ("object", "oldObject"):
            parts = [value]
        elif type(value) is dict:
            parts = [item for name, item in value.items() if name != "spec"]
        else:
            continue  # refused below: not an object
        # `part` is one level below its root (the envelope, or the object): MAX_DEPTH - 1 more below it
        if any(_deeper(part, MAX_DEPTH - 1) for part in parts if type(part) is dict or type(part) is list):
            return False
    return True


def _optional_mapping(
    request: Mapping[str, Any], key: str, version: str, uid: str
) -> Mapping[str, Any] | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadReview(
            f"request.{key} must be an object, got {kind_of(value)}", api_version=version, uid=uid
        )
    return value


def parse_review(body: bytes) -> AdmissionRequest:
    """Decode and check an AdmissionReview body. Raises `BadReview` with a specific message."""
    if not body:
        raise BadReview("empty body: expected an AdmissionReview")
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadReview(f"body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise BadReview(f"expected an AdmissionReview object, got {kind_of(review)}")
    version = review.get("apiVersion")
    if version is None:
        raise BadReview(f"apiVersion missing: expected an AdmissionReview of {V1} or {V1BETA1}")
    if version not in VERSIONS:
        raise BadReview(f"unsupported apiVersion {str(version)[:80]!r}; expected {V1} or {V1BETA1}")
    if review.get("kind") != "AdmissionReview":
        raise BadReview(
            f"unsupported kind {str(review.get('kind'))[:80]!r}; expected AdmissionReview",
            api_version=version,
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("the AdmissionReview has no request object", api_version=version)
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid is missing or not a string", api_version=version)
    if len(uid) > 256:
        raise BadReview("request.uid is longer than 256 characters", api_version=version)
    if not _shallow_enough(request):
        raise BadReview(f"request is nested deeper than {MAX_DEPTH} levels", api_version=version, uid=uid)
    operation = request.get("operation")
    if operation not in OPERATIONS:
        raise BadReview(
            f"request.operation {str(operation)[:40]!r} is not one of {', '.join(OPERATIONS)}",
            api_version=version,
            uid=uid,
        )
    kind = request.get("kind")
    resource = request.get("resource")
    if not isinstance(kind, dict) or not isinstance(resource, dict):
        raise BadReview("request.kind and request.resource must be objects", api_version=version, uid=uid)
    # Absent or null reads as empty; any other non-string (even a falsy 0, false, [] or {}) is refused.
    texts = {
        key: "" if request.get(key) is None else request[key] for key in ("subResource", "namespace", "name")
    }
    for key, value in texts.items():
        if not isinstance(value, str):
            raise BadReview(f"request.{key} must be a string", api_version=version, uid=uid)
    obj = _optional_mapping(request, "object", version, uid)
    old = _optional_mapping(request, "oldObject", version, uid)
    if operation in ("CREATE", "UPDATE") and obj is None:
        raise BadReview(f"request.object is required for {operation}", api_version=version, uid=uid)
    return AdmissionRequest(
        api_version=version,
        uid=uid,
        kind=kind,
        resource=resource,
        sub_resource=texts["subResource"],
        operation=operation,
        namespace=texts["namespace"],
        name=texts["name"],
        object=obj,
        old_object=old,
        dry_run=bool(request.get("dryRun")),
    )
