"""RFC 6902 JSON Patch from the raw original pod to its mutated copy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonpatch


def without_managed_fields(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of the pod without `metadata.managedFields` (never part of a patch)."""
    copy = dict(pod)
    metadata = pod.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        copy["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return copy


def create_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The operations that turn `original` into `mutated`; JSON pointers escape `~` and `/`."""
    operations: list[dict[str, Any]] = jsonpatch.make_patch(dict(original), dict(mutated)).patch
    return operations
