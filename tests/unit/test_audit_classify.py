"""app/audit/classify.py: each state of a pod's policy, decided by the webhook's own engine."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from app.audit.classify import PodAudit, audit_pod, status_problem
from app.engine.config import EngineConfig
from app.engine.inject import inject_pod
from app.engine.policyset import PolicySet
from tests.unit.builders import compiled, pod, policy_set

CONFIG = EngineConfig()
OPTED_IN = {"podgraft.io/injection": "enabled"}
STATUS = "podgraft.io/status"


def shipper(tag: str = "3.2.0") -> Any:
    return compiled(
        "log-shipper",
        sidecars=[{"name": "log-shipper", "image": f"fluent/fluent-bit:{tag}"}],
        env=[{"name": "LOG_DIR", "value": "/var/log/app"}],
    )


LIVE = policy_set(
    shipper(),
    compiled("team-a", namespaceSelector={"matchLabels": {"team": "a"}}, env=[{"name": "T", "value": "a"}]),
)
OLD = policy_set(shipper("3.1.9"))


def asking(value: str = "log-shipper", **extra: Any) -> dict[str, Any]:
    found = pod("web-1", annotations={"podgraft.io/inject": value}, **extra)
    found["metadata"]["namespace"] = "shop"
    return found


def injected(item: dict[str, Any], policies: PolicySet) -> dict[str, Any]:
    result = inject_pod(item, namespace="shop", namespace_labels=OPTED_IN, policies=policies, config=CONFIG)
    assert result.mutated is not None, result.warnings
    return copy.deepcopy(dict(result.mutated))


def audit(
    item: dict[str, Any], labels: dict[str, str] | None = OPTED_IN, policies: PolicySet = LIVE
) -> PodAudit:
    return audit_pod(item, namespace_labels=labels, policies=policies, config=CONFIG)


def states(result: PodAudit) -> dict[str, str]:
    return {s.policy: s.state for s in result.policies}


def test_injected_with_the_live_policy_is_current_and_recorded_hash_equals_live() -> None:
    [state] = audit(injected(asking(), LIVE)).policies
    assert (state.state, state.detail) == ("current", "")
    assert state.recorded_hash == state.live_hash == LIVE.by_name["log-shipper"].content_hash


def test_injected_with_an_older_version_is_stale_with_both_hashes_and_the_changed_image() -> None:
    [state] = audit(injected(asking(), OLD)).policies
    old, live = OLD.by_name["log-shipper"].content_hash, LIVE.by_name["log-shipper"].content_hash
    assert state.state == "stale"
    assert (state.recorded_hash, state.live_hash) == (old, live)
    assert (
        state.detail
        == f"{old} -> {live}: log-shipper image fluent/fluent-bit:3.1.9 -> fluent/fluent-bit:3.2.0"
    )


def test_never_injected_is_missing_naming_what_is_absent() -> None:
    [state] = audit(asking()).policies
    assert state.state == "missing"
    assert "container 'log-shipper'" in state.detail
    assert state.recorded_hash is None


def test_a_matching_policy_counts_like_a_requested_one() -> None:
    policies = policy_set(
        compiled("agent", match={"labels": {"metrics": "on"}}, containers=[{"name": "agent", "image": "a:1"}])
    )
    found = pod("x", labels={"metrics": "on"})
    found["metadata"]["namespace"] = "shop"
    assert states(audit(found, policies=policies)) == {"agent": "missing"}
    assert states(audit(injected(found, policies), policies=policies)) == {"agent": "current"}


@pytest.mark.parametrize(
    ("item", "labels", "words"),
    [
        pytest.param(
            asking("team-a"), {**OPTED_IN, "team": "b"}, "namespaceSelector", id="namespace-selector"
        ),
        pytest.param(asking("nope"), OPTED_IN, "no such policy", id="no-such-policy"),
        pytest.param(asking(), {}, "not opted in", id="namespace-not-opted-in"),
        pytest.param(
            asking(containers=[{"name": "app", "image": "a"}, {"name": "log-shipper", "image": "mine"}]),
            OPTED_IN,
            "already has a container named 'log-shipper'",
            id="conflict",
        ),
    ],
)
def test_what_the_webhook_would_not_inject_now_is_refused_with_its_reason(
    item: dict[str, Any], labels: dict[str, str], words: str
) -> None:
    [state] = audit(item, labels).policies
    assert state.state == "refused"
    assert words in state.detail


def test_a_recorded_policy_that_no_longer_exists_is_orphaned() -> None:
    item = injected(asking(), LIVE)
    status = json.loads(item["metadata"]["annotations"][STATUS])
    status["policies"].append({"name": "retired", "hash": "0123456789abcdef"})
    item["metadata"]["annotations"][STATUS] = json.dumps(status)
    result = audit(item)
    assert states(result) == {"log-shipper": "current", "retired": "orphaned"}
    assert result.policies[1].detail == "the policy no longer exists"
    assert result.policies[1].recorded_hash == "0123456789abcdef"


def test_a_recorded_policy_in_a_namespace_opted_out_since_is_orphaned_with_the_reason() -> None:
    [state] = audit(injected(asking(), LIVE), {"podgraft.io/injection": "disabled"}).policies
    assert state.state == "orphaned"
    assert "no longer applies" in state.detail
    assert "opted out" in state.detail


def test_a_forged_status_is_no_proof_the_content_decides() -> None:
    forged = asking()
    forged["metadata"]["annotations"][STATUS] = json.dumps(
        {"policies": [{"name": "log-shipper", "hash": LIVE.by_name["log-shipper"].content_hash}]}
    )
    [state] = audit(forged).policies
    assert state.state == "stale", "it claims the live version but holds none of it"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not json", "is not JSON"),
        ('{"policies": "x"}', "not a Podgraft status"),
        ('{"policies": [{"name": 1}]}', "not a Podgraft status"),
        ("[]", "not a Podgraft status"),
    ],
    ids=["garbage", "policies-not-a-list", "entry-without-strings", "a-list"],
)
def test_a_corrupt_status_is_reported_and_the_pod_audited_by_its_contents(value: str, problem: str) -> None:
    item = injected(asking(), LIVE)
    item["metadata"]["annotations"][STATUS] = value
    result = audit(item)
    assert problem in result.note
    [state] = result.policies
    assert state.state == "current"
    assert "not recorded" in state.detail
    assert status_problem({}, STATUS) == ""


def test_opted_out_excluded_and_unconcerned_pods_have_nothing_to_audit() -> None:
    assert audit(asking("false")).policies == ()
    assert audit(pod("plain")).policies == ()
    excluded = asking()
    excluded["metadata"]["namespace"] = "kube-system"
    assert audit(excluded).policies == ()
