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

What can be decided from the template alone is refused when the policy is loaded, every problem of
every template at once (`compile_tree`): statements, names other than `pod`, `params` and `policy`,
values the pod or policy never has (`pod.nonexistent`), attributes starting with `_`, calls of
anything but the allowed methods (`str.format`), `%` on a string, and constant arithmetic past the
bounds (`2 ** 64 ** 64`, `'a' * 10 ** 6`). The same bounds hold at render for values from the pod.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.engine.podview import as_mapping, string_map, text
from app.engine.substitution import Substitution, substitution
from app.engine.trees import Dynamic, DynamicList

MAX_OUTPUT_CHARS = 64 * 1024
MAX_REPEAT = 64 * 1024
MAX_INT_BITS = 4096  # integer results of `*` and `**` past this are refused before they are computed


class RenderError(ValueError):
    """A template that could not be compiled or rendered for this pod."""


class TemplateProblems(RenderError):
    """Every problem of the templates of one tree: `(path, message)` each; `path: message; ...` in `str()`."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))
        self.problems = problems


# What a template may read: `pod.<one of these>`, `policy.<one of these>`, `params.<a parameter>`.
POD_VALUES = ("name", "generateName", "namespace", "labels", "annotations", "serviceAccount")
POLICY_VALUES = ("name",)
CONTEXT_NAMES = ("pod", "params", "policy")


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
        count, sequence = (right, left) if isinstance(right, int) else (left, right)
        if isinstance(count, int) and count > MAX_REPEAT:
            raise SecurityError("repetition too large")
        # Bound the result, not only the count: `('a' * 60000) * 60000` is two small counts.
        if (
            isinstance(count, int)
            and isinstance(sequence, str | list | tuple)
            and len(sequence) * count > MAX_REPEAT
        ):
            raise SecurityError("repetition too large")
        return operator.mul(left, right)


_ENV = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.globals.clear()
_ENV.filters = {name: f for name, f in _ENV.filters.items() if name in SAFE_FILTERS}
_ENV.filters.update(join=_bounded_join, replace=_bounded_replace)


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


_METHODS = frozenset().union(*SAFE_METHODS.values())
_ALLOWED_CALLS = "string methods: {}; map methods: {}".format(
    " ".join(sorted(SAFE_METHODS[str])), " ".join(sorted(SAFE_METHODS[dict]))
)
_STRING_FILTERS = frozenset(
    ["lower", "upper", "title", "capitalize", "trim", "truncate", "string", "join", "replace"]
)
_FOLDED: dict[type[nodes.Node], str] = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Mod: "%",
    nodes.Pow: "**",
}
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "/": operator.truediv,
    "//": operator.floordiv,
}


class _NotConstant(Exception):
    """An expression whose value depends on the pod or the parameters."""


def _constant(node: nodes.Node, params: Mapping[str, Any]) -> Any:
    """The value of a constant expression (literals and the policy's parameters, which no pod
    changes), computed under the render's bounds (`call_binop`), so that `2 ** 64 ** 64` or
    `'a' * 60000 * 60000` is refused at load, not at every render."""
    if isinstance(node, nodes.Const):
        return node.value
    name = _param_read(node)
    if name is not None and name in params:
        return params[name]
    if isinstance(node, nodes.List | nodes.Tuple):
        return [_constant(item, params) for item in node.items]
    if isinstance(node, nodes.Neg):
        return -_constant(node.node, params)
    if isinstance(node, nodes.Concat):
        text = "".join(str(_constant(part, params)) for part in node.nodes)
        if len(text) > MAX_OUTPUT_CHARS:
            raise SecurityError(f"output longer than {MAX_OUTPUT_CHARS} characters")
        return text
    op = _FOLDED.get(type(node))
    if op is None:
        raise _NotConstant
    left, right = _constant(node.left, params), _constant(node.right, params)  # type: ignore[attr-defined]
    if op in _ENV.intercepted_binops:
        return _ENV.call_binop(None, op, left, right)  # type: ignore[arg-type]
    return _OPERATORS[op](left, right)


def _is_string(node: nodes.Node, params: Mapping[str, Any]) -> bool:
    """Whether an expression is a string whatever the pod: a literal, `~`, a string filter, a name,
    a string parameter."""
    name = _param_read(node)
    if name is not None:
        return isinstance(params.get(name), str)
    if isinstance(node, nodes.Const):
        return isinstance(node.value, str)
    if isinstance(node, nodes.Concat | nodes.TemplateData):
        return True
    if isinstance(node, nodes.Filter):
        return node.name in _STRING_FILTERS
    return _context_read(node) in (
        ("pod", "name"),
        ("pod", "generateName"),
        ("pod", "namespace"),
        ("pod", "serviceAccount"),
        ("policy", "name"),
    )


def _context_read(node: nodes.Node) -> tuple[str, str] | None:
    """`(name, value)` for `pod.x`, `pod['x']`, `pod.get('x')` (and the same on `policy`, `params`)."""
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "get":
        target, args = node.node.node, node.args
        if isinstance(target, nodes.Name) and args and isinstance(args[0], nodes.Const):
            key = args[0].value
            return (target.name, key) if isinstance(key, str) else None
        return None
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return None if node.attr in _METHODS else (node.node.name, node.attr)
    if (
        isinstance(node, nodes.Getitem)
        and isinstance(node.node, nodes.Name)
        and isinstance(node.arg, nodes.Const)
    ):
        key = node.arg.value
        return (node.node.name, key) if isinstance(key, str) else None
    return None


def _guarded_names(tree: nodes.Template) -> set[str]:
    """Names tested with `is defined` or given a `default`: reading them cannot fail."""
    names = {node.node.name for node in tree.find_all(nodes.Test) if isinstance(node.node, nodes.Name)}
    names |= {
        node.node.name
        for node in tree.find_all(nodes.Filter)
        if node.name in ("default", "d") and isinstance(node.node, nodes.Name)
    }
    return names


def _unknown(kind: str, value: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    hint = f"; did you mean {kind}.{close[0]}?" if close else ""
    return f"{kind}.{value} is never defined ({kind} has {', '.join(known)}){hint}"


def template_problems(tree: nodes.Template, parameters: Collection[str] | None = None) -> list[str]:
    """Why a parsed template can only fail, or is refused, whatever the pod: one message per problem.
    With the policy's `parameters`, reading one it does not define unguarded is one of them (and
    given as a mapping, their values are constants of the arithmetic checked)."""
    problems: list[str] = []
    params: Mapping[str, Any] = parameters if isinstance(parameters, Mapping) else {}

    def add(message: str) -> None:
        if message not in problems:
            problems.append(message)

    guarded = _guarded_names(tree)
    for node in tree.find_all(nodes.Node):
        if not isinstance(node, ALLOWED_NODES):
            add(
                f"{type(node).__name__.lower()} is not allowed in policy templates "
                "(only {{ expressions }} and {% if %})"
            )
        elif isinstance(node, nodes.Name) and node.name not in CONTEXT_NAMES and node.name not in guarded:
            add(f"{node.name!r} is undefined (a template reads pod, params and policy)")
        elif isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            add(f"attribute {node.attr!r} is not allowed (names starting with '_' are internals)")
        elif isinstance(node, nodes.Call) and not (
            isinstance(node.node, nodes.Getattr) and node.node.attr in _METHODS
        ):
            if isinstance(node.node, nodes.Getattr):
                add(f"calling .{node.node.attr}() is not allowed ({_ALLOWED_CALLS}; join strings with ~)")
            elif not isinstance(node.node, nodes.Name):  # an unknown name is reported as undefined
                add(f"only methods may be called ({_ALLOWED_CALLS})")
        elif isinstance(node, nodes.Mod) and _is_string(node.left, params):
            add("'%' string formatting is not allowed in policy templates; use ~")
            continue
        read = _context_read(node)
        if read is not None and read[1].startswith("_"):
            pass  # reported as an internal attribute (or a plain missing key of a map)
        elif read is not None and read[0] == "pod" and read[1] not in POD_VALUES:
            add(_unknown("pod", read[1], POD_VALUES))
        elif read is not None and read[0] == "policy" and read[1] not in POLICY_VALUES:
            add(_unknown("policy", read[1], POLICY_VALUES))
        if type(node) in _FOLDED or isinstance(node, nodes.Concat):
            try:
                _constant(node, params)
            except _NotConstant:
                pass
            except SecurityError as exc:
                add(f"refused by the sandbox: {exc}")
            except (ArithmeticError, TypeError, ValueError) as exc:
                add(f"can only fail: {type(exc).__name__}: {exc}")
    if parameters is not None:
        missing = undefined_parameters(tree, parameters)
        if missing:
            names = ", ".join(f"params.{name}" for name in missing)
            add(
                f"reads {names}, which spec.parameters does not define "
                "(define it, or guard the read with | default(...))"
            )
    return problems


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@dataclass(frozen=True, slots=True)
class Template:
    """One compiled template string and its source (for messages); `substitute`, for a template that
    only substitutes values, renders it without Jinja2 (None when only Jinja2 can tell)."""

    source: str
    render: Callable[..., str]
    substitute: Substitution | None = None


def _is_dynamic(value: Any) -> bool:
    return type(value) is Template or type(value) is Dynamic or type(value) is DynamicList


def compile_tree(value: Any, path: str = "spec", *, parameters: Collection[str] | None = None) -> Any:
    """Replace every template string in a JSON-like tree with a compiled `Template`, and mark the
    containers above templates, so rendering walks only those paths.

    Raises `TemplateProblems` naming the path of every template that does not compile, uses a
    refused construct, can only fail, or (given the policy's `parameters`) reads a parameter the
    policy does not define.
    """
    problems: list[tuple[str, str]] = []
    compiled = _compile(value, path, parameters, problems)
    if problems:
        raise TemplateProblems(problems)
    return compiled


def _compile(
    value: Any, path: str, parameters: Collection[str] | None, problems: list[tuple[str, str]]
) -> Any:
    if isinstance(value, str):
        if not _is_template(value):
            return value
        try:
            tree = _ENV.parse(value)
            found = template_problems(tree, parameters)
            if not found:
                fast = substitution(tree, frozenset(CONTEXT_NAMES))
                return Template(source=value, render=_ENV.from_string(value).render, substitute=fast)
        except jinja2.TemplateSyntaxError as exc:
            found = [f"template syntax error: {exc.message}"]
        problems.extend((path, problem) for problem in found)
        return value
    if isinstance(value, dict):
        items = {key: _compile(item, f"{path}.{key}", parameters, problems) for key, item in value.items()}
        templated = tuple(key for key, item in items.items() if _is_dynamic(item))
        return Dynamic(items, templated) if templated else items
    if isinstance(value, list):
        elements = [
            _compile(item, f"{path}[{index}]", parameters, problems) for index, item in enumerate(value)
        ]
        indexes = tuple(index for index, item in enumerate(elements) if _is_dynamic(item))
        return DynamicList(elements, indexes) if indexes else elements
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
    if kind is Dynamic or kind is DynamicList:  # a copy, with the items that hold a template rendered
        rendered = dict(value) if kind is Dynamic else list(value)
        for key in value.templated:
            rendered[key] = render_tree(value[key], context)
        return rendered
    if kind is MappingProxyType:  # a policy's spec as it is shown (CompiledPolicy renders its tree)
        shown = dict(value)
        for key, item in value.items():
            if _is_dynamic(item):
                shown[key] = render_tree(item, context)
        return shown
    if kind is Template:
        text = value.substitute(context) if value.substitute is not None else None
        if text is not None:
            return text if len(text) <= MAX_OUTPUT_CHARS else _too_long(value)
        try:
            text = value.render(**context)
        except jinja2.UndefinedError as exc:
            raise RenderError(f"template {value.source!r}: {exc.message}") from None
        except SecurityError as exc:
            raise RenderError(f"template {value.source!r}: refused by the sandbox: {exc}") from None
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, RecursionError) as exc:
            raise RenderError(f"template {value.source!r}: {type(exc).__name__}: {exc}") from None
        return text if len(text) <= MAX_OUTPUT_CHARS else _too_long(value)
    return value


def _too_long(template: Template) -> NoReturn:
    raise RenderError(f"template {template.source!r}: output longer than {MAX_OUTPUT_CHARS} characters")


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
