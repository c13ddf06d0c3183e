"""AdmissionReview parsing, the admission decision, and named response constructors.

Two error channels (as in kopf and controller-runtime):
- the *webhook request* is bad (not JSON, not an AdmissionReview, no uid): `BadReview`, which the
  HTTP layer answers with a 4xx whose body is an AdmissionReview-shaped error;
- the *operation under review* is refused (a required policy cannot be honoured, a disallowed
  debug image): `allowed: false` with a status message, in a normal 200 AdmissionReview.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.engine.config import EngineConfig
from app.engine.inject import InjectionResult, graft_ephemeral, inject_pod
from app.engine.policyset import PolicySet

V1 = "admission.k8s.io/v1"
V1BETA1 = "admission.k8s.io/v1beta1"
VERSIONS = (V1, V1BETA1)
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
MAX_WARNINGS = 20
MAX_WARNING_CHARS = 256
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_DEPTH = 64


class BadReview(ValueError):
    """The webhook request itself is unusable; answered with an HTTP 4xx."""

    def __init__(self, message: str, *, status: int = 400, api_version: str = V1, uid: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.api_version = api_version
        self.uid = uid


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    api_version: str
    uid: str
    kind: Mapping[str, Any]
    resource: Mapping[str, Any]
    sub_resource: str
    operation: Operation
    namespace: str
    name: str
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None
    dry_run: bool

    def is_pod(self) -> bool:
        return self.resource.get("group", "") == "" and self.resource.get("resource") == "pods"

    def pod_label(self) -> str:
        """The pod's name for logs: its name, or its generateName prefix while it has none."""
        metadata = (self.object or {}).get("metadata") or {}
        if not isinstance(metadata, dict):
            return self.name
        return str(metadata.get("name") or self.name or str(metadata.get("generateName") or "") + "*")


def _depth_ok(value: object, limit: int) -> bool:
    """Breadth-first over containers only (scalars are most of a pod and cost nothing here)."""
    level = [value]
    for _ in range(limit + 1):
        below: list[object] = []
        for item in level:
            children = item.values() if type(item) is dict else item if type(item) is list else ()
            below.extend(c for c in children if type(c) is dict or type(c) is list)
        if not below:
            return True
        level = below
    return False


def _shallow_enough(request: Mapping[str, Any]) -> bool:
    """Nesting limit on the envelope and on the objects' metadata (the parts the engine walks).

    Specs are not walked here (a full walk costs as much as the rest of a request): nothing in the
    engine recurses through a spec, and the JSON parser refuses nesting beyond 1024 levels.
    """
    envelope = {k: v for k, v in request.items() if k not in ("object", "oldObject")}
    parts: list[object] = [envelope]
    for key in ("object", "oldObject"):
        obj = request.get(key)
        if isinstance(obj, dict):
            parts.append({k: v for k, v in obj.items() if k != "spec"})
    return all(_depth_ok(part, MAX_DEPTH) for part in parts)


def _optional_mapping(
    request: Mapping[str, Any], key: str, version: str, uid: str
) -> Mapping[str, Any] | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadReview(
            f"request.{key} must be an object, got {type(value).__name__}", api_version=version, uid=uid
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
        raise BadReview(f"expected an AdmissionReview object, got a JSON {type(review).__name__}")
    version = review.get("apiVersion")
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


# --- response constructors ------------------------------------------------------------------------


def clean_warnings(warnings: tuple[str, ...] | list[str]) -> list[str]:
    """Printable, bounded warnings (the apiserver relays them as HTTP headers)."""
    cleaned = []
    for warning in warnings[:MAX_WARNINGS]:
        text = _UNPRINTABLE.sub("?", warning)
        cleaned.append(text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 3] + "...")
    if len(warnings) > MAX_WARNINGS:
        cleaned.append(f"podgraft: {len(warnings) - MAX_WARNINGS} more warnings not shown")
    return cleaned


def allowed(uid: str, *, warnings: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if warnings:
        response["warnings"] = clean_warnings(warnings)
    return response


def patched(
    uid: str, patch: list[dict[str, Any]], *, warnings: tuple[str, ...] | list[str] = ()
) -> dict[str, Any]:
    response = allowed(uid, warnings=warnings)
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(patch)).decode()
    return response


def denied(
    uid: str,
    message: str,
    *,
    code: int = 403,
    reason: str = "Forbidden",
    warnings: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "uid": uid,
        "allowed": False,
        "status": {"code": code, "reason": reason, "message": message},
    }
    if warnings:
        response["warnings"] = clean_warnings(warnings)
    return response


