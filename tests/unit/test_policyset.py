"""The compiled policy set of app/engine/policyset.py: the match index (a pod's annotation and label
keys find the candidate policies; only those have their rules evaluated) and content hashes."""

from __future__ import annotations

import pytest

from app.engine.policyset import PolicySet
from app.policy.model import Match
from tests.unit.builders import compiled, pod, policy_set
from tests.unit.select_support import SIDECAR, chosen, select

# --- the match index ------------------------------------------------------------------------------


def _thousand() -> PolicySet:
    return policy_set(
        compiled(f"p{i:04d}", match={"annotations": {f"example.com/k{i}": "on"}}, **SIDECAR)
        for i in range(1000)
    )


@pytest.fixture(scope="module")
def thousand() -> PolicySet:
    return _thousand()


def test_index_returns_only_candidates_whose_key_the_pod_has(thousand: PolicySet) -> None:
    assert len(thousand) == 1000
    assert len(thousand.by_annotation_key) == 1000
    assert thousand.scan == ()
    annotations = {"example.com/k7": "on", "example.com/k999": "off", "unrelated": "x"}
    candidates = thousand.match_candidates(annotations, {})
    assert [p.name for p in candidates] == ["p0007", "p0999"]
    assert thousand.match_candidates({}, {"example.com/k7": "on"}) == []
    selection = select(pod(annotations=annotations), policies=thousand)
    assert chosen(selection) == ["p0007"], "the candidate whose value differs is not chosen"


def test_only_candidates_have_their_rules_evaluated(
    thousand: PolicySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted on the policy model's `Match.is_empty`, the first thing evaluating a match rule asks
    # (the engine's own functions cannot be replaced in its compiled form).
    calls: list[str] = []
    real = Match.is_empty

    def counting(match: Match) -> bool:
        calls.append(next(iter(match.annotations)))
        return real(match)

    monkeypatch.setattr(Match, "is_empty", counting)
    many_keys = {f"other.example.com/a{i}": "x" for i in range(50)}
    select(pod(annotations={**many_keys, "example.com/k5": "on"}), policies=thousand)
    assert calls == ["example.com/k5"]


def test_explain_scans_all_thousand(thousand: PolicySet) -> None:
    selection = select(pod(annotations={"example.com/k3": "on"}), policies=thousand, explain=True)
    assert len(selection.decisions) == 1000
    assert [d.policy for d in selection.decisions if d.applied] == ["p0003"]


def test_index_keys_by_kind_of_rule() -> None:
    policies = policy_set(
        compiled("ann", match={"annotations": {"b": "1", "a": "1"}}, **SIDECAR),
        compiled("lab", match={"labels": {"app": "web"}}, **SIDECAR),
        compiled(
            "expr", match={"labels": {"matchExpressions": [{"key": "t", "operator": "Exists"}]}}, **SIDECAR
        ),
        compiled(
            "negative",
            match={"labels": {"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}},
            **SIDECAR,
        ),
        compiled("unmatched", **SIDECAR),
    )
    assert list(policies.by_annotation_key) == ["a"]
    assert sorted(policies.by_label_key) == ["app", "t"]
    assert [p.name for p in policies.scan] == ["negative"]
    assert "unmatched" in policies.by_name
    assert [p.name for p in policies.match_candidates({}, {})] == ["negative"]


# --- content hashes (what "already injected" compares) --------------------------------------------


def test_content_hash_ignores_key_order_and_sees_every_change() -> None:
    spec = {
        "parameters": {"a": "1", "b": "2"},
        "volumes": [{"name": "v", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        "annotations": {"x.example.com/a": "1", "x.example.com/b": "2"},
    }
    reordered = {
        "annotations": {"x.example.com/b": "2", "x.example.com/a": "1"},
        "volumes": [{"emptyDir": {"sizeLimit": "1Mi", "medium": "Memory"}, "name": "v"}],
        "parameters": {"b": "2", "a": "1"},
    }
    base = compiled("p", **spec).content_hash
    assert compiled("p", **reordered).content_hash == base
    assert len(base) == 16
    assert compiled("q", **spec).content_hash != base, "the name is part of the hash"
    assert compiled("p", **{**spec, "parameters": {"a": "1", "b": "3"}}).content_hash != base
    assert compiled("p", **{**spec, "required": True}).content_hash != base
    assert compiled("p", **spec, source="elsewhere.yaml").content_hash == base, "the source is not"
