"""Policy templates: compiled once at load, rendered per pod in a Jinja2 immutable sandbox.

Only strings *in the policy* are templates. Values that come from the pod (its name, labels,
annotations, ...) are data handed to the template; they are never compiled, so nothing a pod
author writes can execute.

The language is deliberately small, so that every render is bounded in time and memory:
- `{{ expressions }}`, `{# comments #}` and `{% if %}` only: no loops, macros, `set`, includes
  (refused when the policy is loaded, naming the statement);
- no globals (`range`, `lipsum`, `cycler`, ...); an allowlist of filters, with `join` and
  `replace` bounded by their output size; methods only from a small allowlist (`dict.get`,
  `str.lower`, ...); no `%` string formatting; `*` and `**` bounded;
- Jinja2's immutable sandbox underneath: no access to internals (`__class__`, ...), no mutation;
- output longer than 64 KiB is refused.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.engine.podview import as_mapping, string_map, text

MAX_OUTPUT_CHARS = 64 * 1024
MAX_REPEAT = 64 * 1024
MAX_INT_BITS = 4096  # integer results of `*` and `**` past this are refused before they are computed


class RenderError(ValueError):
    """A template that could not be compiled or rendered for this pod."""


ALLOWED_NODES: tuple[type[nodes.Node], ...] = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.Name,
    nodes.Const,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.Filter,
    nodes.Test,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.CondExpr,
    nodes.Concat,
    nodes.Add,
    nodes.Sub,
    nodes.Mul,
    nodes.Div,
    nodes.FloorDiv,
    nodes.Mod,
    nodes.Pow,
    nodes.Tuple,
    nodes.List,
    nodes.Dict,
    nodes.Pair,
    nodes.Call,
    nodes.Keyword,
)
SAFE_METHODS: Mapping[type, frozenset[str]] = {
    str: frozenset(
        [
            "lower",
            "upper",
            "strip",
            "lstrip",
            "rstrip",
            "startswith",
            "endswith",
            "split",
            "rsplit",
            "title",
            "capitalize",
            "isdigit",
            "isalnum",
        ]
    ),
    dict: frozenset(["get", "keys", "values", "items"]),
}


def _bounded_join(value: Any, separator: str = "", attribute: Any = None) -> str:
    items = [str(item) for item in value]
    if sum(map(len, items)) + len(separator) * max(len(items) - 1, 0) > MAX_OUTPUT_CHARS:
        raise SecurityError("join result too large")
    return separator.join(items)


def _bounded_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    hits = text.count(old) if count is None or count < 0 else min(count, text.count(old))
    if len(text) + hits * max(len(new) - len(old), 0) > MAX_OUTPUT_CHARS:
        raise SecurityError("replace result too large")
    return text.replace(old, new, -1 if count is None else count)


SAFE_FILTERS = frozenset(
    [
        "default",
        "d",
        "lower",
        "upper",
        "title",
        "capitalize",
        "trim",
        "truncate",
        "int",
        "float",
        "string",
        "first",
        "last",
        "length",
        "count",
        "list",
        "sort",
        "unique",
        "min",
        "max",
        "abs",
        "round",
        "join",
        "replace",
    ]
)


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "%"])

    def wrap_str_format(self, value: Any) -> None:
        """`str.format` and `format_map` are not offered at all (a width spec allocates at will)."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        return not callable(value) or attr in SAFE_METHODS.get(type(obj), frozenset())

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "%":
            if isinstance(left, str):
                raise SecurityError("'%' string formatting is not allowed in policy templates; use ~")
            return operator.mod(left, right)
        if op == "**":
            if isinstance(right, int) and abs(right) > 64:
                raise SecurityError("exponent too large")
            # Bound the result, not only the exponent: `2 ** 64 ** 64 ** 64` chains small exponents.
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > MAX_INT_BITS:
                raise SecurityError("power too large")
            return operator.pow(left, right)
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:  # squaring in a loop
                raise SecurityError("product too large")
            return left * right
        count = right if isinstance(right, int) else left
        if isinstance(count, int) and count > MAX_REPEAT:
            raise SecurityError("repetition too large")
        return operator.mul(left, right)


_ENV = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.globals.clear()
_ENV.filters = {name: f for name, f in _ENV.filters.items() if name in SAFE_FILTERS}
_ENV.filters.update(join=_bounded_join, replace=_bounded_replace)


def _check_statements(tree: nodes.Template) -> None:
    """Refuse anything but expressions and `if` (loops, macros, `set`, includes...)."""
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, ALLOWED_NODES):
            raise RenderError(
                f"{type(node).__name__.lower()} is not allowed in policy templates "
                "(only {{ expressions }} and {% if %})"
            )


def _param_read(node: nodes.Node) -> str | None:
    """The parameter `params.x` or `params['x']` reads, if `node` is such a read."""
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "params":
        return None if node.attr in SAFE_METHODS[dict] else node.attr
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "params"
        and isinstance(node.arg, nodes.Const)
        and isinstance(node.arg.value, str)
    ):
        return node.arg.value
    return None


