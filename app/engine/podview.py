"""Reading a raw pod dict that nobody validated: malformed parts read as empty, never trusted.

The apiserver has validated a pod before a webhook sees it, but `podgraft inject` reads manifests
as written and the property tests send hostile shapes, so every read of a pod goes through these.
The `as_*` readers return the value itself (read-only use); the `copied_*` ones a shallow copy to
edit (copy-on-write, see `mutate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_mapping(value: object) -> Mapping[str, Any]:
    """`value` if it is a mapping, else an empty one."""
    return value if isinstance(value, (dict, Mapping)) else {}


def as_dict(value: object) -> dict[str, Any]:
    """`as_mapping` as a dict (another mapping is copied): what the compiled engine reads fastest."""
    if type(value) is dict:
        return value
    return dict(value) if isinstance(value, Mapping) else {}


def as_list(value: object) -> list[Any]:
    """`value` if it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def copied_dict(value: object) -> dict[str, Any]:
    """A shallow copy of `value` to edit, or a new empty dict when it is not a dict."""
    return dict(value) if isinstance(value, dict) else {}


def copied_list(value: object) -> list[Any]:
    """A shallow copy of `value` to edit, or a new empty list when it is not a list."""
    return list(value) if isinstance(value, list) else []


def text(value: object) -> str:
    return value if isinstance(value, str) else ""


def string_map(value: object) -> dict[str, str]:
    """The string keys and values of a label/annotation map; anything else is left out."""
    return {k: v for k, v in as_mapping(value).items() if isinstance(k, str) and isinstance(v, str)}


def names(items: list[Any]) -> set[str]:
    """The names of the named items of a list (containers, volumes, ...)."""
    return {item["name"] for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)}
