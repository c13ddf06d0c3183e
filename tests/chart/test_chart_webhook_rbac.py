"""The MutatingWebhookConfiguration and the RBAC the server runs with."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.chart.chart_support import (
    NAMESPACE,
    SYSTEM_NAMESPACES,
    VALUE_SET_PARAMS,
    Helm,
    env_of,
    find,
    one,
    selector_matches,
    values_of,
)

pytestmark = pytest.mark.chart


def _webhook(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (webhook,) = one(objects, "MutatingWebhookConfiguration")["webhooks"]
    return webhook


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_webhook_fields(helm: Helm, value_set: str) -> None:
    values = values_of(value_set)["webhook"]
    webhook = _webhook(helm.render(value_set))
    assert webhook["name"] == "podgraft.podgraft.io"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["sideEffects"] == "None"
    assert webhook["matchPolicy"] == "Equivalent"
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["failurePolicy"] == values["failurePolicy"]
    assert webhook["timeoutSeconds"] == values["timeoutSeconds"]
    assert 1 <= webhook["timeoutSeconds"] <= 30
    assert webhook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        },
        {
            "operations": ["UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods/ephemeralcontainers"],
            "scope": "Namespaced",
        },
    ]


def test_webhook_defaults_and_overrides(helm: Helm) -> None:
    assert (_webhook(helm.render())["failurePolicy"], _webhook(helm.render())["timeoutSeconds"]) == (
        "Fail",
        10,
    )
    issuer = _webhook(helm.render("certmanager-issuer"))
    assert (issuer["failurePolicy"], issuer["timeoutSeconds"]) == ("Ignore", 5)
    assert _webhook(helm.render(sets=["webhook.name=inject.example.com"]))["name"] == "inject.example.com"


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_namespace_selector(helm: Helm, value_set: str) -> None:
    """Opt-in label AND kubernetes.io/metadata.name NotIn [system namespaces, release namespace, extras]."""
    selector = _webhook(helm.render(value_set))["namespaceSelector"]
    extra = values_of(value_set)["config"]["excludedNamespaces"]
    assert selector == {
        "matchLabels": {"podgraft.io/injection": "enabled"},
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": [*SYSTEM_NAMESPACES, NAMESPACE, *extra],
            }
        ],
    }

    def namespace(name: str, labels: dict[str, str]) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": name, **labels}

    opted_in = {"podgraft.io/injection": "enabled"}
    assert selector_matches(selector, namespace("shop", opted_in))
    assert not selector_matches(selector, namespace("shop", {}))
    assert not selector_matches(selector, namespace("shop", {"podgraft.io/injection": "disabled"}))
    for never in [*SYSTEM_NAMESPACES, NAMESPACE, *extra]:
        assert not selector_matches(selector, namespace(never, opted_in)), never


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_object_selector_skips_podgrafts_own_pods(helm: Helm, value_set: str) -> None:
    objects = helm.render(value_set)
    selector = _webhook(objects)["objectSelector"]
    own_pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selector_matches(selector, own_pod_labels)
    assert selector_matches(selector, {"app": "shop"})
    assert selector_matches(selector, {})
    assert not selector_matches(selector, {"podgraft.io/injection": "disabled"})


def test_extra_selector_expressions_are_anded(helm: Helm) -> None:
    webhook = _webhook(helm.render("certmanager-issuer"))
    assert {"key": "example.com/no-sidecars", "operator": "DoesNotExist"} in webhook["objectSelector"][
        "matchExpressions"
    ]
    assert not selector_matches(webhook["objectSelector"], {"example.com/no-sidecars": "yes"})
    webhook = _webhook(
        helm.render(
            sets=[
                "webhook.namespaceSelectorExpressions[0].key=tier",
                "webhook.namespaceSelectorExpressions[0].operator=Exists",
            ]
        )
    )
    labels = {"kubernetes.io/metadata.name": "shop", "podgraft.io/injection": "enabled"}
    assert not selector_matches(webhook["namespaceSelector"], labels)
    assert selector_matches(webhook["namespaceSelector"], labels | {"tier": "web"})


def test_custom_namespace_label_reaches_selectors_and_server(helm: Helm) -> None:
    objects = helm.render(sets=["config.namespaceLabel=example.com/podgraft"])
    webhook = _webhook(objects)
    assert webhook["namespaceSelector"]["matchLabels"] == {"example.com/podgraft": "enabled"}
    assert webhook["objectSelector"]["matchExpressions"][0]["key"] == "example.com/podgraft"
    pod = one(objects, "Deployment")["spec"]["template"]
    assert not selector_matches(webhook["objectSelector"], pod["metadata"]["labels"])
    assert env_of(pod["spec"]["containers"][0])["PODGRAFT_NAMESPACE_LABEL"] == "example.com/podgraft"


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_ca_source_per_tls_mode(helm: Helm, value_set: str) -> None:
    objects = helm.render(value_set)
    configuration = one(objects, "MutatingWebhookConfiguration")
    client = _webhook(objects)["clientConfig"]
    tls = values_of(value_set)["tls"]
    annotations = configuration["metadata"].get("annotations", {})
    if tls["mode"] == "helm":
        secret = one(objects, "Secret")
        assert secret["type"] == "kubernetes.io/tls"
        assert client["caBundle"] == secret["data"]["ca.crt"]
        assert "cert-manager.io/inject-ca-from" not in annotations
    elif tls["mode"] == "certManager":
        assert "caBundle" not in client
        assert annotations["cert-manager.io/inject-ca-from"].startswith(f"{NAMESPACE}/")
    else:
        assert client["caBundle"] == tls["secret"]["caBundle"]
        assert base64.b64decode(client["caBundle"]).startswith(b"-----BEGIN CERTIFICATE-----")
        assert not find(objects, "Secret")
        assert "cert-manager.io/inject-ca-from" not in annotations


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        pytest.param(
            ["tls.mode=secret", "tls.secret.caBundle=Zm9v"], "tls.secret.name is required", id="no-name"
        ),
        pytest.param(["tls.mode=secret", "tls.secret.name=mine"], "tls.secret.caBundle", id="no-ca-bundle"),
    ],
)
def test_secret_mode_needs_name_and_ca_bundle(helm: Helm, sets: list[str], message: str) -> None:
    assert message in helm.render_error(sets=sets)


# ---- RBAC


def _rules(
    role: dict[str, Any],
) -> set[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    return {
        (
            tuple(rule.get("apiGroups", [])),
            tuple(rule.get("resources", [])),
            tuple(sorted(rule.get("verbs", []))),
            tuple(rule.get("resourceNames", [])),
        )
        for rule in role["rules"]
    }


POLICY_RULES = {
    (("",), ("configmaps",), ("get", "list", "watch"), ()),
    (("",), ("events",), ("create", "patch"), ()),
}
CLUSTER_RULES = {(("",), ("namespaces",), ("get", "list", "watch"), ())}
EVENTS_RULES = {
    (("events.k8s.io",), ("events",), ("create", "patch"), ()),
    (("apps",), ("replicasets",), ("get",), ()),
    (("batch",), ("jobs",), ("get",), ()),
}


def _cluster_roles(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ClusterRoles by the suffix of their name (`namespaces`, `events`)."""
    return {role["metadata"]["name"].rsplit("-", 1)[1]: role for role in find(objects, "ClusterRole")}


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_rbac_is_minimal(helm: Helm, value_set: str) -> None:
    """ConfigMaps read + Events write in each policy namespace; Namespaces read cluster-wide; nothing else
    (no secrets, no wildcards, no webhook configurations: there is no self-signed mode to patch caBundle)."""
    objects = helm.render(value_set)
    policy_namespaces = env_of(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])[
        "PODGRAFT_POLICY_NAMESPACES"
    ].split(",")
    assert policy_namespaces == [NAMESPACE, *values_of(value_set)["policies"]["watchNamespaces"]]
    roles = find(objects, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == sorted(policy_namespaces)
    for role in roles:
        assert _rules(role) == POLICY_RULES
    cluster_roles = _cluster_roles(objects)
    assert sorted(cluster_roles) == ["events", "namespaces"]  # events.level defaults to warnings
    assert _rules(cluster_roles["namespaces"]) == CLUSTER_RULES
    assert _rules(cluster_roles["events"]) == EVENTS_RULES
    for role in [*roles, *cluster_roles.values()]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


@pytest.mark.parametrize("value_set", VALUE_SET_PARAMS)
def test_bindings_grant_the_roles_to_the_server_only(helm: Helm, value_set: str) -> None:
    objects = helm.render(value_set)
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    subject = [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in find(objects, "Role")}
    bindings = find(objects, "RoleBinding")
    assert len(bindings) == len(roles)
    for binding in bindings:
        assert binding["subjects"] == subject
        assert binding["roleRef"]["kind"] == "Role"
        assert (binding["metadata"]["namespace"], binding["roleRef"]["name"]) in roles
    cluster_bindings = find(objects, "ClusterRoleBinding")
    assert sorted(b["roleRef"]["name"] for b in cluster_bindings) == sorted(
        r["metadata"]["name"] for r in find(objects, "ClusterRole")
    )
    for cluster_binding in cluster_bindings:
        assert cluster_binding["subjects"] == subject
        assert cluster_binding["roleRef"]["kind"] == "ClusterRole"
        assert cluster_binding["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"


def test_rbac_and_service_account_can_be_brought_by_the_user(helm: Helm) -> None:
    objects = helm.render(
        sets=["rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=mine"]
    )
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"):
        assert not find(objects, kind), kind
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


def test_the_running_audit_adds_only_list_and_watch_on_pods(helm: Helm) -> None:
    objects = helm.render(sets=["audit.enabled=true", "audit.refreshSeconds=10"])
    cluster_role = _cluster_roles(objects)["namespaces"]
    assert _rules(cluster_role) == CLUSTER_RULES | {(("",), ("pods",), ("list", "watch"), ())}
    for role in find(objects, "Role"):
        assert _rules(role) == POLICY_RULES
    env = env_of(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert (env["PODGRAFT_AUDIT_ENABLED"], env["PODGRAFT_AUDIT_REFRESH_SECONDS"]) == ("true", "10")
    assert "PODGRAFT_AUDIT_ENABLED" not in env_of(
        one(helm.render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    )


@pytest.mark.parametrize(
    ("level", "roles"),
    [
        pytest.param("off", ["namespaces"], id="off"),
        pytest.param("warnings", ["events", "namespaces"], id="warnings"),
        pytest.param("all", ["events", "namespaces"], id="all"),
    ],
)
def test_events_add_their_cluster_role_only_when_enabled(helm: Helm, level: str, roles: list[str]) -> None:
    objects = helm.render(sets=[f"events.level={level}"])
    assert sorted(_cluster_roles(objects)) == roles
    assert len(find(objects, "ClusterRoleBinding")) == len(roles)
    env = env_of(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert env["PODGRAFT_EVENTS"] == level
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # the Events' reportingInstance
    for role in find(objects, "Role"):  # the policy namespaces keep their own rules
        assert _rules(role) == POLICY_RULES


def test_an_unknown_events_level_is_refused(helm: Helm) -> None:
    assert "at '/events/level': value must be one of 'off', 'warnings', 'all'" in helm.render_error(
        sets=["events.level=verbose"]
    )


def test_uninstall_hook_removes_only_the_webhook_configuration_first(helm: Helm) -> None:
    """A pre-delete hook: its ServiceAccount may delete the release's two webhook configurations, by
    name, and nothing else; its pod is no server pod (no Service or PDB selects it) and is never
    sent to the webhook."""
    objects = helm.render()
    webhook_name = one(objects, "MutatingWebhookConfiguration")["metadata"]["name"]
    hook_kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Job"}
    for kind in hook_kinds:
        (hook,) = find(objects, kind, hooks=True)
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert int(annotations["helm.sh/hook-weight"]) == (0 if kind == "Job" else -10)
    (role,) = find(objects, "ClusterRole", hooks=True)
    assert role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            "resourceNames": [webhook_name],
            "verbs": ["delete"],
        }
    ]
    (job,) = find(objects, "Job", hooks=True)
    pod = job["spec"]["template"]
    (account_object,) = find(objects, "ServiceAccount", hooks=True)
    account = account_object["metadata"]["name"]
    assert pod["spec"]["serviceAccountName"] == account
    (binding,) = find(objects, "ClusterRoleBinding", hooks=True)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    service = one(objects, "Service")
    assert not selector_matches({"matchLabels": service["spec"]["selector"]}, pod["metadata"]["labels"])
    assert pod["metadata"]["labels"]["podgraft.io/injection"] == "disabled"
    (container,) = pod["spec"]["containers"]
    assert (
        container["image"] == one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    script = container["args"][0]
    assert "api.delete_mutating_webhook_configuration" in script
    assert "api.delete_validating_webhook_configuration" in script
    assert f"delete({webhook_name!r})".replace("'", '"') in script
    assert one(objects, "ValidatingWebhookConfiguration")["metadata"]["name"] == webhook_name
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_uninstall_hook_can_be_turned_off(helm: Helm) -> None:
    objects = helm.render(sets=["webhook.removeFirstOnUninstall=false"])
    assert [obj for obj in objects if "helm.sh/hook" in (obj["metadata"].get("annotations") or {})] == []
