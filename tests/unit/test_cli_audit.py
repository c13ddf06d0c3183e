"""`podgraft audit -f`: reading a cluster dump one object at a time (the golden case runs the command)."""

from __future__ import annotations

import json

import orjson
import pytest

from app.cli.audit import _scan
from app.cli.files import Source, json_objects

LIST = {
    "apiVersion": "v1",
    "items": [
        {"kind": "Namespace", "metadata": {"name": "shop", "labels": {"podgraft.io/injection": "enabled"}}},
        {
            "kind": "ReplicaSet",
            "metadata": {
                "name": "web-1",
                "namespace": "shop",
                "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}],
            },
        },
        {
            "kind": "Pod",
            "metadata": {"name": "web-1-a", "namespace": "shop"},
            "spec": {"x": [1, {"y": "]}"}]},
        },
        "not an object",
    ],
    "kind": "List",
    "metadata": {"resourceVersion": ""},
}


@pytest.mark.parametrize("indent", [None, 4], ids=["compact", "kubectl-indented"])
def test_a_json_list_is_read_item_by_item_as_the_whole_parse_would(indent: int | None) -> None:
    text = json.dumps(LIST, indent=indent)
    assert list(json_objects(text)) == LIST["items"]
    assert list(_file_objects(text)) == [item for item in LIST["items"] if isinstance(item, dict)]


def test_a_json_object_that_is_no_list_is_one_object_and_yaml_works_too() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "a"}, "spec": {"items": "not a list"}}
    assert list(json_objects(json.dumps(pod))) == [pod]
    assert list(json_objects(orjson.dumps([1, 2]).decode())) == [[1, 2]]
    yaml_text = "kind: Pod\nmetadata: {name: p}\n---\nkind: List\nitems: [{kind: Pod, metadata: {name: q}}]\n"
    assert [o["metadata"]["name"] for o in _file_objects(yaml_text)] == ["p", "q"]


def test_owners_and_namespace_labels_come_from_a_first_pass() -> None:
    found = _owners_from_file(json.dumps(LIST))
    assert found.parents == {("ReplicaSet", "shop", "web-1"): ("Deployment", "web")}
    assert found.namespaces == {"shop": {"podgraft.io/injection": "enabled"}}
    assert _owners_from_file('{"kind": "List", "items": []}').namespaces is None


@pytest.mark.parametrize("text", ['{"items": [{"a": 1}, ', '{"items": [1 2]}', '{"a" 1}', "{"], ids=str)
def test_broken_json_is_an_error_not_a_hang(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (json's own message names the position)
        list(json_objects(text))
