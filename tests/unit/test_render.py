"""Rendering: the values a template sees, and the sandbox refusing every escape or blow-up cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from app.engine.render import (
    _ENV,
    MAX_OUTPUT_CHARS,
    RenderError,
    Template,
    TemplateProblems,
    compile_tree,
    has_templates,
    pod_context,
    render_tree,
    undefined_parameters,
)
from tests.conftest import ROOT
from tests.unit.builders import pod


def _context(**overrides: Any) -> dict[str, Any]:
    subject = overrides.pop("pod", None) or pod(
        "web-7d9f",
        annotations={"example.com/repo": "https://git.example.com/a.git", "evil": "{{ 7*7 }}"},
        labels={"app": "web"},
        serviceAccountName="web-sa",
        containers=[{"name": "app", "image": "nginx"}],
    )
    return pod_context(
        pod=subject,
        namespace=overrides.pop("namespace", "shop"),
        parameters=overrides.pop("parameters", {"tag": "1.2.3", "port": 8080}),
        policy_name=overrides.pop("policy_name", "log-shipper"),
    )


def render(source: str, context: dict[str, Any] | None = None) -> Any:
    return render_tree(compile_tree(source), context if context is not None else _context())


# --- the values a template may use ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("{{ pod.name }}", "web-7d9f", id="name"),
        pytest.param("{{ pod.namespace }}", "shop", id="namespace"),
        pytest.param("{{ pod.labels.app }}", "web", id="label"),
        pytest.param(
            "{{ pod.annotations['example.com/repo'] }}", "https://git.example.com/a.git", id="annotation"
        ),
        pytest.param(
            "{{ pod.annotations.get('missing', 'fallback') }}", "fallback", id="annotation-get-default"
        ),
        pytest.param("{{ pod.serviceAccount }}", "web-sa", id="service-account"),
        pytest.param("img:{{ params.tag }}", "img:1.2.3", id="param"),
        pytest.param("{{ params.port + 1 }}", "8081", id="param-arithmetic"),
        pytest.param("{{ policy.name }}", "log-shipper", id="policy-name"),
        pytest.param("{{ pod.labels.tier | default('none') }}", "none", id="default-filter"),
        pytest.param("{{ pod.name | upper }}", "WEB-7D9F", id="plain-filter"),
        pytest.param("{% if pod.labels.app == 'web' %}yes{% endif %}", "yes", id="if-block"),
        pytest.param("{{ 6 * 7 }}", "42", id="small-multiplication"),
        pytest.param("{{ 2 ** 10 }}", "1024", id="small-power"),
    ],
)
def test_template_values(source: str, expected: str) -> None:
    assert render(source) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({"name": "web-1", "generateName": "web-"}, "web-1", id="name-wins"),
        pytest.param({"generateName": "web-7d9f-"}, "web-7d9f", id="generate-name-prefix"),
        pytest.param({"name": "", "generateName": "job-"}, "job", id="empty-name"),
        pytest.param({}, "", id="neither"),
    ],
)
def test_pod_name_falls_back_to_generate_name(metadata: dict[str, Any], expected: str) -> None:
    context = pod_context(
        pod={"metadata": metadata, "spec": {}}, namespace="ns", parameters={}, policy_name="p"
    )
    assert context["pod"]["name"] == expected
    assert context["pod"]["generateName"] == metadata.get("generateName", "")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"serviceAccountName": "a"}, "a", id="service-account-name"),
        pytest.param({"serviceAccount": "b"}, "b", id="deprecated-service-account"),
        pytest.param({}, "default", id="default"),
    ],
)
def test_service_account(spec: dict[str, Any], expected: str) -> None:
    context = pod_context(pod={"metadata": {}, "spec": spec}, namespace="ns", parameters={}, policy_name="p")
    assert context["pod"]["serviceAccount"] == expected


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({"name": "p", "labels": ["x"]}, id="labels-list"),
        pytest.param({"name": "p", "labels": "app=web"}, id="labels-string"),
        pytest.param({"name": "p", "annotations": [["a", "b"]]}, id="annotations-pairs"),
        pytest.param({"generateName": 7}, id="generate-name-number"),
        pytest.param({"name": ["p"]}, id="name-list"),
    ],
)
def test_pod_context_reads_malformed_pods_as_data(metadata: dict[str, Any]) -> None:
    """The engine reads any JSON defensively: odd shapes become empty values, never exceptions."""
    context = pod_context(
        pod={"metadata": metadata, "spec": {"serviceAccountName": ["x"]}},
        namespace="ns",
        parameters={},
        policy_name="p",
    )
    values = context["pod"]
    assert isinstance(values["name"], str)
    assert isinstance(values["generateName"], str)
    assert values["serviceAccount"] == "default"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values["labels"].items())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values["annotations"].items())
    assert render("{{ pod.name }}/{{ pod.labels | length }}", context).endswith("/0")


def test_non_string_label_values_are_left_out() -> None:
    context = pod_context(
        pod={"metadata": {"labels": {"app": 2, "tier": "web"}, "annotations": {"a": None}}},
        namespace="ns",
        parameters={},
        policy_name="p",
    )
    assert context["pod"]["labels"] == {"tier": "web"}
    assert context["pod"]["annotations"] == {}


def test_context_is_a_copy_of_the_pod() -> None:
    subject = pod(labels={"app": "web"}, annotations={"a": "1"})
    context = pod_context(pod=subject, namespace="ns", parameters={"x": "1"}, policy_name="p")
    context["pod"]["labels"]["app"] = "changed"
    context["pod"]["annotations"]["b"] = "2"
    assert subject["metadata"] == {"name": "app", "labels": {"app": "web"}, "annotations": {"a": "1"}}


def test_pod_values_are_data_never_templates() -> None:
    # The annotation holds template syntax; it is inserted as text, not compiled and not evaluated.
    assert render("{{ pod.annotations.evil }}") == "{{ 7*7 }}"
    assert render("{{ pod.annotations.evil | upper }}") == "{{ 7*7 }}"


def test_strict_undefined_is_a_render_error() -> None:
    with pytest.raises(RenderError) as caught:
        render("{{ pod.labels.tier }}")
    assert "{{ pod.labels.tier }}" in str(caught.value)
    assert "tier" in str(caught.value)
    with pytest.raises(RenderError, match="'nothing' is undefined"):
        render("{{ nothing }}")


# --- the sandbox ----------------------------------------------------------------------------------


# Refused when the policy is loaded (the message names the field: "spec: ..."), every one of them
# before any pod is rendered: what the template alone shows can only fail or is not allowed.
REFUSED_AT_LOAD = [
    pytest.param("{{ pod.__class__ }}", "attribute '__class__' is not allowed", id="dunder-class"),
    pytest.param("{{ ''.__class__.__mro__ }}", "attribute '__mro__' is not allowed", id="str-mro"),
    pytest.param("{{ ''.__class__.mro() }}", "calling .mro() is not allowed", id="mro-call"),
    pytest.param("{{ params.__init__.__globals__ }}", "attribute '__init__' is not allowed", id="globals"),
    pytest.param("{{ pod.get.__self__ }}", "attribute '__self__' is not allowed", id="bound-method-self"),
    pytest.param("{{ pod._private }}", "attribute '_private' is not allowed", id="underscore"),
    pytest.param("{{ self._TemplateReference__context }}", "'self' is undefined", id="template-reference"),
    pytest.param("{{ cycler.__init__.__globals__.os }}", "'cycler' is undefined", id="cycler-globals"),
    pytest.param("{{ joiner.__init__.__globals__ }}", "'joiner' is undefined", id="joiner-globals"),
    pytest.param("{{ namespace.__init__.__globals__ }}", "'namespace' is undefined", id="namespace-globals"),
    pytest.param("{{ namespace(a=1).__class__ }}", "'namespace' is undefined", id="namespace-instance"),
    pytest.param("{{ lipsum.__globals__ }}", "'lipsum' is undefined", id="lipsum-globals"),
    pytest.param("{{ range(10**9) | length }}", "'range' is undefined", id="huge-range"),
    pytest.param(
        "{{ nothing }}", "'nothing' is undefined (a template reads pod, params and policy)", id="name"
    ),
    pytest.param("{{ 'a' | attr('__class__') }}", "No filter named 'attr'", id="attr-filter"),
    pytest.param("{{ '{0.__class__}'.format(1) }}", "calling .format() is not allowed", id="format-string"),
    pytest.param("{{ '{}'.format(pod.name) }}", "calling .format() is not allowed", id="str-format"),
    pytest.param("{{ pod.labels.update({'x': '1'}) }}", "calling .update() is not allowed", id="mutate"),
    pytest.param("{{ pod.labels.pop('app') }}", "calling .pop() is not allowed", id="pop-context"),
    pytest.param("{{ '%s' % pod.name }}", "'%' string formatting is not allowed", id="percent-literal"),
    pytest.param("{{ pod.name % 2 }}", "'%' string formatting is not allowed", id="percent-pod-name"),
    pytest.param("{{ (pod.name ~ '%s') % 1 }}", "'%' string formatting is not allowed", id="percent-concat"),
    pytest.param("{{ 'a' * 10**9 }}", "repetition too large", id="string-repeat"),
    pytest.param("{{ 10**9 * 'a' }}", "repetition too large", id="string-repeat-reversed"),
    pytest.param("{{ [1] * 10**9 }}", "repetition too large", id="list-repeat"),
    pytest.param("{{ ('a' * 60000) * 2 }}", "repetition too large", id="oversize-by-doubling"),
    pytest.param("{{ ('a' * 60000) * 60000 }}", "repetition too large", id="two-small-counts"),
    pytest.param("{{ 2 ** 10000 }}", "exponent too large", id="big-exponent"),
    pytest.param("{{ 2.0 ** 10000 }}", "exponent too large", id="big-float-exponent"),
    pytest.param("{{ 2 ** 64 ** 64 }}", "power too large", id="two-exponents"),
    pytest.param("{{ 2 ** 64 ** 64 ** 64 ** 64 ** 64 }}", "too large", id="chained-exponents"),
    pytest.param("{{ pod.name ~ (2 ** 64 ** 64) }}", "power too large", id="exponent-beside-pod"),
    pytest.param(
        "{{ ('x' * 60000) ~ ('x' * 60000) }}",
        f"output longer than {MAX_OUTPUT_CHARS} characters",
        id="oversize-output",
    ),
    pytest.param("{{ 1 / 0 }}", "can only fail: ZeroDivisionError", id="division-by-zero"),
    pytest.param("{{ 'a' + 1 }}", "can only fail: TypeError", id="type-error"),
    pytest.param(
        "{{ pod.nonexistent }}",
        "pod.nonexistent is never defined (pod has name, generateName, namespace, labels, annotations, "
        "serviceAccount)",
        id="pod-nonexistent",
    ),
    pytest.param("{{ pod.lables.app }}", "did you mean pod.labels?", id="pod-typo"),
    pytest.param("{{ pod['uid'] }}", "pod.uid is never defined", id="pod-item"),
    pytest.param("{{ pod.get('uid', 'x') }}", "pod.uid is never defined", id="pod-get"),
    pytest.param("{{ pod.nodeName | default('x') }}", "pod.nodeName is never defined", id="pod-guarded"),
    pytest.param("{{ policy.version }}", "policy.version is never defined (policy has name)", id="policy"),
    pytest.param(
        "{% set ns = namespace(x=2**64) %}{% for i in range(40) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
        "assign is not allowed",
        id="squaring-loop",
    ),
    pytest.param(
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "macro is not allowed", id="recursive-macro"
    ),
    pytest.param("{% include 'x' %}", "include is not allowed", id="include"),
    pytest.param("{% extends 'x' %}", "extends is not allowed", id="extends"),
    pytest.param("{% import 'x' as y %}", "import is not allowed", id="import"),
]


@pytest.mark.parametrize(("source", "words"), REFUSED_AT_LOAD)
def test_refused_when_the_policy_is_loaded(source: str, words: str) -> None:
    with pytest.raises(RenderError) as caught:
        compile_tree(source)
    message = str(caught.value)
    assert message.startswith("spec: "), message
    assert words in message, message


# Refused when rendered for a pod: what only the pod's values make too large or undefined.
@pytest.mark.parametrize(
    ("source", "context", "words"),
    [
        pytest.param("{{ pod.labels.tier }}", None, "'dict object' has no attribute 'tier'", id="label"),
        pytest.param("{{ pod.name * params.n }}", {"n": 10**9}, "repetition too large", id="repeat"),
        pytest.param("{{ pod.name * params.n }}", {"n": 60000}, "repetition too large", id="repeat-bound"),
        pytest.param("{{ params.n ** params.n }}", {"n": 10**4}, "exponent too large", id="power"),
        pytest.param("{{ params.s % 1 }}", {"s": "%s"}, "'%' string formatting", id="percent-param"),
        pytest.param("{{ params.s ~ params.s }}", {"s": "x" * 60000}, "output longer than", id="output"),
        pytest.param("{{ 1 / params.n }}", {"n": 0}, "ZeroDivisionError", id="division-by-zero"),
    ],
)
def test_refused_when_rendered(source: str, context: dict[str, Any] | None, words: str) -> None:
    with pytest.raises(RenderError) as caught:
        render(source, _context(parameters=context) if context is not None else None)
    message = str(caught.value)
    assert message.startswith(f"template {source!r}: "), message
    assert words in message, message


def test_every_problem_of_every_template_is_named_at_once() -> None:
    tree = {
        "sidecars": [
            {"name": "s", "image": "b:{{ params.tag }}", "args": ["{{ pod.nmae }}", "{{ '%d' % 1 }}"]},
            {"name": "t", "env": [{"name": "A", "value": "{{ x }}{{ y.format() }}"}, {"value": "{{ oops"}]},
        ]
    }
    with pytest.raises(TemplateProblems) as caught:
        compile_tree(tree, parameters=set())
    assert [f"{path}: {message}" for path, message in caught.value.problems] == [
        "spec.sidecars[0].image: reads params.tag, which spec.parameters does not define "
        "(define it, or guard the read with | default(...))",
        "spec.sidecars[0].args[0]: pod.nmae is never defined (pod has name, generateName, namespace, "
        "labels, annotations, serviceAccount); did you mean pod.name?",
        "spec.sidecars[0].args[1]: '%' string formatting is not allowed in policy templates; use ~",
        "spec.sidecars[1].env[0].value: 'x' is undefined (a template reads pod, params and policy)",
        "spec.sidecars[1].env[0].value: calling .format() is not allowed (string methods: capitalize "
        "endswith isalnum isdigit lower lstrip rsplit rstrip split startswith strip title upper; "
        "map methods: get items keys values; join strings with ~)",
        "spec.sidecars[1].env[0].value: 'y' is undefined (a template reads pod, params and policy)",
        "spec.sidecars[1].env[1].value: template syntax error: unexpected end of template, "
        "expected 'end of print statement'.",
    ]


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{{ pod.name | upper }}-{{ pod.labels.get('app', 'x') }}", id="filters-and-get"),
        pytest.param("{% if x is defined %}{{ x }}{% endif %}", id="name-tested"),
        pytest.param("{{ x | default('a') }}", id="name-defaulted"),
        pytest.param("{{ params.n % 2 }}", id="integer-modulo"),
        pytest.param("{{ 2 ** 64 }}", id="small-power"),
        pytest.param("{{ 'ab' * 1000 }}", id="small-repeat"),
        pytest.param("{{ pod.annotations['_x'] | default('') }}", id="map-key-with-underscore"),
        pytest.param("{{ pod.items() | list | length }}", id="map-method"),
    ],
)
def test_allowed_at_load(source: str) -> None:
    assert has_templates(compile_tree(source))


# Each of these would build a ~100 MB string from a template of a few dozen characters (gigabytes with
# larger numbers) if the language allowed it: each must be refused before the string is built.
AMPLIFIERS = [
    pytest.param("{{ 'a' | center(10**8) | length }}", id="center-width"),
    pytest.param("{{ 'a' | indent(10**8, true) | length }}", id="indent-width"),
    pytest.param("{{ ('a' * 10000) | replace('a', 'a' * 10000) | length }}", id="replace"),
    pytest.param("{{ ('a' * 50000) | list | join('a' * 2000) | length }}", id="join-separator"),
    pytest.param("{{ '{:>100000000}'.format('a') | length }}", id="format-width"),
    pytest.param("{{ ('%100000000s' % 'a') | length }}", id="percent-width"),
    pytest.param(
        "{% set ns = namespace(s='a' * 60000) %}{% for i in range(11) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        id="concatenation-doubling",
    ),
]


@pytest.mark.parametrize("source", AMPLIFIERS)
def test_sandbox_refuses_memory_amplification(source: str) -> None:
    with pytest.raises(RenderError):
        render(source)


def test_sandbox_bounds_render_time() -> None:
    # Loops are refused when the policy is loaded, so no render can iterate; run in a subprocess so
    # that a regression hangs only that process (3 s timeout).
    script = textwrap.dedent(
        """
        from app.engine.render import RenderError, compile_tree, render_tree
        source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        try:
            render_tree(compile_tree(source), {})
        except RenderError:
            raise SystemExit(0)
        raise SystemExit(1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, timeout=3, check=False, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()


# --- compiling ------------------------------------------------------------------------------------


def test_syntax_error_at_compile_names_the_path() -> None:
    tree = {"sidecars": [{"name": "s", "image": "ok"}, {"name": "t", "args": ["fine", "{{ params.tag "]}]}
    with pytest.raises(RenderError) as caught:
        compile_tree(tree)
    assert str(caught.value).startswith("spec.sidecars[1].args[1]: template syntax error")


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{% for x in y %}", id="unclosed-block"),
        pytest.param("{{ }}", id="empty-expression"),
        pytest.param("{% bogus %}", id="unknown-tag"),
    ],
)
def test_syntax_errors(source: str) -> None:
    with pytest.raises(RenderError, match=r"^spec\.x: template syntax error"):
        compile_tree({"x": source})


