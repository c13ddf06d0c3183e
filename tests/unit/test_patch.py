"""JSON Patch: pointer escaping, managedFields, unknown fields, and jsonpatch as the oracle."""

from __future__ import annotations

import copy
import random
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from app.engine.config import EngineConfig
from app.engine.inject import inject_pod
from app.engine.patch import create_patch, escape, without_managed_fields
from tests.conftest import EXAMPLE_POLICIES, ROOT, apply_patch, assert_valid_pod, policies_from_dir
from tests.unit.builders import compiled, pod, policy_set

CONFIG = EngineConfig()


def canonical(value: Any) -> bytes:
    """Type-exact comparison: `1`, `1.0` and `true` are different JSON."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def assert_patch_turns(src: Any, dst: Any) -> list[dict[str, Any]]:
    before = copy.deepcopy(src)
    ops = create_patch(src, dst)
    assert src == before, "create_patch must not modify its input"
    result = jsonpatch.apply_patch(src, ops)
    assert canonical(result) == canonical(dst), ops
    return ops


# --- JSON pointers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "escaped"),
    [
        pytest.param("plain", "plain", id="plain"),
        pytest.param("example.com/owner", "example.com~1owner", id="slash"),
        pytest.param("owner~", "owner~0", id="tilde"),
        pytest.param("a~1b", "a~01b", id="tilde-one-literal"),
        pytest.param("~/", "~0~1", id="tilde-then-slash"),
        pytest.param("", "", id="empty"),
    ],
)
def test_escape(token: str, escaped: str) -> None:
    assert escape(token) == escaped
    # The library agrees on every token.
    assert jsonpatch.JsonPointer.from_parts([token]).path == f"/{escaped}"


def test_annotation_keys_with_slash_in_an_injection() -> None:
    policies = policy_set(
        compiled("meta", annotations={"example.com/owner": "x"}, labels={"example.com/team": "platform"})
    )
    subject = pod(annotations={"podgraft.io/inject": "meta", "odd~key/with~1slash": "v"}, labels={"app": "a"})
    result = inject_pod(subject, namespace="default", namespace_labels=None, policies=policies, config=CONFIG)
    paths = sorted(op["path"] for op in result.patch)
    assert paths == [
        "/metadata/annotations/example.com~1owner",
        "/metadata/annotations/podgraft.io~1status",
        "/metadata/labels/example.com~1team",
    ]
    patched = apply_patch(subject, result.patch)
    assert patched == result.mutated
    assert patched["metadata"]["annotations"]["odd~key/with~1slash"] == "v"


def test_keys_with_tilde_and_slash_in_patch_paths() -> None:
    src = {"metadata": {"annotations": {"odd~key/with~1slash": "v", "gone/~": "x"}}}
    dst = {"metadata": {"annotations": {"odd~key/with~1slash": "w", "new~/": "y"}}}
    ops = assert_patch_turns(src, dst)
    assert sorted((op["op"], op["path"]) for op in ops) == [
        ("add", "/metadata/annotations/new~0~1"),
        ("remove", "/metadata/annotations/gone~1~0"),
        ("replace", "/metadata/annotations/odd~0key~1with~01slash"),
    ]


# --- managedFields and unknown fields -------------------------------------------------------------

MANAGED = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {}}}]


def test_managed_fields_never_appear_in_a_patch() -> None:
    policies = policy_set(
        compiled("meta", annotations={"example.com/a": "1"}, sidecars=[{"name": "s", "image": "x"}])
    )
    subject = pod(annotations={"podgraft.io/inject": "meta"})
    subject["metadata"]["managedFields"] = MANAGED
    before = copy.deepcopy(subject)
    result = inject_pod(subject, namespace="default", namespace_labels=None, policies=policies, config=CONFIG)
    assert result.patch
    assert not any("managedFields" in op["path"] for op in result.patch)
    assert not any("managedFields" in orjson.dumps(op.get("value")).decode() for op in result.patch)
    assert subject == before
    patched = apply_patch(subject, result.patch)
    assert patched["metadata"]["managedFields"] == MANAGED, "the apiserver's managedFields stay as they were"
    assert without_managed_fields(patched) == result.mutated


def test_without_managed_fields_is_a_shallow_copy() -> None:
    subject = pod()
    subject["metadata"]["managedFields"] = MANAGED
    stripped = without_managed_fields(subject)
    assert "managedFields" not in stripped["metadata"]
    assert subject["metadata"]["managedFields"] == MANAGED
    assert stripped["spec"] is subject["spec"]
    plain = pod()
    assert without_managed_fields(plain)["metadata"] is plain["metadata"]


def test_unknown_fields_survive() -> None:
    policies = policy_set(compiled("env", env=[{"name": "A", "value": "1"}]))
    subject = pod(annotations={"podgraft.io/inject": "env"})
    subject["spec"]["containers"][0]["futureField"] = {"enabled": True}
    subject["spec"]["containers"][0]["restartPolicy"] = "Always"
    subject["spec"]["someNewPodField"] = [1, 2.5, None]
    subject["status"] = {"phase": "Pending"}
    result = inject_pod(subject, namespace="default", namespace_labels=None, policies=policies, config=CONFIG)
    assert all(op["op"] != "remove" for op in result.patch)
    patched = apply_patch(subject, result.patch)
    assert patched["spec"]["containers"][0]["futureField"] == {"enabled": True}
    assert patched["spec"]["containers"][0]["restartPolicy"] == "Always"
    assert canonical(patched["spec"]["someNewPodField"]) == canonical([1, 2.5, None])
    assert patched["status"] == {"phase": "Pending"}


# --- the patch applied equals the mutated pod; it validates; a second pass is empty ---------------


def _example_pods() -> list[Any]:
    found = []
    for path in sorted((ROOT / "examples" / "pods").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "Pod":
                found.append(pytest.param(document, id=f"{path.stem}-{document['metadata']['name']}"))
    return found


@pytest.mark.parametrize("subject", _example_pods())
@pytest.mark.parametrize("native", [True, False], ids=["native", "classic"])
def test_example_pod_patch_applies_validates_and_is_idempotent(subject: dict[str, Any], native: bool) -> None:
    policies = policies_from_dir(EXAMPLE_POLICIES)
    config = EngineConfig(native_sidecars_supported=native)
    namespace = subject["metadata"].get("namespace", "default")
    result = inject_pod(subject, namespace=namespace, namespace_labels=None, policies=policies, config=config)
    assert result.denial is None
    assert result.patch
    patched = apply_patch(subject, result.patch)
    assert canonical(patched) == canonical(result.mutated)
    assert_valid_pod(patched)
    again = inject_pod(patched, namespace=namespace, namespace_labels=None, policies=policies, config=config)
    assert again.patch == []
    assert again.denial is None


# --- create_patch against jsonpatch ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        pytest.param({"a": 1}, {"a": 1}, id="same"),
        pytest.param({"a": 1}, {"a": 1.0}, id="int-to-float"),
        pytest.param({"a": 1}, {"a": True}, id="int-to-bool"),
        pytest.param({"a": 0}, {"a": False}, id="zero-to-false"),
        pytest.param({"a": None}, {"a": 0}, id="null-to-zero"),
        pytest.param({"a": "1"}, {"a": 1}, id="string-to-int"),
        pytest.param({"a": {"b": 1}}, {"a": [1]}, id="dict-to-list"),
        pytest.param({"a": [1]}, {"a": {"0": 1}}, id="list-to-dict"),
        pytest.param({"a": 1, "b": 2}, {"b": 2}, id="remove-key"),
        pytest.param({}, {"x/y": {"~": [1]}}, id="add-escaped-keys"),
        pytest.param({"x/y": 1, "a~b": 2}, {"x/y": 2}, id="replace-and-remove-escaped"),
        pytest.param({"": 1}, {"": 2}, id="empty-key"),
        pytest.param({"l": [1, 2, 3]}, {"l": [0, 1, 2, 3]}, id="insert-front"),
        pytest.param({"l": [1, 2, 3]}, {"l": [1, 2, 9, 3]}, id="insert-middle"),
        pytest.param({"l": [1, 2, 3]}, {"l": [1, 2, 3, 4, 5]}, id="append"),
        pytest.param({"l": [1, 2]}, {"l": [1, 1, 2]}, id="insert-duplicate"),
        pytest.param({"l": [1, 2, 3]}, {"l": [3, 2, 1]}, id="reverse"),
        pytest.param({"l": [1, 2, 3]}, {"l": [1, 3]}, id="shrink"),
        pytest.param({"l": [1, 2, 3]}, {"l": []}, id="empty-list"),
        pytest.param({"l": [1, True]}, {"l": [1, 1, True]}, id="bool-is-not-int-in-lists"),
        pytest.param({"l": [1.0]}, {"l": [1, 1.0]}, id="float-is-not-int-in-lists"),
        pytest.param(
            {"c": [{"name": "a", "v": 1}, {"name": "b"}]},
            {"c": [{"name": "x"}, {"name": "a", "v": 2}, {"name": "b"}, {"name": "y"}]},
            id="named-items-edited-and-inserted",
        ),
        pytest.param(
            {"c": [{"name": "a"}, {"name": "b"}]},
            {"c": [{"name": "b"}, {"name": "a"}, {"name": "c"}]},
            id="named-items-reordered",
        ),
        pytest.param({"c": [{"v": 1}]}, {"c": [{"v": 1}, {"v": 2}]}, id="unnamed-items"),
        pytest.param({"c": [[1], [2]]}, {"c": [[1], [0], [2]]}, id="nested-lists"),
        pytest.param({"c": [{"name": None}]}, {"c": [{"name": None}, {"name": None}]}, id="null-names"),
        pytest.param({"u": "é"}, {"u": "é", "ключ": "日本"}, id="unicode"),
    ],
)
def test_create_patch_table(src: Any, dst: Any) -> None:
    ops = assert_patch_turns(src, dst)
    if canonical(src) == canonical(dst):
        assert ops == []


def _random_tree(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([0, 1, -1, 2**40])
    if kind == 1:
        return rng.choice([0.0, 1.0, 1.5])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind in (3, 4):
        return rng.choice(["", "a", "b", "~", "/", "a/b~c"])
    if kind == 5:
        return [_random_tree(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6:
        return [
            {"name": rng.choice("abc"), "v": _random_tree(rng, depth + 1)} for _ in range(rng.randrange(4))
        ]
    return {
        rng.choice(["a", "b", "c/d", "e~f", ""]): _random_tree(rng, depth + 1)
        for _ in range(rng.randrange(4))
    }


def _edit(rng: random.Random, tree: Any) -> Any:
    """A copy-on-write edit, like the mutation makes: changed containers are copies, others shared."""
    if isinstance(tree, dict):
        copy_ = dict(tree)
        for key in list(copy_):
            roll = rng.random()
            if roll < 0.2:
                del copy_[key]
            elif roll < 0.5:
                copy_[key] = _edit(rng, copy_[key])
        if rng.random() < 0.3:
            copy_[rng.choice(["new", "x/y", "~z"])] = _random_tree(rng, 3)
        return copy_
    if isinstance(tree, list):
        items = [(_edit(rng, item) if rng.random() < 0.3 else item) for item in tree]
        for _ in range(rng.randrange(3)):
            items.insert(rng.randrange(len(items) + 1), _random_tree(rng, 3))
        if items and rng.random() < 0.1:
            items.pop(rng.randrange(len(items)))
        return items
    return _random_tree(rng, 3) if rng.random() < 0.5 else tree


def test_create_patch_agrees_with_jsonpatch_on_random_trees() -> None:
    rng = random.Random(20261125)
    for _ in range(500):
        src = {"root": _random_tree(rng)}
        dst = _edit(rng, src)
        assert_patch_turns(src, dst)
        assert_patch_turns(src, copy.deepcopy(dst))  # no shared subtrees at all


def test_patch_is_plain_json() -> None:
    ops = create_patch({"a": [1]}, {"a": [1, {"b": "c"}], "d~": None})
    assert orjson.loads(orjson.dumps(ops)) == ops
    assert all(set(op) <= {"op", "path", "value"} for op in ops)
    assert all(op["op"] in {"add", "remove", "replace"} for op in ops)
