"""What differs between a pod's injection and what the live policy renders, in words (pure).

The planner (`engine.presence`) says which items a policy would replace in a pod that carries an
older version; this names, field by field, what changed in each, read as the apiserver stores items
(`engine.canonical`: defaults filled in on both sides, so only real changes show):

    log-shipper image fluent/fluent-bit:3.1.9 -> fluent/fluent-bit:3.2.0
    log-shipper resources.limits.memory 64Mi -> 128Mi
    log-shipper env[LOG_LEVEL].value info -> debug
    env 'LOG_DIR' in container 'app': value /var/log/app -> /logs
    volume 'app-logs': emptyDir.medium (none) -> Memory
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from typing import Any

import orjson

from app.engine.canonical import (
    canonical_container,
    canonical_env,
    canonical_mount,
    canonical_volume,
    token_mount_added,
    without_token_mount,
)
from app.engine.podview import as_list, as_mapping
from app.engine.presence import Edit

MAX_VALUE_CHARS = 60
# Lists whose items are told apart by a field: compared item by item under that key.
LIST_KEYS = ("name", "mountPath", "containerPort", "devicePath", "ip")
_ABSENT = object()


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "(none)"
    if isinstance(value, Fraction):  # a quantity read as a number (canonical form)
        return str(value.numerator) if value.denominator == 1 else str(float(value))
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _list_key(items: list[Any]) -> str | None:
    """The field that names each item of a list of maps, if there is one."""
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    return next((key for key in LIST_KEYS if all(key in item for item in items)), None)


Step = tuple[str, Any]  # ("field", key) of a map, or (list key, value) of a list's item


def _walk(
    current: Any, wanted: Any, steps: tuple[Step, ...] = ()
) -> Iterator[tuple[tuple[Step, ...], Any, Any]]:
    """(steps, current, wanted) for each leaf that differs."""
    if isinstance(current, dict) and isinstance(wanted, dict):
        for key in [*wanted, *(k for k in current if k not in wanted)]:
            yield from _walk(current.get(key, _ABSENT), wanted.get(key, _ABSENT), (*steps, ("field", key)))
        return
    if isinstance(current, list) and isinstance(wanted, list):
        key = _list_key(current + wanted)
        if key is not None:
            have = {item[key]: item for item in current}
            want = {item[key]: item for item in wanted}
            for name in [*want, *(n for n in have if n not in want)]:
                yield from _walk(have.get(name, _ABSENT), want.get(name, _ABSENT), (*steps, (key, name)))
            return
    if current != wanted:
        yield steps, current, wanted


def _path(steps: tuple[Step, ...]) -> str:
    return "".join(f".{value}" if kind == "field" else f"[{value}]" for kind, value in steps).lstrip(".")


def _raw(item: Any, steps: tuple[Step, ...], fallback: Any) -> Any:
    """The value at `steps` in the item as written (a quantity as `64Mi`), else `fallback` (a default
    the apiserver fills in, or a canonical value)."""
    for kind, value in steps:
        if kind == "field" and isinstance(item, dict) and value in item:
            item = item[value]
        elif kind != "field" and isinstance(item, list):
            item = next((i for i in item if isinstance(i, dict) and i.get(kind) == value), _ABSENT)
        else:
            return fallback
        if item is _ABSENT:
            return fallback
    return item


def _differences(current: Any, wanted: Any, canonical: Callable[[Any], Any]) -> list[tuple[str, str, str]]:
    """(path, current, wanted) for what differs, values shown as written where they are."""
    return [
        (_path(steps), _shown(_raw(current, steps, old)), _shown(_raw(wanted, steps, new)))
        for steps, old, new in _walk(canonical(current), canonical(wanted))
    ]


def _current_item(pod: Mapping[str, Any], edit: Edit) -> Any:
    """The pod's item that `edit` would replace."""
    spec, metadata = as_mapping(pod.get("spec")), as_mapping(pod.get("metadata"))
    if edit.kind in ("label", "annotation"):
        return as_mapping(metadata.get(f"{edit.kind}s")).get(edit.key, _ABSENT)
    if edit.kind in ("env", "mount"):
        containers = as_list(spec.get("containers"))
        container = as_mapping(containers[edit.slot]) if 0 <= edit.slot < len(containers) else {}
        items, field = (
            (container.get("env"), "name")
            if edit.kind == "env"
            else (container.get("volumeMounts"), "mountPath")
        )
    elif edit.kind == "container":
        items, field = [*as_list(spec.get("initContainers")), *as_list(spec.get("containers"))], "name"
    else:
        items, field = spec.get("volumes" if edit.kind == "volume" else "imagePullSecrets"), "name"
    return next((i for i in as_list(items) if isinstance(i, dict) and i.get(field) == edit.key), _ABSENT)


def _canonical(edit: Edit, host_network: bool) -> Callable[[Any], Any]:
    if edit.kind == "container":
        return lambda item: canonical_container(item, host_network=host_network)
    return {"volume": canonical_volume, "env": canonical_env, "mount": canonical_mount}.get(
        edit.kind, lambda item: item
    )


def item_changes(pod: Mapping[str, Any], edit: Edit) -> list[str]:
    """What differs between the pod's item and the one `edit` would put there, field by field."""
    current = _current_item(pod, edit)
    if current is _ABSENT:
        return [f"{edit.describe()} not in the pod"]
    if edit.kind in ("label", "annotation"):
        return [f"{edit.kind} {edit.key!r} {_shown(current)} -> {_shown(edit.item)}"]
    if edit.kind == "container" and token_mount_added(current, edit.item):
        current = without_token_mount(current)
    canonical = _canonical(edit, as_mapping(pod.get("spec")).get("hostNetwork") is True)
    found = _differences(current, edit.item, canonical)
    if edit.kind == "container":
        return [f"{edit.key} {path} {old} -> {new}" for path, old, new in found]
    where = f"{edit.kind} {edit.key!r}" + (f" in container {edit.container!r}" if edit.container else "")
    return [f"{where}: {path} {old} -> {new}" for path, old, new in found]