def test_only_template_strings_are_compiled() -> None:
    tree = {
        "plain": "no templates here",
        "number": 3,
        "nested": {"list": ["{{ pod.name }}", "text", {"deep": "{# comment #}x"}], "flag": True},
        "static": {"a": ["b"]},
    }
    compiled = compile_tree(tree)
    assert compiled["plain"] == "no templates here"
    assert isinstance(compiled["nested"]["list"][0], Template)
    assert isinstance(compiled["nested"]["list"][2]["deep"], Template)
    assert has_templates(compiled)
    assert not has_templates(compiled["static"])
    assert not has_templates(compile_tree({"a": ["b", {"c": 1}]}))
    expected = {
        "plain": "no templates here",
        "number": 3,
        "nested": {"list": ["web-7d9f", "text", {"deep": "x"}], "flag": True},
        "static": {"a": ["b"]},
    }
    assert render_tree(compiled, _context()) == expected
    # Rendering leaves the compiled tree as it was: a second render gives the same result.
    assert render_tree(compiled, _context()) == expected
    other = pod("other", containers=[{"name": "app", "image": "nginx"}])
    assert render_tree(compiled, _context(pod=other))["nested"]["list"][0] == "other"


# --- parameters a template reads --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "missing"),
    [
        pytest.param("{{ params.tag }}", ["tag"], id="attribute"),
        pytest.param("{{ params['tag'] }}", ["tag"], id="item"),
        pytest.param("{{ params.image }}:{{ params.tag }}", ["tag"], id="one-of-two"),
        pytest.param("{{ params.tag | default('latest') }}", [], id="default-filter"),
        pytest.param("{{ params.tag | d('latest') }}", [], id="d-filter"),
        pytest.param("{% if params.tag is defined %}{{ params.tag }}{% endif %}", [], id="is-defined"),
        pytest.param("{% if params.x is defined %}{{ params.tag }}{% endif %}", ["tag"], id="another-tested"),
        pytest.param("{{ params.get('tag', 'x') }}", [], id="get"),
        pytest.param("{{ pod.annotations.get('a', params.image) }}", [], id="defined-one"),
    ],
)
def test_undefined_parameters_are_the_unguarded_reads_of_undefined_names(
    source: str, missing: list[str]
) -> None:
    assert undefined_parameters(_ENV.parse(source), {"image"}) == missing


