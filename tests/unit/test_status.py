"""The status annotation: read as untrusted data (garbage reads as nothing), written compact and sorted."""

from __future__ import annotations

import pytest

from app.engine.status import MAX_ENTRIES, read_status, status_value

STATUS = "podgraft.io/status"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[]", id="array"),
        pytest.param('{"policies": "plain"}', id="policies-not-a-list"),
        pytest.param('{"policies": [1, {"name": 2, "hash": "x"}, {"name": "plain"}]}', id="bad-entries"),
        pytest.param("", id="empty"),
        pytest.param("{" * 5000, id="deep-garbage"),
        pytest.param(7, id="not-a-string"),
    ],
)
def test_garbage_reads_as_nothing(raw: object) -> None:
    assert read_status({STATUS: raw}, STATUS) == {}


def test_valid_entries_are_kept() -> None:
    raw = '{"policies": [{"name": "a", "hash": "1"}, {"name": "b"}, {"name": "c", "hash": "3"}]}'
    assert read_status({STATUS: raw}, STATUS) == {"a": "1", "c": "3"}
    assert read_status({}, STATUS) == {}


def test_only_the_first_entries_are_read() -> None:
    entries = ",".join(f'{{"name": "p{i}", "hash": "h"}}' for i in range(MAX_ENTRIES + 50))
    assert len(read_status({STATUS: f'{{"policies": [{entries}]}}'}, STATUS)) == MAX_ENTRIES


def test_status_value_is_compact_sorted_json() -> None:
    value = status_value({"b": "2222", "a": "1111"}, ["z", "y", "z"])
    assert (
        value == '{"policies":[{"name":"a","hash":"1111"},{"name":"b","hash":"2222"}],"containers":["y","z"]}'
    )
    assert status_value({"a": "1"}, []) == '{"policies":[{"name":"a","hash":"1"}]}'
