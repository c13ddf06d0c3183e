"""`podgraft rollout` and `podgraft explain` against a cluster: workloads read and restarted, their
pods, ReplicaSets, ControllerRevisions and PodDisruptionBudgets, a server-side dry-run create, the
mutating webhook configurations and admission policies.

`Workloads` implements `app.rollout.runner.RolloutApi`: every call is one blocking request of raw
JSON; a failed call raises `ApiError` with the apiserver's own message (the `Status` it answered).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from app.audit.owners import Owner
from app.cluster.client import CALL_TIMEOUT, api_client, api_status, raw_json
from app.cluster.watch import list_pages
from app.rollout.runner import ApiError

HTTP_NOT_FOUND, HTTP_FORBIDDEN = 404, 403
MERGE_PATCH = "application/merge-patch+json"
_READERS = {"Deployment": "deployment", "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}
TEMPLATE_KINDS = {  # what `podgraft explain KIND/NAME` reads: (API group, client method suffix)
    "Pod": ("core", "pod"),
    "Deployment": ("apps", "deployment"),
    "StatefulSet": ("apps", "stateful_set"),
    "DaemonSet": ("apps", "daemon_set"),
    "ReplicaSet": ("apps", "replica_set"),
    "Job": ("batch", "job"),
    "CronJob": ("batch", "cron_job"),
}


def api_message(exc: BaseException) -> str:
    """The apiserver's message for a failed call (its `Status.message`), else a short description."""
    body = getattr(exc, "body", None)
    if body:
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
            message = orjson.loads(body).get("message")
            if isinstance(message, str) and message:
                return message[:500]
    status, reason = api_status(exc), getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"[:500]


class Workloads:
    """The API calls of `podgraft rollout` and `podgraft explain` (one client, blocking calls)."""

    def __init__(self, configuration: Any) -> None:
        from kubernetes import client

        api = api_client(configuration)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.admission_policies: list[Any] = [
            client.AdmissionregistrationV1beta1Api(api),
            client.AdmissionregistrationV1alpha1Api(api),
        ]

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return raw_json(function, *args, _request_timeout=CALL_TIMEOUT, **kwargs)
        except Exception as exc:
            raise ApiError(api_status(exc), api_message(exc)) from exc

    def _items(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            return [item for page, _ in list_pages(function, *args, **kwargs) for item in page]
        except Exception as exc:
            raise ApiError(api_status(exc), api_message(exc)) from exc

    # --- RolloutApi --------------------------------------------------------------------------------

    def workload(self, owner: Owner) -> dict[str, Any] | None:
        return self.read(owner.kind, owner.namespace, owner.name)

    def read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object of a kind `podgraft explain` or `rollout` reads (None when it does not exist)."""
        group, suffix = TEMPLATE_KINDS[kind]
        api = {"core": self.core, "apps": self.apps, "batch": self.batch}[group]
        try:
            found: dict[str, Any] = self._call(getattr(api, f"read_namespaced_{suffix}"), name, namespace)
        except ApiError as exc:
            if exc.status == HTTP_NOT_FOUND:
                return None
            raise
        return found

    def restart(self, owner: Owner, patch: Mapping[str, Any]) -> dict[str, Any]:
        function = getattr(self.apps, f"patch_namespaced_{_READERS[owner.kind]}")
        patched: dict[str, Any] = self._call(
            function, owner.name, owner.namespace, dict(patch), _content_type=MERGE_PATCH
        )
        return patched

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._items(self.core.list_namespaced_pod, namespace, label_selector=selector)

    def replicasets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._items(self.apps.list_namespaced_replica_set, namespace, label_selector=selector)

    def revisions(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._items(self.apps.list_namespaced_controller_revision, namespace, label_selector=selector)

    def budgets(self, namespace: str) -> list[dict[str, Any]]:
        return self._items(self.policy.list_namespaced_pod_disruption_budget, namespace)

    def dry_run_pod(self, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self._call(
            self.core.create_namespaced_pod, namespace, dict(pod), dry_run="All"
        )
        return created

    def webhooks(self) -> list[dict[str, Any]] | None:
        """The MutatingWebhookConfigurations; None when listing them is forbidden."""
        try:
            return self._items(self.admission.list_mutating_webhook_configuration)
        except ApiError as exc:
            if exc.status == HTTP_FORBIDDEN:
                return None
            raise

    # --- explain -----------------------------------------------------------------------------------

    def admission_policies_listed(self) -> tuple[list[str], str]:
        """Names of the MutatingAdmissionPolicies (v1beta1, else v1alpha1), and a note when they
        cannot be listed (not served by this apiserver, or forbidden)."""
        for api in self.admission_policies:
            try:
                items = self._items(api.list_mutating_admission_policy)
            except ApiError as exc:
                if exc.status == HTTP_NOT_FOUND:
                    continue
                return [], f"MutatingAdmissionPolicies cannot be listed: {exc}"
            return sorted(str((i.get("metadata") or {}).get("name")) for i in items), ""
        return [], "this apiserver serves no MutatingAdmissionPolicy API"

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels through `list` (the audit's permission): None when it is not there."""
        items = self._items(self.core.list_namespace, field_selector=f"metadata.name={name}")
        if not items:
            return None
        return {str(k): str(v) for k, v in ((items[0].get("metadata") or {}).get("labels") or {}).items()}
