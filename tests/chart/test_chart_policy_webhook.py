"""The ValidatingWebhookConfiguration on policy ConfigMaps (`policyValidation`): a broken policy
refused at apply time by the server's /validate-policies."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from app.server import create_app
from app.settings import Settings
from tests.chart.chart_support import (
    NAMESPACE,
    VALUE_SET_PARAMS,
    Helm,
    find,
    one,
    selector_matches,
    values_of,
)

pytestmark = pytest.mark.chart


def _validating(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (webhook,) = one(objects, "ValidatingWebhookConfiguration")["webhooks"]
    return webhook


def _mutating(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (webhook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    return webhook


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_fields(helm: Helm, value_set: str) -> None:
    objects = helm.render(value_set)
    webhook = _validating(objects)
    fullname = one(objects, "MutatingWebhookConfiguration")["metadata"]["name"]
    assert one(objects, "ValidatingWebhookConfiguration")["metadata"]["name"] == fullname
    assert webhook["name"] == "policies.podgraft.io"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["sideEffects"] == "None"
    assert webhook["matchPolicy"] == "Equivalent"
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"]) == ("Ignore", 5)
    # CREATE and UPDATE only: a policy ConfigMap can always be deleted
    assert webhook["rules"] == [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["configmaps"],
            "scope": "Namespaced",
        }
    ]
    service = webhook["clientConfig"]["service"]
    assert service == {**_mutating(objects)["clientConfig"]["service"], "path": "/validate-policies"}


def test_the_path_is_the_route_the_server_serves() -> None:
    (webhook,) = [w for w in create_app(Settings()).state.webhooks if w == "/validate-policies"]
    assert webhook == "/validate-policies"


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_only_the_policy_namespaces_are_sent(helm: Helm, value_set: str) -> None:
    selector = _validating(helm.render(value_set))["namespaceSelector"]
    watched = [NAMESPACE, *values_of(value_set)["policies"]["watchNamespaces"]]
    assert selector == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": watched}]
    }
    for namespace in watched:
        assert selector_matches(selector, {"kubernetes.io/metadata.name": namespace})
    assert not selector_matches(selector, {"kubernetes.io/metadata.name": "shop"})
    assert not selector_matches(selector, {})


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_only_labelled_configmaps_are_sent(helm: Helm, value_set: str) -> None:
    selector = _validating(helm.render(value_set))["objectSelector"]
    assert selector_matches(selector, {"podgraft.io/policy": "true"})
    assert not selector_matches(selector, {"podgraft.io/policy": "false"})
    assert not selector_matches(selector, {"app": "settings"})


def test_a_custom_policy_label_reaches_the_selector(helm: Helm) -> None:
    selector = _validating(helm.render(sets=["config.policyLabel=example.com/policy"]))["objectSelector"]
    assert selector == {"matchLabels": {"example.com/policy": "true"}}


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_the_ca_is_the_mutating_webhooks_in_every_tls_mode(helm: Helm, value_set: str) -> None:
    objects = helm.render(value_set)
    mutating = one(objects, "MutatingWebhookConfiguration")
    validating = one(objects, "ValidatingWebhookConfiguration")
    bundle = _validating(objects)["clientConfig"].get("caBundle")
    assert bundle == _mutating(objects)["clientConfig"].get("caBundle")
    injected = "cert-manager.io/inject-ca-from"
    annotations = validating["metadata"].get("annotations", {})
    assert annotations.get(injected) == mutating["metadata"].get("annotations", {}).get(injected)
    mode = values_of(value_set)["tls"]["mode"]
    if mode == "helm":
        assert bundle == one(objects, "Secret")["data"]["ca.crt"]
    elif mode == "certManager":
        assert bundle is None
        assert annotations[injected] == f"{NAMESPACE}/{mutating['metadata']['name']}-tls"
    else:
        assert base64.b64decode(bundle).startswith(b"-----BEGIN CERTIFICATE-----")


def test_overrides(helm: Helm) -> None:
    objects = helm.render(
        sets=[
            "policyValidation.failurePolicy=Fail",
            "policyValidation.timeoutSeconds=3",
            "policyValidation.name=policies.example.com",
            "policyValidation.annotations.team=platform",
        ]
    )
    webhook = _validating(objects)
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"], webhook["name"]) == (
        "Fail",
        3,
        "policies.example.com",
    )
    assert one(objects, "ValidatingWebhookConfiguration")["metadata"]["annotations"] == {"team": "platform"}


def test_disabled_renders_no_validating_webhook(helm: Helm) -> None:
    objects = helm.render(sets=["policyValidation.enabled=false"])
    assert not find(objects, "ValidatingWebhookConfiguration")
    assert one(objects, "MutatingWebhookConfiguration")
