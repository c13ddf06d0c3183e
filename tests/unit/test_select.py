"""Selection: the precedence of `select_policies` (what leaves a whole pod alone, then what each
policy asks for) and the match rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from app.engine.config import EngineConfig
from app.engine.select import MAX_REQUESTED, requested_names
from tests.unit.builders import compiled, pod, policy_set
from tests.unit.select_support import MATCHERS, POLICIES, SIDECAR, chosen, select

INJECT = "podgraft.io/inject"
STATUS = "podgraft.io/status"

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
