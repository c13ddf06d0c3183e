"""The admission decision for one request: Pod CREATE is injected, an ephemeral-container update gets
the debug rules, anything else is allowed unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from app.admission.responses import AdmissionResponse, allowed, denied, patched
from app.admission.review import AdmissionRequest
from app.engine.config import EngineConfig
from app.engine.inject import InjectionResult, graft_ephemeral, inject_pod
from app.engine.policyset import PolicySet


class Verdict:
    """What the admission step decided, for the HTTP layer (response) and for metrics and logs."""

    __slots__ = ("outcome", "response", "result")

    def __init__(
        self, response: AdmissionResponse, outcome: str, result: InjectionResult | None = None
    ) -> None:
        self.response: Final = response
        self.outcome: Final = outcome  # patched | allowed | denied | skipped | ignored
        self.result: Final = result


def decide(
    request: AdmissionRequest,
    *,
    policies: PolicySet,
    config: EngineConfig,
    namespace_labels: Mapping[str, str] | None,
) -> Verdict:
    """Route one request (see the module doc)."""
    uid = request.uid
    if not request.is_pod() or request.object is None:
        return Verdict(allowed(uid), "ignored")
    if request.operation == "CREATE" and request.sub_resource == "":
        result = inject_pod(
            request.object,
            namespace=request_namespace(request),
            namespace_labels=namespace_labels,
            policies=policies,
            config=config,
        )
    elif request.operation == "UPDATE" and request.sub_resource == "ephemeralcontainers":
        result = graft_ephemeral(
            request.object,
            request.old_object or {},
            namespace=request_namespace(request),
            namespace_labels=namespace_labels,
            policies=policies,
            config=config,
        )
    else:
        return Verdict(allowed(uid), "ignored")
    if result.denial is not None:
        return Verdict(denied(uid, result.denial, warnings=result.warnings), "denied", result)
    if result.skip_reason is not None:
        return Verdict(allowed(uid), "skipped", result)
    if result.patch:
        return Verdict(patched(uid, result.patch, warnings=result.warnings), "patched", result)
    return Verdict(allowed(uid, warnings=result.warnings), "allowed", result)


def request_namespace(request: AdmissionRequest) -> str:
    """`request.namespace` is authoritative: pods made by controllers have none in their metadata."""
    if request.namespace:
        return request.namespace
    metadata = (request.object or {}).get("metadata") or {}
    value = metadata.get("namespace") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) and value else "default"