def undefined_parameters(tree: nodes.Template, parameters: Collection[str]) -> list[str]:
    """The parameters a template reads that the policy does not define, where no `default` filter
    guards the read and no `is defined` test guards the name: reading one fails on every pod, so it
    is refused at load."""
    guarded_reads = {id(node.node) for node in tree.find_all(nodes.Filter) if node.name in ("default", "d")}
    tested = {
        _param_read(node.node)
        for node in tree.find_all(nodes.Test)
        if node.name in ("defined", "undefined") and node.node is not None
    }
    found = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = _param_read(node)
        if name is None or name in parameters or name in tested or id(node) in guarded_reads:
            continue
        if name not in found:
            found.append(name)
    return found


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@dataclass(frozen=True, slots=True)
class Template:
    """One compiled template string and its source (for messages)."""

    source: str
    render: Callable[..., str]


class _Dynamic(dict[str, Any]):
    """A compiled mapping with a template somewhere below it. Template-free subtrees stay plain
    dicts and lists, which rendering returns as they are (shared, never copied or mutated)."""


class _DynamicList(list[Any]):
    """A compiled list with a template somewhere below it."""


def _is_dynamic(value: Any) -> bool:
    return type(value) is Template or type(value) is _Dynamic or type(value) is _DynamicList


def compile_tree(value: Any, path: str = "spec", *, parameters: Collection[str] | None = None) -> Any:
    """Replace every template string in a JSON-like tree with a compiled `Template`, and mark the
    containers above templates, so rendering walks only those paths.

    Raises `RenderError` naming the path when a template does not compile, uses a refused construct,
    or (given the policy's `parameters`) reads a parameter the policy does not define.
    """
    if isinstance(value, str):
        if not _is_template(value):
            return value
        try:
            tree = _ENV.parse(value)
            _check_statements(tree)
            missing = undefined_parameters(tree, parameters) if parameters is not None else []
            if missing:
                names = ", ".join(f"params.{name}" for name in missing)
                raise RenderError(
                    f"reads {names}, which spec.parameters does not define "
                    "(define it, or guard the read with | default(...))"
                )
            return Template(source=value, render=_ENV.from_string(value).render)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{path}: template syntax error: {exc.message}") from None
        except RenderError as exc:
            raise RenderError(f"{path}: {exc}") from None
    if isinstance(value, dict):
        items = {
            key: compile_tree(item, f"{path}.{key}", parameters=parameters) for key, item in value.items()
        }
        return _Dynamic(items) if any(_is_dynamic(item) for item in items.values()) else items
    if isinstance(value, list):
        elements = [
            compile_tree(item, f"{path}[{index}]", parameters=parameters) for index, item in enumerate(value)
        ]
        return _DynamicList(elements) if any(_is_dynamic(item) for item in elements) else elements
    return value


def has_templates(value: Any) -> bool:
    """Whether a compiled tree has any template (the top may be a read-only mapping view)."""
    if isinstance(value, MappingProxyType):
        return any(_is_dynamic(item) for item in value.values())
    return _is_dynamic(value)


def render_tree(value: Any, context: Mapping[str, Any]) -> Any:
    """Render a compiled tree: templates become strings; template-free subtrees are returned as
    they are (shared between requests: the engine never mutates what a policy provides)."""
    kind = type(value)
    if kind is _Dynamic or kind is MappingProxyType:
        return {key: render_tree(item, context) for key, item in value.items()}
    if kind is _DynamicList:
        return [render_tree(item, context) for item in value]
    if kind is Template:
        try:
            text = value.render(**context)
        except jinja2.UndefinedError as exc:
            raise RenderError(f"template {value.source!r}: {exc.message}") from None
        except SecurityError as exc:
            raise RenderError(f"template {value.source!r}: refused by the sandbox: {exc}") from None
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, RecursionError) as exc:
            raise RenderError(f"template {value.source!r}: {type(exc).__name__}: {exc}") from None
        if len(text) > MAX_OUTPUT_CHARS:
            raise RenderError(f"template {value.source!r}: output longer than {MAX_OUTPUT_CHARS} characters")
        return text
    return value


def pod_context(
    *, pod: Mapping[str, Any], namespace: str, parameters: Mapping[str, Any], policy_name: str
) -> dict[str, Any]:
    """The values a template may use. `pod.name` falls back to the `generateName` prefix."""
    metadata = as_mapping(pod.get("metadata"))
    spec = as_mapping(pod.get("spec"))
    name = text(metadata.get("name"))
    generate_name = text(metadata.get("generateName"))
    return {
        "pod": {
            "name": name or generate_name.rstrip("-"),
            "generateName": generate_name,
            "namespace": namespace,
            "labels": string_map(metadata.get("labels")),
            "annotations": string_map(metadata.get("annotations")),
            "serviceAccount": text(spec.get("serviceAccountName"))
            or text(spec.get("serviceAccount"))
            or "default",
        },
        "params": dict(parameters),
        "policy": {"name": policy_name},
    }
