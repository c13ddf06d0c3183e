"""app/engine/inputs.py: which changing pod values templates read, and the pod rebuilt from them."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine.inputs import (
    EVERYTHING,
    NOTHING,
    Reads,
    admission_inputs,
    admission_view,
    generated_name,
    source_reads,
    template_reads,
)
from tests.unit.builders import compiled

STATUS = "podgraft.io/status"


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        pytest.param("{{ pod.name }}", Reads(name=True), id="name"),
        pytest.param("{{ pod['generateName'] }}", Reads(generate_name=True), id="generate-name-item"),
        pytest.param("{{ pod.labels.app }}", Reads(labels=frozenset(["app"])), id="label-attribute"),
        pytest.param("{{ pod.labels['a/b'] }}", Reads(labels=frozenset(["a/b"])), id="label-item"),
        pytest.param(
            "{{ pod.annotations.get('x', params.y) }}", Reads(annotations=frozenset(["x"])), id="get"
        ),
        pytest.param(
            "{% if pod.labels.app is defined %}1{% endif %}", Reads(labels=frozenset(["app"])), id="test"
        ),
        pytest.param(
            "{{ pod.labels.app | default(pod.name) }}", Reads(name=True, labels=frozenset(["app"])), id="both"
        ),
        pytest.param("{{ pod.labels | length }}", Reads(all_labels=True), id="whole-map-filter"),
        pytest.param("{{ pod.labels.items() }}", Reads(all_labels=True), id="whole-map-method"),
        pytest.param("{{ pod.annotations.get(params.key) }}", Reads(all_annotations=True), id="dynamic-key"),
        pytest.param("{% if 'x' in pod.labels %}1{% endif %}", Reads(all_labels=True), id="membership"),
        pytest.param("{{ pod }}", EVERYTHING, id="the-whole-pod"),
        pytest.param("{{ pod[params.field] }}", EVERYTHING, id="dynamic-field"),
        pytest.param("{{ pod.namespace }}-{{ pod.serviceAccount }}", NOTHING, id="never-change"),
        pytest.param("{{ params.pod }}-{{ policy.name }}", NOTHING, id="not-the-pod"),
    ],
)
def test_what_a_template_reads(source: str, reads: Reads) -> None:
    assert source_reads(source) == reads


def test_a_policys_reads_leave_out_its_ephemeral_rules() -> None:
    policy = compiled(
        "p",
        sidecars=[{"name": "s", "image": "x", "args": ["{{ pod.labels.app }}"]}],
        ephemeral={"env": [{"name": "WHO", "value": "{{ pod.name }}"}]},
    )
    assert policy.reads == template_reads(policy.spec) == Reads(labels=frozenset(["app"]))


@pytest.mark.parametrize(
    ("prefix", "name", "generated"),
    [
        ("web-7d9f8-", "web-7d9f8-k2x9q", True),
        ("web-7d9f8-", "web-7d9f8-k2x9a", False),  # 'a' is not in the apiserver's alphabet
        ("web-7d9f8-", "web-7d9f8-k2x9", False),
        ("", "web-0", False),  # a StatefulSet's pod: named by its controller, as admitted
        ("x" * 62, "x" * 58 + "bcd45", True),  # a long prefix is cut to 58
    ],
)
def test_a_name_the_apiserver_generated(prefix: str, name: str, generated: bool) -> None:
    assert generated_name({"generateName": prefix, "name": name}) is generated


def _pod(**metadata: Any) -> dict[str, Any]:
    return {"metadata": metadata, "spec": {}}


def test_recorded_and_rebuilt() -> None:
    reads = Reads(name=True, labels=frozenset(["app", "gone"]), all_annotations=True)
    admitted = _pod(
        generateName="web-", labels={"app": "web", "x": "1"}, annotations={"a": "1", STATUS: "{}"}
    )
    inputs = admission_inputs(admitted, reads, status_key=STATUS)
    assert inputs == {
        "name": "",
        "labels": {"app": "web", "gone": None},
        "annotations": {"*": True, "a": "1"},
    }
    later = _pod(
        name="web-bcdfg",
        generateName="web-",
        labels={"app": "api", "gone": "back", "x": "2"},
        annotations={"a": "2", "cni/ip": "10.0.0.1", STATUS: '{"policies": []}'},
    )
    view = admission_view(later, inputs, status_key=STATUS)
    assert view.recorded
    assert view.unknown == ()
    assert view.pod["metadata"] == {
        "generateName": "web-",
        "labels": {"app": "web", "x": "2"},  # keys not read stay as they are now
        "annotations": {"a": "1"},  # all of them were read: exactly as then, without the status
    }
    assert later["metadata"]["labels"]["app"] == "api", "the pod itself is never edited"


def test_nothing_read_nothing_recorded() -> None:
    assert admission_inputs(_pod(name="x"), NOTHING, status_key=STATUS) is None