def errored(uid: str, code: int, message: str) -> dict[str, Any]:
    """An internal failure on one request. The webhook's failurePolicy decides what the apiserver does."""
    return denied(uid, message, code=code, reason="InternalError")


def review(api_version: str, response: Mapping[str, Any]) -> dict[str, Any]:
    """Wrap a response in an AdmissionReview of the version the request came in."""
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": dict(response)}


def bad_review_body(error: BadReview) -> dict[str, Any]:
    """The body of a 4xx: an AdmissionReview-shaped error with the specific message."""
    return review(
        error.api_version,
        {
            "uid": error.uid,
            "allowed": False,
            "status": {
                "code": error.status,
                "reason": "BadRequest" if error.status == 400 else "Error",
                "message": error.message,
            },
        },
    )


# --- the admission decision -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What the admission step decided, for the HTTP layer (response) and for metrics and logs."""

    response: dict[str, Any]
    outcome: str  # patched | allowed | denied | skipped | ignored
    result: InjectionResult | None = None


def decide(
    request: AdmissionRequest,
    *,
    policies: PolicySet,
    config: EngineConfig,
    namespace_labels: Mapping[str, str] | None,
) -> Decision:
    """Route one request: Pod CREATE is injected, an ephemeral-container update gets the debug rules,
    anything else is allowed unchanged."""
    uid = request.uid
    if not request.is_pod() or request.object is None:
        return Decision(allowed(uid), "ignored")
    if request.operation == "CREATE" and request.sub_resource == "":
        result = inject_pod(
            request.object,
            namespace=_namespace(request),
            namespace_labels=namespace_labels,
            policies=policies,
            config=config,
        )
    elif request.operation == "UPDATE" and request.sub_resource == "ephemeralcontainers":
        result = graft_ephemeral(
            request.object,
            request.old_object or {},
            namespace=_namespace(request),
            namespace_labels=namespace_labels,
            policies=policies,
            config=config,
        )
    else:
        return Decision(allowed(uid), "ignored")
    if result.denial is not None:
        return Decision(denied(uid, result.denial, warnings=result.warnings), "denied", result)
    if result.skip_reason is not None:
        return Decision(allowed(uid), "skipped", result)
    if result.patch:
        return Decision(patched(uid, result.patch, warnings=result.warnings), "patched", result)
    return Decision(allowed(uid, warnings=result.warnings), "allowed", result)


def _namespace(request: AdmissionRequest) -> str:
    """`request.namespace` is authoritative: pods made by controllers have none in their metadata."""
    if request.namespace:
        return request.namespace
    metadata = (request.object or {}).get("metadata") or {}
    value = metadata.get("namespace") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and value else "default"


class DecisionCache:
    """Recent Pod CREATE decisions, keyed by everything the engine reads.

    The pods of one ReplicaSet reach the webhook byte-identical (no name yet, the same
    `generateName`, labels, owner and spec), so a scale-up of N replicas is decided once and
    answered N times. The key is a hash of the pod object, the namespace and the namespace's
    labels; an entry is only used with the very `PolicySet` it was computed with, so a policy
    change invalidates everything at once. Least recently used entries are dropped past `size`.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.hits = 0
        self._entries: OrderedDict[bytes, tuple[PolicySet, Decision]] = OrderedDict()

    def _key(self, request: AdmissionRequest, namespace_labels: Mapping[str, str] | None) -> bytes:
        digest = hashlib.blake2b(orjson.dumps(request.object), digest_size=20)
        digest.update(b"\0" + _namespace(request).encode())
        if namespace_labels is not None:
            digest.update(b"\0" + orjson.dumps(sorted(namespace_labels.items())))
        return digest.digest()

    def decide(
        self,
        request: AdmissionRequest,
        *,
        policies: PolicySet,
        config: EngineConfig,
        namespace_labels: Mapping[str, str] | None,
    ) -> Decision:
        """`decide()`, answered from the cache when the same pod was decided with the same policies."""
        if self.size <= 0 or request.operation != "CREATE" or request.sub_resource or not request.is_pod():
            return decide(request, policies=policies, config=config, namespace_labels=namespace_labels)
        try:
            key = self._key(request, namespace_labels)
        except (TypeError, orjson.JSONEncodeError):  # not re-serialisable (huge ints...): no caching
            return decide(request, policies=policies, config=config, namespace_labels=namespace_labels)
        entry = self._entries.get(key)
        if entry is not None and entry[0] is policies:
            self._entries.move_to_end(key)
            self.hits += 1
            cached = entry[1]
            return Decision({**cached.response, "uid": request.uid}, cached.outcome, cached.result)
        decision = decide(request, policies=policies, config=config, namespace_labels=namespace_labels)
        self._entries[key] = (policies, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return decision
