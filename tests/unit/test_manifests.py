"""app/sources/manifests.py: `validate_configmap`, the check of one ConfigMap object an admission
webhook on ConfigMaps can serve (issue 17), and how a file of manifests is read."""

from __future__ import annotations

from typing import Any

import pytest

from app.policy.messages import Problem
from app.sources.manifests import is_policy_document, validate_configmap, validate_documents
from tests.unit.builders import policy_doc, policy_yaml


def _configmap(data: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata = {
        "name": "policies",
        "namespace": "podgraft",
        "labels": labels or {"podgraft.io/policy": "true"},
    }
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def test_validate_configmap_gives_every_problem_of_every_key_as_data() -> None:
    limits = {"limits": {"memory": "lots"}}
    broken = policy_yaml("broken", sidecars=[{"name": "s", "image": "b:1", "resources": limits}])
    named = policy_yaml("named", env=[{"name": "POD", "value": "{{ pod.name }}"}])
    problems = validate_configmap(
        _configmap({"ok.yaml": policy_yaml("ok"), "broken.yaml": broken, "named.yaml": named}),
        kubernetes_version="1.31",
    )
    assert problems == [
        Problem(
            "'lots' is not a quantity (like 512Mi, 1Gi, 250m, 0.5, 1e3)",
            source="configmap podgraft/policies key broken.yaml",
            document=1,
            policy="broken",
            field="spec.sidecars[0].resources.limits.memory",
        ),
        Problem(
            problems[1].message,
            source="configmap podgraft/policies key named.yaml",
            document=1,
            policy="named",
            field="spec.env[0].value",
            severity="warning",
        ),
    ]
    assert problems[1].message.startswith("renders pod.name")


def test_validate_configmap_of_a_configmap_podgraft_does_not_read() -> None:
    [note] = validate_configmap(_configmap({"x": "y"}, labels={"app": "web"}))
    assert (note.severity, note.source) == ("note", "configmap podgraft/policies")
    assert note.message == "not labelled podgraft.io/policy=true, so Podgraft does not read it; skipped"
    [error] = validate_configmap(
        _configmap({"x": "y"}, labels={"team/policy": "true"}), policy_label="team/policy"
    )
    assert (error.severity, error.source) == ("error", "configmap podgraft/policies key x")


@pytest.mark.parametrize(
    ("document", "policy"),
    [
        pytest.param(policy_doc("p"), True, id="policy"),
        pytest.param({"kind": "InjectionPolicy"}, True, id="policy-without-api-version"),
        pytest.param(
            {"apiVersion": "podgraft.io/v1alpha1", "kind": "InjectionPolcy"}, True, id="misspelt-kind"
        ),
        pytest.param({"metadata": {"name": "x"}}, True, id="neither"),
        pytest.param("text", True, id="scalar"),
        pytest.param({"apiVersion": "v1", "kind": "ConfigMap"}, False, id="configmap"),
        pytest.param({"apiVersion": "apps/v1", "kind": "Deployment"}, False, id="deployment"),
    ],
)
def test_what_is_read_as_a_policy(document: object, policy: bool) -> None:
    assert is_policy_document(document) is policy


def test_lists_in_lists_and_bare_policies_beside_manifests() -> None:
    inner = {"apiVersion": "v1", "kind": "ConfigMapList", "items": [_configmap({"a.yaml": policy_yaml("a")})]}
    reports = validate_documents(
        [policy_doc("bare"), {"apiVersion": "v1", "kind": "List", "items": [inner]}], source="f.yaml"
    )
    assert [(r.source, [p.name for p in r.policies]) for r in reports] == [
        ("f.yaml", ["bare"]),
        ("configmap podgraft/policies key a.yaml", ["a"]),
    ]
