"""The status annotation (`podgraft.io/status`): what Podgraft says it injected, for people and tools.

Podgraft writes it: `{"policies": [{"name": ..., "hash": ...}], "containers": [...]}`, the policies
whose injection is present and current in the pod, with their content hashes, and the containers
those policies put there. It is never evidence: on CREATE the annotation is whatever the pod's author
wrote. Podgraft reads it for one thing only, to tell a pod that carries an older version of a policy
(whose items it may replace with the live ones) from a pod that has same-named items of its own
(a conflict). Whether a policy is injected is decided from the pod's contents (`presence`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

MAX_ENTRIES = 256


def read_status(annotations: Mapping[str, Any], key: str) -> dict[str, str]:
    """Policies the annotation names (name -> hash). Garbage reads as empty; only the first
    `MAX_ENTRIES` entries are read."""
    raw = annotations.get(key)
    if not isinstance(raw, str) or not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    entries = data.get("policies") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return {}
    return {
        entry["name"]: entry["hash"]
        for entry in entries[:MAX_ENTRIES]
        if isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("hash"), str)
    }


def status_value(policies: Mapping[str, str], containers: Iterable[str]) -> str:
    """The annotation for `policies` (name -> hash) and the containers they injected, both sorted."""
    status: dict[str, Any] = {
        "policies": [{"name": name, "hash": policies[name]} for name in sorted(policies)]
    }
    names = sorted(set(containers))
    if names:
        status["containers"] = names
    return orjson.dumps(status).decode()
