"""Templates that only substitute values, rendered without Jinja2's per-render machinery.

Most policy templates are text with a few values put in: `{{ pod.name }}`, `{{ params.image }}`,
`{{ pod.annotations.get('k', params.host) }}`, `{{ pod.labels.app | default(pod.namespace) }}`. A
Jinja2 render of one costs a new context, a generator and the sandbox's checks (about 80,000
instructions, the largest share of rendering a pod). `substitution` compiles such a template, from
the tree the sandbox parsed, into a plain function of the render context; a template with anything
else (`{% if %}`, tests, arithmetic, other filters or calls) is left to Jinja2.

The function gives exactly what Jinja2 gives (tests/property: the two compared on generated
templates and values): text as Jinja2 parsed it (whitespace control and newlines applied), each value
through `str()`; a read of a map goes to its item, as the sandbox does for a key that is not an
attribute of the map; `default(x)` takes `x` for a missing value. Where the answer is not certain
(a key the map lacks outside `default`, so a render error; a value that is not a plain map), it
returns None and the caller renders with Jinja2, whose error message is the one users see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import nodes

Context = Mapping[str, Any]
Getter = Callable[[Context], Any]
Substitution = Callable[[Context], "str | None"]


class _Unsure:
    """A value only Jinja2 can tell: `MISSING` (a map lacks the key: undefined) or `UNSURE`."""


MISSING = _Unsure()
UNSURE = _Unsure()
_CONSTANTS = (str, int, float, bool, type(None))


def _item(value: Any, key: str) -> Any:
    if type(value) is not dict:
        return UNSURE
    return value.get(key, MISSING)


def _read(inner: Getter, key: str) -> Getter:
    return lambda context: _item(inner(context), key)


def _get(inner: Getter, key: str, default: Getter | None) -> Getter:
    """`inner.get(key, default)` on a map."""

    def get(context: Context) -> Any:
        value = inner(context)
        if type(value) is not dict:
            return UNSURE
        if key in value:
            return value[key]
        return None if default is None else default(context)

    return get


def _default(inner: Getter, default: Getter | None) -> Getter:
    """`inner | default(default)`: the default for an undefined value (not for a falsy one)."""

    def pick(context: Context) -> Any:
        value = inner(context)
        if value is MISSING:
            return "" if default is None else default(context)
        return value

    return pick


def _key(node: nodes.Node) -> str | None:
    """The key `node` (a constant) names, when it is a string that is not an attribute of a map (the
    sandbox reads `m.items` and, when the key is missing, `m['items']` as the method)."""
    if isinstance(node, nodes.Const) and isinstance(node.value, str) and not hasattr(dict, node.value):
        return node.value
    return None


def _access(node: nodes.Getattr | nodes.Getitem) -> str | None:
    """The key of `x.key` or `x['key']`, or None."""
    return _key(nodes.Const(node.attr) if isinstance(node, nodes.Getattr) else node.arg)


def _expression(node: nodes.Node, names: frozenset[str]) -> Getter | None:
    """A getter for a value expression of the substitution subset, or None."""
    if isinstance(node, nodes.Const) and type(node.value) in _CONSTANTS:
        value = node.value
        return lambda _context: value
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in names:
        name = node.name
        return lambda context: context.get(name, UNSURE)  # a name the context lacks: Jinja2 says why
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        key = _access(node)
        inner = _expression(node.node, names) if key is not None else None
        return None if key is None or inner is None else _read(inner, key)
    if isinstance(node, nodes.Call):
        return _call(node, names)
    if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
        return _filter(node, names)
    return None


def _call(node: nodes.Call, names: frozenset[str]) -> Getter | None:
    """`x.get('key')` and `x.get('key', default)`."""
    target, args = node.node, node.args
    if not (isinstance(target, nodes.Getattr) and target.attr == "get") or node.kwargs:
        return None
    if node.dyn_args or node.dyn_kwargs or not 1 <= len(args) <= 2 or _key(args[0]) is None:
        return None
    inner = _expression(target.node, names)
    default = _expression(args[1], names) if len(args) == 2 else None
    if inner is None or (len(args) == 2 and default is None):
        return None
    return _get(inner, str(_key(args[0])), default)


def _filter(node: nodes.Filter, names: frozenset[str]) -> Getter | None:
    """`x | default(y)` (not the `boolean` form)."""
    if node.node is None or node.kwargs or node.dyn_args or node.dyn_kwargs or len(node.args) > 1:
        return None
    inner = _expression(node.node, names)
    default = _expression(node.args[0], names) if node.args else None
    if inner is None or (node.args and default is None):
        return None
    return _default(inner, default)


def substitution(tree: nodes.Template, names: frozenset[str]) -> Substitution | None:
    """The render function of a template that only substitutes values read from the context names
    `names` (see the module doc), or None for any other template."""
    parts: list[str | Getter] = []
    for output in tree.body:
        if not isinstance(output, nodes.Output):
            return None
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append(node.data)
                continue
            getter = _expression(node, names)
            if getter is None:
                return None
            parts.append(getter)
    return _joined(parts)


def _joined(parts: list[str | Getter]) -> Substitution:
    def render(context: Context) -> str | None:
        text = []
        for part in parts:
            if type(part) is str:
                text.append(part)
                continue
            value = part(context)  # type: ignore[operator]
            if isinstance(value, _Unsure):
                return None
            text.append(str(value))
        return "".join(text)

    return render
