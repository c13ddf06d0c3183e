"""Selection: the precedence of `select_policies`, the match rules, and the match index."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from app.engine import select as select_module
from app.engine.config import EngineConfig
from app.engine.policyset import PolicySet
from app.engine.select import (
    MAX_REQUESTED,
    Selection,
    requested_names,
    select_policies,
)
from tests.unit.builders import compiled, pod, policy_set

INJECT = "podgraft.io/inject"
STATUS = "podgraft.io/status"
CONFIG = EngineConfig()

SIDECAR = {"sidecars": [{"name": "helper", "image": "busybox:1.36"}]}
MATCHERS = (
    compiled("by-annotation", match={"annotations": {"example.com/ship": "true"}}, **SIDECAR),
    compiled("by-label", match={"labels": {"app": "web"}}, **SIDECAR),
)
EXPRESSIONS = (
    compiled(
        "by-expression",
        match={"labels": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
        **SIDECAR,
    ),
    compiled(
        "not-in",
        match={"labels": {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}},
        **SIDECAR,
    ),
    compiled(
        "exists", match={"labels": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}, **SIDECAR
    ),
    compiled(
        "not-exists",
        match={"labels": {"matchExpressions": [{"key": "legacy", "operator": "DoesNotExist"}]}},
        **SIDECAR,
    ),
)
POLICIES = policy_set(
    compiled("plain", **SIDECAR),
    compiled("second", env=[{"name": "X", "value": "1"}]),
    MATCHERS,
    compiled(
        "scoped",
        namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
        **SIDECAR,
    ),
    compiled(
        "scoped-required",
        required=True,
        namespaceSelector={"matchLabels": {"team": "payments"}},
        **SIDECAR,
    ),
)


def select(
    subject: Mapping[str, Any],
    *,
    namespace: str = "default",
    namespace_labels: Mapping[str, str] | None = None,
    policies: PolicySet = POLICIES,
    config: EngineConfig = CONFIG,
    **kwargs: Any,
) -> Selection:
    return select_policies(
        subject,
        namespace=namespace,
        namespace_labels=namespace_labels,
        policies=policies,
        config=config,
        **kwargs,
    )


def chosen(selection: Selection) -> list[str]:
    return [p.name for p in selection.policies]


def status(**hashes: str) -> str:
    return orjson.dumps({"policies": [{"name": n, "hash": h} for n, h in hashes.items()]}).decode()


# --- steps 1-4: the whole pod is left alone -------------------------------------------------------

ASKING = {INJECT: "plain", "example.com/ship": "true"}


@pytest.mark.parametrize(
    ("namespace", "namespace_labels", "annotations", "code", "words"),
    [
        pytest.param("kube-system", None, ASKING, "namespace-excluded", "never injected", id="kube-system"),
        pytest.param("podgraft", None, ASKING, "namespace-excluded", "never injected", id="own-namespace"),
        pytest.param(
            "kube-system",
            {"podgraft.io/injection": "enabled"},
            ASKING,
            "namespace-excluded",
            "never injected",
            id="never-beats-opt-in",
        ),
        pytest.param(
            "shop", {}, ASKING, "namespace-not-enabled", "not opted in", id="namespace-not-opted-in"
        ),
        pytest.param(
            "shop",
            {"podgraft.io/injection": "disabled"},
            ASKING,
            "namespace-not-enabled",
            "opted out",
            id="namespace-opted-out",
        ),
        pytest.param(
            "shop",
            {"podgraft.io/injection": "true"},
            ASKING,
            "namespace-not-enabled",
            "not opted in",
            id="namespace-label-other-value",
        ),
        pytest.param(
            "shop",
            None,
            {**ASKING, "kubernetes.io/config.mirror": "abc"},
            "mirror-pod",
            "mirror",
            id="mirror-pod",
        ),
        pytest.param(
            "shop",
            {"podgraft.io/injection": "enabled"},
            {INJECT: "false", "example.com/ship": "true"},
            "opt-out",
            "opts out",
            id="opt-out-beats-match",
        ),
        pytest.param("shop", None, {INJECT: " FALSE "}, "opt-out", "opts out", id="opt-out-case-and-space"),
        pytest.param("shop", None, {INJECT: "no"}, "opt-out", "opts out", id="opt-out-no"),
        pytest.param("shop", None, {INJECT: "off"}, "opt-out", "opts out", id="opt-out-off"),
        pytest.param("shop", None, {INJECT: "disabled"}, "opt-out", "opts out", id="opt-out-disabled"),
    ],
)
def test_whole_pod_skipped(
    namespace: str,
    namespace_labels: dict[str, str] | None,
    annotations: dict[str, str],
    code: str,
    words: str,
) -> None:
    selection = select(pod(annotations=annotations), namespace=namespace, namespace_labels=namespace_labels)
    assert selection.skip_code == code
    assert selection.skip_reason is not None
    assert words in selection.skip_reason
    assert selection.policies == ()
    assert selection.decisions == ()


def test_unknown_namespace_labels_trust_the_webhook_configuration() -> None:
    selection = select(pod(annotations={INJECT: "plain"}), namespace="shop", namespace_labels=None)
    assert selection.skip_reason is None
    assert chosen(selection) == ["plain"]


def test_opted_in_namespace_is_injected() -> None:
    selection = select(
        pod(annotations={INJECT: "plain"}),
        namespace="shop",
        namespace_labels={"podgraft.io/injection": "enabled"},
    )
    assert chosen(selection) == ["plain"]


def test_never_namespaces_come_from_the_config() -> None:
    config = EngineConfig(never_namespaces=frozenset(["tenant-x"]))
    assert select(pod(annotations={INJECT: "plain"}), namespace="tenant-x", config=config).skip_code == (
        "namespace-excluded"
    )
    assert chosen(select(pod(annotations={INJECT: "plain"}), namespace="kube-system", config=config)) == [
        "plain"
    ]


# --- steps 5-8: per policy ------------------------------------------------------------------------


def test_requested_order_is_kept_and_matches_follow() -> None:
    subject = pod(annotations={INJECT: "second, plain", "example.com/ship": "true"})
    selection = select(subject)
    assert chosen(selection) == ["second", "plain", "by-annotation"]
    reasons = {d.policy: d.reason for d in selection.decisions}
    assert reasons["second"] == f"requested by {INJECT}"
    assert reasons["by-annotation"] == "selected by its match rules"
    assert selection.warnings == ()


def test_requested_and_matching_policy_is_chosen_once() -> None:
    selection = select(pod(annotations={INJECT: "by-annotation,by-annotation", "example.com/ship": "true"}))
    assert chosen(selection) == ["by-annotation"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("plain", ["plain"], id="one"),
        pytest.param("plain,second", ["plain", "second"], id="two"),
        pytest.param(" second ,  plain ", ["second", "plain"], id="spaces"),
        pytest.param("plain,,second,", ["plain", "second"], id="empty-items"),
        pytest.param("true", [], id="bare-true-asks-for-nothing"),
        pytest.param("enabled,plain", ["plain"], id="enable-word-skipped"),
        pytest.param("", [], id="empty"),
    ],
)
def test_requested_names(value: str, expected: list[str]) -> None:
    names, warnings = requested_names(value)
    assert names == expected
    assert warnings == []


def test_unknown_and_invalid_names_are_warnings() -> None:
    selection = select(pod(annotations={INJECT: "plain,nope,Bad_Name," + "x" * 100}))
    assert chosen(selection) == ["plain"]
    assert any("'nope' does not exist" in w for w in selection.warnings)
    assert any("'Bad_Name' is not a valid policy name" in w for w in selection.warnings)
    long_warning = next(w for w in selection.warnings if "x" * 10 in w)
    assert "x" * 65 not in long_warning, "a hostile name is cut in the warning"
    nope = next(d for d in selection.decisions if d.policy == "nope")
    assert not nope.applied
    assert nope.reason == "requested, but no such policy"


def test_more_than_max_requested_names() -> None:
    value = ",".join(f"p{i}" for i in range(MAX_REQUESTED + 10))
    names, warnings = requested_names(value)
    assert names == [f"p{i}" for i in range(MAX_REQUESTED)]
    assert warnings == [f"podgraft: only the first {MAX_REQUESTED} requested policies are considered"]
    selection = select(pod(annotations={INJECT: value}))
    missing = [w for w in selection.warnings if "does not exist" in w]
    assert len(missing) == MAX_REQUESTED


@pytest.mark.parametrize(
    ("annotations", "labels", "expected"),
    [
        pytest.param({"example.com/ship": "true"}, {}, {"by-annotation"}, id="annotation-fits"),
        pytest.param({"example.com/ship": "false"}, {}, set(), id="annotation-other-value"),
        pytest.param({}, {"app": "web"}, {"by-label"}, id="label-shorthand"),
        pytest.param({}, {"app": "api"}, set(), id="label-other-value"),
        pytest.param({}, {"tier": "b"}, {"by-expression"}, id="in"),
        pytest.param({}, {"tier": "c"}, set(), id="in-other-value"),
        pytest.param({}, {"env": "dev"}, {"not-in"}, id="not-in-other-value"),
        pytest.param({}, {"env": "prod"}, set(), id="not-in-listed-value"),
        pytest.param({}, {"team": ""}, {"exists"}, id="exists-empty-value"),
        pytest.param({}, {"legacy": "yes", "env": "prod"}, set(), id="does-not-exist-present"),
        pytest.param(
            {"example.com/ship": "true"}, {"app": "web"}, {"by-annotation", "by-label"}, id="two-rules"
        ),
    ],
)
def test_match_rules(annotations: dict[str, str], labels: dict[str, str], expected: set[str]) -> None:
    # NotIn and DoesNotExist fit a pod that lacks the key: those two match every pod without it.
    implicit = set()
    if "env" not in labels:
        implicit.add("not-in")
    if "legacy" not in labels:
        implicit.add("not-exists")
    selection = select(
        pod(annotations=annotations, labels=labels), policies=policy_set(MATCHERS, EXPRESSIONS)
    )
    assert set(chosen(selection)) == expected | implicit


def test_all_rules_of_one_policy_must_fit() -> None:
    policies = policy_set(
        compiled(
            "both",
            match={
                "annotations": {"example.com/ship": "true"},
                "labels": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "Exists"}],
                },
            },
            **SIDECAR,
        )
    )
    fits = pod(annotations={"example.com/ship": "true"}, labels={"app": "web", "tier": "x"})
    assert chosen(select(fits, policies=policies)) == ["both"]
    for missing in ("app", "tier"):
        labels = {k: v for k, v in {"app": "web", "tier": "x"}.items() if k != missing}
        assert (
            chosen(select(pod(annotations={"example.com/ship": "true"}, labels=labels), policies=policies))
            == []
        )


def test_non_string_label_values_never_match() -> None:
    policies = policy_set(compiled("by-label", match={"labels": {"app": "web"}}, **SIDECAR))
    subject = pod(labels={"app": ["web"]}, annotations={"example.com/ship": 1})
    assert chosen(select(subject, policies=policies)) == []


def test_namespace_selector_refusal_is_a_warning() -> None:
    selection = select(pod(annotations={INJECT: "scoped,plain"}), namespace="other")
    assert chosen(selection) == ["plain"]
    assert selection.denial is None
    assert any("'scoped' may not be used in namespace 'other'" in w for w in selection.warnings)
    scoped = next(d for d in selection.decisions if d.policy == "scoped")
    assert not scoped.applied
    assert "namespaceSelector" in scoped.reason


def test_namespace_selector_sees_the_metadata_name_label_without_a_cache() -> None:
    assert chosen(select(pod(annotations={INJECT: "scoped"}), namespace="shop")) == ["scoped"]


def test_namespace_selector_refusal_of_a_required_policy_is_a_denial() -> None:
    selection = select(
        pod(annotations={INJECT: "scoped-required"}),
        namespace="shop",
        namespace_labels={"podgraft.io/injection": "enabled", "team": "web"},
    )
    assert selection.denial is not None
    assert selection.denial.startswith("podgraft: required policy 'scoped-required' may not be used")
    assert chosen(selection) == []
    allowed = select(
        pod(annotations={INJECT: "scoped-required"}),
        namespace="shop",
        namespace_labels={"podgraft.io/injection": "enabled", "team": "payments"},
    )
    assert allowed.denial is None
    assert chosen(allowed) == ["scoped-required"]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(lambda: status(plain=POLICIES.by_name["plain"].content_hash), id="live-hash"),
        pytest.param(lambda: status(plain="0000000000000000"), id="other-hash"),
        pytest.param(lambda: "{" * 5000, id="garbage"),
    ],
)
def test_selection_never_reads_the_status_annotation(raw: Any) -> None:
    # On CREATE the annotation is whatever the pod's author wrote: whether a policy is injected
    # already is decided from the pod's contents (tests/unit/test_presence.py).
    selection = select(pod(annotations={INJECT: "plain,second", STATUS: raw()}))
    assert chosen(selection) == ["plain", "second"]
    assert all(d.applied for d in selection.decisions)


def test_odd_metadata_shapes_select_nothing() -> None:
    for metadata in ([], "x", {"annotations": ["a"]}, {"annotations": {"podgraft.io/inject": ["plain"]}}):
        selection = select({"metadata": metadata, "spec": {}})
        assert selection.skip_reason is None
        assert chosen(selection) == []


def test_explain_lists_every_policy() -> None:
    selection = select(pod(annotations={INJECT: "plain"}), explain=True)
    assert sorted(d.policy for d in selection.decisions) == sorted(POLICIES.by_name)
    by_name = {d.policy: d for d in selection.decisions}
    assert by_name["plain"].applied
    assert by_name["by-label"].reason == "not requested and its match rules do not fit"
    assert len(select(pod(annotations={INJECT: "plain"})).decisions) < len(POLICIES.by_name)


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
    calls: list[str] = []
    real = select_module.match_fits

    def counting(match: Any, annotations: Mapping[str, str], labels: Mapping[str, str]) -> bool:
        calls.append(next(iter(match.annotations)))
        return real(match, annotations, labels)

    monkeypatch.setattr(select_module, "match_fits", counting)
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
