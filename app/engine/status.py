"""The status annotation (`podgraft.io/status`): what Podgraft says it injected, for people and tools.

Podgraft writes it: `{"policies": [{"name": ..., "hash": ...}], "containers": [...], "inputs": {...}}`,
the policies whose injection is present and current in the pod, with their content hashes, the
containers those policies put there, and (when their templates read any) the pod values that can
change after admission, as the templates saw them (`inputs`, see `app.engine.inputs`: the audit
renders with them). It is never evidence: on CREATE the annotation is whatever the pod's author
wrote. Podgraft reads it for one thing only, to tell a pod that carries an older version of a policy
(whose items it may replace with the live ones) from a pod that has same-named items of its own
(a conflict), and the audit reads its `inputs` to render a policy for the pod as it was admitted.
Whether a policy is injected is decided from the pod's contents (`presence`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

MAX_ENTRIES = 256


def read_status(annotations: Mapping[str, Any], key: str) -> dict[str, str]:
    """Policies the annotation names (name -> hash). Garbage reads as empty; only the first
    `MAX_ENTRIES` entries are read."""
    return read(annotations, key)[0]


def read_inputs(annotations: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The `inputs` the annotation recorded (a map), or None (absent, or not a Podgraft status)."""
    return read(annotations, key)[1]


def read(annotations: Mapping[str, Any], key: str) -> tuple[dict[str, str], dict[str, Any] | None]:
    """(`read_status`, `read_inputs`) of the annotation, parsed once."""
    raw = annotations.get(key)
    if not isinstance(raw, str) or not raw:
        return {}, None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}, None
    if not isinstance(data, dict):
        return {}, None
    entries = data.get("policies")
    claims = (
        {
            entry["name"]: entry["hash"]
            for entry in entries[:MAX_ENTRIES]
            if isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("hash"), str)
        }
        if isinstance(entries, list)
        else {}
    )
    inputs = data.get("inputs")
    return claims, inputs if isinstance(inputs, dict) else None


def status_value(
    policies: Mapping[str, str], containers: Iterable[str], inputs: Mapping[str, Any] | None = None
) -> str:
    """The annotation for `policies` (name -> hash), the containers they injected (both sorted) and
    the template inputs recorded at admission."""
    status: dict[str, Any] = {
        "policies": [{"name": name, "hash": policies[name]} for name in sorted(policies)]
    }
    names = sorted(set(containers))
    if names:
        status["containers"] = names
    if inputs:
        status["inputs"] = inputs
    return orjson.dumps(status).decode()
