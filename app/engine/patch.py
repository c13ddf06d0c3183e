"""RFC 6902 JSON Patch from the raw original pod to its mutated copy.

`create_patch` is a hand-written diff because the `jsonpatch` library's `make_patch` was 85% of
the time of a whole admission (1.5 of 2.3 ms for a 10 KB pod; see bench/ and the README's
Performance section). It relies on what the mutation guarantees: the mutated pod is a
copy-on-write of the original, so unchanged subtrees are the *same objects* and are skipped by
identity, and lists only grow by insertions (kept elements keep their order). Where a list does
not fit that shape it falls back to replacing the list, which is always correct. The property
tests check it against `jsonpatch` as the oracle: applying the patch to the original must give
the mutated pod, for arbitrary JSON trees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Operation = dict[str, Any]


def without_managed_fields(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of the pod without `metadata.managedFields` (never part of a patch)."""
    copy = dict(pod)
    metadata = pod.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        copy["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
    return copy


def escape(token: str) -> str:
    """A JSON pointer reference token (RFC 6901): `~` -> `~0`, `/` -> `~1`."""
    return token.replace("~", "~0").replace("/", "~1")


def _same_scalar(a: Any, b: Any) -> bool:
    # `1 == 1.0 == True` and `0.0 == -0.0` in Python; JSON tells them apart.
    return type(a) is type(b) and a == b and (type(a) is not float or repr(a) == repr(b))


def _same_item(a: Any, b: Any) -> bool:
    """Whether list element `b` of the new list is element `a` of the old one (kept, maybe edited)."""
    if a is b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        name = a.get("name")
        return name is not None and name == b.get("name")
    return _same_scalar(a, b) if not isinstance(a, list | dict) else a == b


def _diff(src: Any, dst: Any, path: str, ops: list[Operation]) -> None:
    if src is dst:
        return
    if isinstance(src, dict) and isinstance(dst, dict):
        for key in src:
            if key not in dst:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
        for key, value in dst.items():
            if key in src:
                if src[key] is not value:
                    _diff(src[key], value, f"{path}/{escape(key)}", ops)
            else:
                ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
    elif isinstance(src, list) and isinstance(dst, list):
        _diff_list(src, dst, path, ops)
    elif isinstance(src, dict | list) or isinstance(dst, dict | list) or not _same_scalar(src, dst):
        ops.append({"op": "replace", "path": path, "value": dst})


def _diff_list(src: list[Any], dst: list[Any], path: str, ops: list[Operation]) -> None:
    if len(src) == len(dst):
        for index, (old, new) in enumerate(zip(src, dst, strict=True)):
            if old is not new:
                _diff(old, new, f"{path}/{index}", ops)
        return
    if len(dst) > len(src):
        planned: list[Operation] = []
        kept = 0
        for index, new in enumerate(dst):
            if kept < len(src) and src[kept] is new:
                kept += 1
            elif kept < len(src) and _same_item(src[kept], new):
                _diff(src[kept], new, f"{path}/{index}", planned)
                kept += 1
            else:
                planned.append({"op": "add", "path": f"{path}/{index}", "value": new})
        if kept == len(src):
            ops.extend(planned)
            return
    ops.append({"op": "replace", "path": path, "value": dst})


def create_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[Operation]:
    """The operations that turn `original` into `mutated` (both JSON-like trees)."""
    ops: list[Operation] = []
    _diff(original, mutated, "", ops)
    return ops
