"""Templates rendered without Jinja2 (`app.engine.substitution`) give what Jinja2 gives.

Generated templates of text and value reads (attributes, items, `.get`, `default`, whitespace
control, keys that are a map's methods, keys a pod lacks), rendered for generated pods and
parameters: the result of `render_tree` is Jinja2's own render of the same template, text or the
same `RenderError`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from app.engine.render import (
    POD_VALUES,
    RenderError,
    Template,
    TemplateProblems,
    compile_tree,
    pod_context,
    render_tree,
)

TEXT = st.text(alphabet=st.sampled_from("ab -./:\n\r\t\u00e9\u202e$()"), max_size=6)
# What a policy reads, keys a pod lacks, a map's methods, keys that are not names.
KEYS = st.sampled_from(
    [
        "name",
        "generateName",
        "namespace",
        "serviceAccount",
        "labels",
        "annotations",
        "app",
        "tier",
        "items",
        "get",
        "keys",
        "nope",
        "image",
        "port",
        "nested",
        "a b",
        "example.com/x",
    ]
)
QUOTE = st.sampled_from(["'", '"'])
CONSTANTS = st.sampled_from(["'lit'", '"x y"', "1", "1.5", "true", "none", "''"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, width=16) | TEXT,
    lambda children: st.lists(children, max_size=2) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=4,
)


def _access(draw: st.DrawFn, key: str) -> str:
    plain = key.replace("-", "").replace("_", "").isalnum()
    return draw(st.sampled_from([f".{key}", f"['{key}']"])) if plain else f"['{key}']"


@st.composite
def reads(draw: st.DrawFn, parameters: list[str]) -> str:
    """`pod.<value>[.<key>]`, `params.<key>[.<key>]`, `policy.name`: mostly what a policy may read,
    and now and then a key nothing has."""
    base = draw(st.sampled_from(["pod", "params", "policy"]))
    if base == "policy":
        return base + _access(draw, draw(st.sampled_from(["name", "name", "nope"])))
    if base == "pod":
        first = draw(st.sampled_from(POD_VALUES) | st.sampled_from(POD_VALUES) | KEYS)
    else:
        first = draw(st.sampled_from(parameters) | KEYS if parameters else KEYS)
    read = base + _access(draw, first)
    if first in ("labels", "annotations") or (base == "params" and draw(st.booleans())):
        read += _access(draw, draw(KEYS))
    return read


@st.composite
def expressions(draw: st.DrawFn, parameters: list[str]) -> str:
    read = draw(reads(parameters))
    other = draw(reads(parameters) | CONSTANTS)
    quote = draw(QUOTE)
    return draw(
        st.sampled_from(
            [
                read,
                f"{read}.get({quote}{draw(KEYS)}{quote})",
                f"{read}.get({quote}{draw(KEYS)}{quote}, {other})",
                f"{read} | default({other})",
                f"{read} | d",
                f"{read} | default({other}, true)",
                draw(CONSTANTS),
            ]
        )
    )


@st.composite
def templates(draw: st.DrawFn, parameters: list[str]) -> str:
    parts = []
    for index in range(draw(st.integers(1, 4))):
        if index % 2 == 0:
            left, right = draw(st.sampled_from(["{{ ", "{{- "])), draw(st.sampled_from([" }}", " -}}"]))
            parts.append(left + draw(expressions(parameters)) + right)
        else:
            parts.append(draw(TEXT))
    return "".join(draw(st.permutations(parts)))


PODS = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "name": TEXT,
                "generateName": TEXT,
                "labels": st.dictionaries(KEYS, TEXT, max_size=3),
                "annotations": st.dictionaries(KEYS, TEXT, max_size=3),
            },
        ),
        "spec": st.fixed_dictionaries({}, optional={"serviceAccountName": TEXT}),
    }
)


def _jinja(compiled: Template) -> Template:
    return dataclasses.replace(compiled, substitute=None)


def _outcome(tree: Any, context: dict[str, Any]) -> tuple[str, str]:
    try:
        return "text", render_tree(tree, context)
    except RenderError as exc:
        return "error", str(exc)


@given(data=st.data(), pod=PODS, parameters=st.dictionaries(KEYS, VALUES, max_size=4))
def test_a_substituted_template_renders_as_jinja2_renders_it(
    data: st.DataObject, pod: dict[str, Any], parameters: dict[str, Any]
) -> None:
    source = data.draw(templates(sorted(parameters)), label="template")
    try:
        compiled = compile_tree(source, parameters=parameters)
    except TemplateProblems:
        event("refused at load")
        return
    if not isinstance(compiled, Template):
        event("no template")
        return
    context = pod_context(pod=pod, namespace="shop", parameters=parameters, policy_name="log-shipper")
    fast = compiled.substitute(context) if compiled.substitute is not None else None
    event(
        "jinja2 only" if compiled.substitute is None else "left to jinja2" if fast is None else "substituted"
    )
    assert _outcome(compiled, context) == _outcome(_jinja(compiled), context)


@pytest.mark.parametrize(
    ("source", "substituted"),
    [
        pytest.param("{{ pod.name }}", True, id="name"),
        pytest.param("x-{{- pod['namespace'] }}\n", True, id="item-whitespace"),
        pytest.param("{{ pod.annotations.get('k', params.host) }}", True, id="get-default"),
        pytest.param("{{ pod.labels.app | default(pod.namespace) }}", True, id="default"),
        pytest.param("{{ pod.labels.items }}", False, id="map-method"),
        pytest.param("{{ pod.labels['keys'] }}", False, id="map-method-item"),
        pytest.param("{{ pod.labels | length }}", False, id="other-filter"),
        pytest.param("{% if pod.name %}x{% endif %}", False, id="statement"),
        pytest.param("{{ params.host ~ '!' }}", False, id="concat"),
    ],
)
def test_which_templates_are_substitutions(source: str, substituted: bool) -> None:
    compiled = compile_tree(source, parameters={"host": "db"})
    assert (compiled.substitute is not None) is substituted


def test_a_missing_value_gives_jinja2s_error() -> None:
    compiled = compile_tree("{{ pod.labels.app }}")
    context = pod_context(pod={"metadata": {}}, namespace="ns", parameters={}, policy_name="p")
    assert compiled.substitute(context) is None
    with pytest.raises(RenderError, match="has no attribute 'app'"):
        render_tree(compiled, context)
