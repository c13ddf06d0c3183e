"""app/explain: which mutating webhooks the apiserver calls for a pod, in its order, on the webhook
configurations as the apiserver stored them; and the explanation of live pods and pod templates by
the webhook's engine and the audit."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.audit.classify import audit_pod
from app.explain.report import as_data, explain, text
from app.explain.webhooks import pod_create_webhooks, rule_covers_pod_create, selector_text
from app.rollout.runner import template_pod
from tests.unit.rollout_support import CONFIG, namespace_labels, policies, stored


def _configurations() -> list[dict[str, Any]]:
    return list(stored("webhooks.yaml")["configurations"])


def _called(labels: dict[str, str], namespace: dict[str, str] | None = None) -> dict[str, bool]:
    matches = pod_create_webhooks(
        _configurations(),
        namespace_labels=namespace_labels() if namespace is None else namespace,
        pod_labels=labels,
    )
    return {m.webhook: m.called for m in matches}


def test_configurations_are_called_in_name_order_and_the_charts_is_podgrafts() -> None:
    matches = pod_create_webhooks(
        _configurations(), namespace_labels=namespace_labels(), pod_labels={"team": "a"}
    )
    assert [(m.configuration, m.webhook, m.podgraft) for m in matches] == [
        ("a-labeller", "a-labeller.e2e.podgraft.io", False),
        ("pg-podgraft", "podgraft.podgraft.io", True),
    ]
    assert [m.called for m in matches] == [True, True]
    assert matches[0].match_conditions == 1


@pytest.mark.parametrize(
    ("pod_labels", "namespace", "called"),
    [
        pytest.param(
            {"app": "web"},
            None,
            {"a-labeller.e2e.podgraft.io": False, "podgraft.podgraft.io": True},
            id="opted-in",
        ),
        pytest.param(
            {"app": "web", "podgraft.io/injection": "disabled"},
            None,
            {"a-labeller.e2e.podgraft.io": False, "podgraft.podgraft.io": False},
            id="pod-labelled-disabled",
        ),
        pytest.param(
            {"team": "a"},
            {"kubernetes.io/metadata.name": "plain"},
            {"a-labeller.e2e.podgraft.io": True, "podgraft.podgraft.io": False},
            id="namespace-without-the-label",
        ),
        pytest.param(
            {"app": "web"},
            {"kubernetes.io/metadata.name": "podgraft", "podgraft.io/injection": "enabled"},
            {"a-labeller.e2e.podgraft.io": False, "podgraft.podgraft.io": False},
            id="podgrafts-own-namespace",
        ),
    ],
)
def test_selectors_as_registered_decide(
    pod_labels: dict[str, str], namespace: Any, called: dict[str, bool]
) -> None:
    assert _called(pod_labels, namespace) == called


def test_why_a_webhook_is_not_called_names_the_selector() -> None:
    [_, ours] = pod_create_webhooks(
        _configurations(), namespace_labels={"kubernetes.io/metadata.name": "plain"}, pod_labels={}
    )
    assert ours.reasons[0] == (
        "namespaceSelector podgraft.io/injection=enabled,kubernetes.io/metadata.name notin "
        "(kube-system,kube-public,kube-node-lease,podgraft): does not match"
    )
    assert ours.reasons[1] == "objectSelector podgraft.io/injection notin (disabled): matches"
    assert ours.reasons[2] == "rules: cover CREATE of pods"


@pytest.mark.parametrize(
    ("rule", "covers"),
    [
        (
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            },
            True,
        ),
        (
            {
                "operations": ["*"],
                "apiGroups": ["*"],
                "apiVersions": ["*"],
                "resources": ["*/*"],
                "scope": "*",
            },
            True,
        ),
        ({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*"]}, True),
        (
            {
                "operations": ["UPDATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods/ephemeralcontainers"],
            },
            False,
        ),
        (
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods/status"],
            },
            False,
        ),
        (
            {"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["pods"]},
            False,
        ),
        (
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Cluster",
            },
            False,
        ),
    ],
)
def test_rules_as_the_apiserver_matches_them(rule: dict[str, Any], covers: bool) -> None:
    assert rule_covers_pod_create(rule) is covers


def test_selector_text_is_the_label_selector_syntax() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "t", "operator": "In", "values": ["x", "y"]},
            {"key": "u", "operator": "NotIn", "values": ["z"]},
            {"key": "v", "operator": "Exists"},
            {"key": "w", "operator": "DoesNotExist"},
        ],
    }
    assert selector_text(selector) == "a=1,b=2,t in (x,y),u notin (z),v,!w"
    assert selector_text({}) == "everything"


def _explain(pod: dict[str, Any], version: str = "v1", **options: Any) -> Any:
    labels = options.pop("namespace_labels", namespace_labels())
    return explain(
        pod,
        subject="pod",
        namespace=str(pod["metadata"].get("namespace") or "shop"),
        namespace_labels=labels,
        policies=policies(version),
        config=CONFIG,
        live=options.pop("live", True),
        webhooks=options.pop("webhooks", _configurations()),
        **options,
    )


def _running_pod() -> dict[str, Any]:
    final = stored("deployment-rollout.yaml")["final"]
    return next(p for p in final["pods"] if not p["metadata"].get("deletionTimestamp"))


def test_an_injected_pod_is_injected_and_current_by_the_engine_and_the_audit() -> None:
    found = _explain(_running_pod())
    [line] = found.policies
    assert (line.policy, line.verdict, line.state) == ("stamp", "injected", "current")
    assert line.reason.startswith("requested by podgraft.io/inject; already injected and current (hash ")
    assert found.opt_in == "opted in (podgraft.io/injection=enabled)"
    assert [m.called for m in found.webhooks] == [False, True]
    out = text(found)
    assert "  1. pg-podgraft / podgraft.podgraft.io (Podgraft): called; failurePolicy " in out
    assert "  -  a-labeller / a-labeller.e2e.podgraft.io: not called" in out
    assert "matchConditions (CEL) of a-labeller.e2e.podgraft.io (1): not evaluated here" in out


def test_after_the_edit_the_same_pod_is_injected_but_stale() -> None:
    [line] = _explain(_running_pod(), "v2").policies
    assert line.verdict == "injected, stale"
    assert line.state == "stale"
    assert line.detail.endswith(": env 'STAMP' in container 'app': value v1 -> v2")
    assert line.reason.startswith("requested by podgraft.io/inject; updated from version ")


def test_an_opted_out_pod_is_skipped_by_the_engine_and_not_sent_by_the_webhook() -> None:
    pod = _running_pod()
    pod["metadata"]["annotations"]["podgraft.io/inject"] = "false"
    pod["metadata"]["labels"]["podgraft.io/injection"] = "disabled"
    found = _explain(pod)
    assert found.skipped == "the pod opts out (podgraft.io/inject: false)"
    assert [m.called for m in found.webhooks] == [False, False]


def test_a_pod_in_a_namespace_without_the_label_is_skipped_and_podgraft_not_called() -> None:
    pod = _running_pod()
    found = _explain(pod, namespace_labels={"kubernetes.io/metadata.name": pod["metadata"]["namespace"]})
    assert found.opt_in == "not opted in (no podgraft.io/injection=enabled label)"
    assert (
        found.skipped
        == f"namespace {pod['metadata']['namespace']!r} is not opted in (label podgraft.io/injection=enabled)"
    )
    assert "! Podgraft's webhook is not called for this pod" in text(found)


def test_a_pod_admitted_while_podgraft_was_down_is_not_injected() -> None:
    [line] = _explain(stored("dry-run-pods.yaml")["down"]).policies
    assert line.verdict == "not injected"
    assert line.reason.startswith("requested by podgraft.io/inject; injected")


def test_a_template_would_be_injected_and_its_running_pods_are_summarised() -> None:
    final = stored("deployment-rollout.yaml")["final"]
    running = [
        audit_pod(p, namespace_labels=namespace_labels(), policies=policies("v2"), config=CONFIG)
        for p in final["pods"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    pod = template_pod(final["object"])
    pod["metadata"]["namespace"] = final["object"]["metadata"]["namespace"]
    found = _explain(pod, "v2", live=False, running=running)
    [line] = found.policies
    assert (line.verdict, line.running) == ("would be injected", "2 stale")
    assert "its running pods: 2 stale" in text(found)
    assert as_data(found)["policies"][0]["verdict"] == "would be injected"


def test_without_permission_to_list_webhooks_it_says_so() -> None:
    found = _explain(copy.deepcopy(_running_pod()), webhooks=None)
    assert found.webhooks is None
    assert "cannot be listed: no permission" in text(found)
    assert as_data(found)["webhooks"] is None


def test_admission_policies_are_listed_as_not_evaluated() -> None:
    found = _explain(_running_pod(), admission_policies=["add-labels"])
    assert (
        "MutatingAdmissionPolicies (run before the webhooks): add-labels: not evaluated here (CEL)"
        in found.notes
    )