def test_a_policy_reading_an_undefined_parameter_is_refused_at_load_naming_the_field() -> None:
    with pytest.raises(
        RenderError,
        match=re.escape("spec.sidecars[0].image: reads params.tag, which spec.parameters does not define"),
    ):
        compile_tree({"sidecars": [{"name": "s", "image": "b:{{ params.tag }}"}]}, parameters=set())
    assert compile_tree({"env": [{"name": "A", "value": "{{ params.tag }}"}]}, parameters={"tag"})


@pytest.mark.parametrize(
    ("source", "parameters", "words"),
    [
        pytest.param(
            "{{ params.port % 1 }}", {"port": "5432"}, "'%' string formatting", id="string-parameter"
        ),
        pytest.param("{{ params.n ** params.n }}", {"n": 10**4}, "exponent too large", id="parameter-power"),
        pytest.param("{{ params.s * 40000 }}", {"s": "ab"}, "repetition too large", id="parameter-repeat"),
    ],
)
def test_parameters_are_constants_of_the_checks_at_load(
    source: str, parameters: dict[str, Any], words: str
) -> None:
    with pytest.raises(RenderError, match=re.escape(words)):
        compile_tree({"x": source}, parameters=parameters)
    assert compile_tree({"x": source}, parameters={"port": 5432, "n": 2, "s": "a"}) is not None
