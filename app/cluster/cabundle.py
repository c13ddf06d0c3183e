"""`podgraft certs patch-ca-bundle`: set the caBundle of every webhook of a MutatingWebhookConfiguration.

The patch is the `jsonpatch` diff between the configuration as read and a copy with every
`clientConfig.caBundle` set, behind a `test` of the resourceVersion read: a concurrent change makes
the API refuse the patch, and it is read and computed again (a few times at most).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonpatch

from app.certs import read_ca_bundle
from app.cluster.client import CALL_TIMEOUT, api_client, api_status, load_configuration, raw_json
from app.retry import Backoff, GaveUp, retry_call

CONFLICT_STATUSES = (400, 409, 422)  # a failed `test` (the apiserver's code for it varies) or a conflict


def ca_bundle_patch(configuration: Mapping[str, Any], bundle: str) -> list[dict[str, Any]]:
    """JSON Patch setting every webhook's clientConfig.caBundle to `bundle`; [] when all are current."""
    webhooks = configuration.get("webhooks") or []
    if not webhooks:
        name = (configuration.get("metadata") or {}).get("name", "?")
        raise ValueError(f"MutatingWebhookConfiguration {name} has no webhooks")
    wanted = copy.deepcopy(dict(configuration))
    for webhook in wanted["webhooks"]:
        webhook.setdefault("clientConfig", {})["caBundle"] = bundle
    ops: list[dict[str, Any]] = jsonpatch.make_patch(dict(configuration), wanted).patch
    if not ops:
        return []
    version = (configuration.get("metadata") or {}).get("resourceVersion")
    guard = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}] if version else []
    return guard + ops


def patch_ca_bundle(name: str, ca_path: Path, *, kubeconfig: Path | None = None, attempts: int = 3) -> bool:
    """Set the caBundle of every webhook of MutatingWebhookConfiguration `name`. True if it changed."""
    from kubernetes import client

    bundle = read_ca_bundle(ca_path)
    api: Any = client.AdmissionregistrationV1Api(api_client(load_configuration(kubeconfig)))

    def read_and_patch() -> bool:
        current = raw_json(api.read_mutating_webhook_configuration, name, _request_timeout=CALL_TIMEOUT)
        ops = ca_bundle_patch(current, bundle)
        if not ops:
            return False
        api.patch_mutating_webhook_configuration(
            name, ops, _content_type="application/json-patch+json", _request_timeout=CALL_TIMEOUT
        )
        return True

    try:
        return retry_call(
            read_and_patch,
            backoff=Backoff(initial=0.2, cap=1.0),
            retry_if=lambda exc: api_status(exc) in CONFLICT_STATUSES,
            attempts=attempts,
        )
    except GaveUp as exc:
        raise exc.last from None
