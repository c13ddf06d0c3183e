"""What the caller may do: SelfSubjectAccessReviews, one per permission a command needs, so that a
command names every missing permission before it starts instead of failing halfway."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.cluster.client import CALL_TIMEOUT, api_client, raw_json

CLUSTER_SCOPED = frozenset(["namespaces", "mutatingwebhookconfigurations", "mutatingadmissionpolicies"])


@dataclass(frozen=True, slots=True)
class Need:
    """One permission: `verb` on `resource` of API `group` in `namespace` ("" : cluster-wide)."""

    verb: str
    resource: str
    group: str = ""
    namespace: str = ""
    why: str = ""
    without: str = ""  # what the command does without it ("" : it cannot run)

    def text(self) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.resource in CLUSTER_SCOPED:
            where = "(cluster-wide)"
        else:
            where = f"in namespace {self.namespace}" if self.namespace else "in all namespaces"
        return f"{self.verb} {resource} {where}"


def review(need: Need) -> dict[str, Any]:
    """The SelfSubjectAccessReview asking for `need`."""
    attributes = {"verb": need.verb, "resource": need.resource, "group": need.group}
    if need.namespace:
        attributes["namespace"] = need.namespace
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }


def denied(configuration: Any, needs: Iterable[Need]) -> list[Need]:
    """The needs the apiserver says the caller does not have (each asked once)."""
    from kubernetes import client

    api = client.AuthorizationV1Api(api_client(configuration))
    missing: list[Need] = []
    for need in dict.fromkeys(needs):
        answer = raw_json(api.create_self_subject_access_review, review(need), _request_timeout=CALL_TIMEOUT)
        if not (answer.get("status") or {}).get("allowed"):
            missing.append(need)
    return missing
