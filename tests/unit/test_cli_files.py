"""app/cli/files.py: the objects of a file as `inject` and `audit -f` read them. JSON Lists item by item;
YAML built from libyaml's events with the safe loader's meaning (checked against it on a real
apiserver's dump and on the YAML features Kubernetes users write), aliases as copies of their own,
alias bombs refused; every error naming the file, and the line."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml

from app.cli.files import MAX_ALIAS_COPIES, WITH_LIBYAML, FileError, Source, json_objects

STORED = Path(__file__).parent / "apiserver_stored"
LIST = {
    "apiVersion": "v1",
    "items": [
        {"kind": "Namespace", "metadata": {"name": "shop", "labels": {"podgraft.io/injection": "enabled"}}},
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


def source(tmp_path: Path, text: str | bytes, name: str = "f.yaml") -> Source:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return Source(str(path))


# --- JSON -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("indent", [None, 4], ids=["compact", "kubectl-indented"])
def test_a_json_list_is_read_item_by_item_as_the_whole_parse_would(indent: int | None) -> None:
    text = json.dumps(LIST, indent=indent)
    assert list(json_objects(text)) == LIST["items"]


def test_json_values_one_after_another_and_objects_that_are_no_list() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"items": "not a list"}}
    assert list(json_objects(json.dumps(pod))) == [pod]
    assert list(json_objects(orjson.dumps([1, 2]).decode())) == [[1, 2]]
    assert list(json_objects(json.dumps(LIST) + "\n" + json.dumps(pod))) == [*LIST["items"], pod]


@pytest.mark.parametrize(
    "text", ['{"items": [{"a": 1}, ', '{"items": [1 2]}', '{"a" 1}', "{", "{1: 2}"], ids=str
)
def test_broken_json_is_an_error_not_a_hang(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        list(json_objects(text))


def test_objects_and_documents_of_json_and_of_its_yaml_flow_style(tmp_path: Path) -> None:
    text = json.dumps(LIST, indent=4)
    expected = [item for item in LIST["items"] if isinstance(item, dict)]
    assert list(source(tmp_path, text, "a.json").objects()) == expected
    assert source(tmp_path, text, "b.json").documents() == [LIST]
    assert source(tmp_path, text + text, "c.json").documents() == [LIST, LIST], "cat a.json b.json"
    flow = "{kind: Pod, metadata: {name: p}}"  # starts like JSON, is YAML
    assert source(tmp_path, flow).documents() == [{"kind": "Pod", "metadata": {"name": "p"}}]
    assert list(source(tmp_path, flow).objects()) == [{"kind": "Pod", "metadata": {"name": "p"}}]


# --- YAML: the safe loader's meaning, without its node graph -------------------------------------------


@pytest.mark.parametrize("name", ["audit/dump.yaml", "audit/list.yaml", "pod.yaml", "policies.yaml"])
def test_yaml_documents_are_what_the_safe_loader_reads(tmp_path: Path, name: str) -> None:
    text = (STORED / name).read_text()
    assert source(tmp_path, text).documents() == [d for d in yaml.safe_load_all(text) if d is not None]


YAML_FEATURES = {
    "scalars": "a: yes\nb: '1'\nc: 0x1F\nd: 2024-01-01\ne: ~\nf: 1.5\ng: !!binary aGVsbG8=\nh: .inf\n"
    "i: 0o17\nj: !!str 12\nk: 1_000\nl: 'on'\nm: 1e3\nn: -0\no: null\np: ''\nq: |\n  two\n  lines\n",
    "merge": "a: &base {x: 1, y: 2}\nb: {<<: *base, y: 3}\n",
    "merge-list": "- &a {x: 1, y: 2}\n- &b {x: 3, z: 4}\n- {<<: [*a, *b], w: 5}\n",
    "documents": "--- \n---\na: 1\n...\n---\n- x\n",
    "keys": "{a: 1, 1: b, null: c, true: d}\n",
    "explicit-collections": "a: !!map {b: !!seq [1]}\n",
}


@pytest.mark.parametrize("text", YAML_FEATURES.values(), ids=YAML_FEATURES)
def test_yaml_features_mean_what_they_mean_to_the_safe_loader(tmp_path: Path, text: str) -> None:
    assert source(tmp_path, text).documents() == [d for d in yaml.safe_load_all(text) if d is not None]


def test_an_alias_is_a_copy_of_its_own(tmp_path: Path) -> None:
    text = "containers:\n- name: a\n  env: &env [{name: X, value: '1'}]\n- name: b\n  env: *env\n"
    [document] = source(tmp_path, text).documents()
    first, second = document["containers"]
    assert first["env"] == second["env"]
    assert first["env"] is not second["env"]
    assert first["env"][0] is not second["env"][0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: *nope\n", "line 1, column 4: found undefined alias 'nope'"),
        ("a: &x [*x]\n", "line 1, column 8: found recursive alias 'x'"),
        ("[a]: 1\n", "found an unhashable key"),
        ("a: !foo 1\n", "line 1, column 4: could not determine a constructor for the tag '!foo'"),
        ("a: [<<]\n", "a merge (<<) can only be a mapping's key"),
        ("a: {<<: 1}\n", "expected a mapping or a list of mappings for merging"),
        ("a: [\n", "line 2, column 1: "),
        ("a: b: c\n", "line 1, column 5: mapping values are not allowed in this context"),
    ],
    ids=str,
)
def test_a_yaml_error_names_the_file_and_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FileError) as caught:
        source(tmp_path, text).documents()
    assert str(caught.value).startswith(f"{tmp_path / 'f.yaml'}: not valid YAML: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    with pytest.raises(
        FileError, match=f"YAML aliases expand to more than {MAX_ALIAS_COPIES:,} copied nodes"
    ):
        source(tmp_path, "\n".join(lines) + "\n").documents()


def test_a_list_is_streamed_item_by_item_from_yaml_too(tmp_path: Path) -> None:
    text = (STORED / "audit" / "dump.yaml").read_text()
    expected = yaml.safe_load(text)["items"]
    assert list(source(tmp_path, text).objects()) == expected
    multi = yaml.safe_dump_all([LIST, {"kind": "Pod", "metadata": {"name": "q"}}, None, "text"])
    assert [o["metadata"]["name"] for o in source(tmp_path, multi).objects()] == ["shop", "web-1-a", "q"]


def test_libyaml_is_used_when_pyyaml_has_it() -> None:
    assert WITH_LIBYAML is hasattr(yaml, "CSafeLoader")


# --- reading -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a: caf\xe9\n", "not UTF-8 text: byte 0xe9 on line 1"),
        (b"a: 1\nb: 2\n\xff\n", "not UTF-8 text: byte 0xff on line 3"),
        (b'{"kind": "Pod", "metadata": {', "not valid JSON: line 1, column 30: "),
        (b"[" * 2000 + b"]" * 2000, "not valid JSON: nested too deeply"),
    ],
    ids=["latin-1", "binary", "truncated-json", "deep-json"],
)
def test_a_file_error_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(FileError) as caught:
        source(tmp_path, content, "x.json").documents()
    assert str(caught.value).startswith(f"{tmp_path / 'x.json'}: {message}")


def test_a_missing_file_and_a_byte_order_mark(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=r"^/nonexistent/x.yaml: cannot read: No such file or directory$"):
        Source("/nonexistent/x.yaml")
    assert source(tmp_path, b"\xef\xbb\xbfkind: Pod\n").documents() == [{"kind": "Pod"}]


def test_stdin_is_named_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a: [\n")))
    with pytest.raises(FileError, match=r"^<stdin>: not valid YAML: line 2"):
        Source("-").documents()
