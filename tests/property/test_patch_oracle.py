"""The hand-written patch builder against `jsonpatch` as the oracle, on arbitrary JSON trees."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import orjson
from hypothesis import given
from hypothesis import strategies as st

from app.engine.patch import create_patch

KEYS = st.sampled_from(["name", "a", "b", "x/y", "t~0", "~", "/", "env", ""])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=4),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)),
    max_leaves=25,
)
NAMED = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "c", "d", "e"]), "v": JSON}), max_size=5
)


def _same(a: Any, b: Any) -> bool:
    return bool(orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS))


def _check(src: Any, dst: Any) -> None:
    before = copy.deepcopy(src)
    ops = create_patch(src, dst)
    assert _same(src, before), "create_patch must not modify its input"
    result = jsonpatch.apply_patch(copy.deepcopy(src), ops)
    assert _same(result, dst), (ops, result, dst)


@given(src=JSON, dst=JSON)
def test_any_two_trees(src: Any, dst: Any) -> None:
    _check({"root": src}, {"root": dst})


@given(src=st.dictionaries(KEYS, JSON, max_size=5), data=st.data())
def test_copy_on_write_edits(src: dict[str, Any], data: st.DataObject) -> None:
    dst = dict(src)  # shares subtrees with src, like the mutation does
    for key in data.draw(st.lists(KEYS, max_size=3)):
        dst[key] = data.draw(JSON)
    for key in data.draw(st.lists(st.sampled_from(sorted(src) or ["a"]), max_size=2)):
        dst.pop(key, None)
    _check(src, dst)


@given(src=NAMED, data=st.data())
def test_named_lists_with_insertions_and_edits(src: list[dict[str, Any]], data: st.DataObject) -> None:
    dst = list(src)
    for _ in range(data.draw(st.integers(0, 3))):
        dst.insert(
            data.draw(st.integers(0, len(dst))), {"name": data.draw(st.sampled_from("abcxyz")), "v": 1}
        )
    if dst and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(dst) - 1))
        dst[index] = {**dst[index], "v": data.draw(JSON)}
    _check({"spec": {"containers": src}}, {"spec": {"containers": dst}})


def test_pointer_escaping() -> None:
    ops = create_patch({"metadata": {"annotations": {}}}, {"metadata": {"annotations": {"a/b~c": "1"}}})
    assert ops == [{"op": "add", "path": "/metadata/annotations/a~1b~0c", "value": "1"}]


def test_types_are_told_apart() -> None:
    assert create_patch({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert create_patch({"a": 1}, {"a": 1.0}) == [{"op": "replace", "path": "/a", "value": 1.0}]
    assert create_patch({"a": [1]}, {"a": [1]}) == []
    assert create_patch({"a": 0.0}, {"a": -0.0}) == [{"op": "replace", "path": "/a", "value": -0.0}]
