"""Scenarios 1-5, 8 and 11 of issue 3: Pods created through a real kube-apiserver, read back as stored."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import E2E
from .kube import INJECT, api_error, container, env_of, error_message, eventually, injected, names, pod
from .webhooks import temporary_webhook, webhook_configuration

pytestmark = pytest.mark.e2e

SHIP = "logging.example.com/ship"


def _mounts(item: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in item.get("volumeMounts") or []}


# --- 1. namespace opt-in ----------------------------------------------------------------------------


def test_opted_in_namespace_gets_init_container_native_sidecar_volumes_and_mounts(e2e: E2E) -> None:
    ns = e2e.opted_in()
    created = e2e.kube.create_pod(ns, pod(name="web", annotations={INJECT: "wait-for-db,log-shipper"}))
    stored = e2e.kube.read_pod(ns, "web")

    assert created.warnings == []
    assert sorted(injected(stored)) == ["log-shipper", "wait-for-db"]
    # native sidecars first, then the policy's init containers (position: first)
    assert names(stored["spec"]["initContainers"]) == ["log-shipper", "wait-for-db"]
    assert container(stored, "log-shipper", kind="initContainers")["restartPolicy"] == "Always"
    assert "restartPolicy" not in container(stored, "wait-for-db", kind="initContainers")
    assert names(stored["spec"]["containers"]) == ["app"]
    assert "app-logs" in names(stored["spec"]["volumes"])
    app = container(stored, "app")
    assert _mounts(app) == {"app-logs": "/var/log/app"}
    assert env_of(app)["LOG_DIR"] == "/var/log/app"
    assert _mounts(container(stored, "log-shipper", kind="initContainers")) == {"app-logs": "/var/log/app"}
    assert stored["metadata"]["annotations"]["logging.example.com/shipper"] == "fluent-bit"


def test_namespace_without_the_label_gets_nothing(e2e: E2E) -> None:
    ns = e2e.kube.namespace("off")
    e2e.kube.create_pod(ns, pod(name="web", annotations={INJECT: "wait-for-db,log-shipper", SHIP: "true"}))
    stored = e2e.kube.read_pod(ns, "web")

    assert injected(stored) == []
    assert "initContainers" not in stored["spec"]
    assert names(stored["spec"]["containers"]) == ["app"]


def test_server_enforces_the_opt_in_label_even_when_the_webhook_selector_is_wrong(e2e: E2E) -> None:
    """A webhook configuration without the namespace selector sends every labelled Pod to Podgraft;
    its namespace cache still refuses namespaces that did not opt in, and sees a later opt-in."""
    kube = e2e.kube
    ns = kube.namespace("unselective")
    probe = {"e2e.podgraft.io/unselective": "true"}
    configuration = webhook_configuration(
        "e2e-unselective", url=e2e.podgraft.url, ca_bundle=e2e.bundle.ca_bundle(), object_labels=probe
    )
    request = pod(annotations={INJECT: "wait-for-db"}, labels=probe, generate_name="probe-")

    with temporary_webhook(kube, configuration):

        def podgraft_called_and_refused() -> None:
            before = e2e.podgraft.requests_total()
            body = kube.create_pod(ns, request, dry_run=True).body
            assert e2e.podgraft.requests_total() > before, "the apiserver did not call Podgraft yet"
            assert injected(body) == [], "Podgraft's namespace cache does not know the namespace yet"

        eventually(podgraft_called_and_refused, what="Podgraft is called and refuses")
        stored = kube.create_pod(ns, request).body
        assert injected(stored) == []
        assert "initContainers" not in stored["spec"]

        kube.label_namespace(ns, {"podgraft.io/injection": "enabled"})

        def injected_after_opt_in() -> None:
            assert injected(kube.create_pod(ns, request, dry_run=True).body) == ["wait-for-db"]

        eventually(injected_after_opt_in, what="the namespace watch sees the new label")


# --- 2. generateName, no namespace in the object -------------------------------------------------------


def test_pod_with_only_generate_name_and_no_namespace_is_injected(e2e: E2E) -> None:
    ns = e2e.opted_in()
    body = pod(generate_name="worker-", annotations={INJECT: "log-shipper"})
    assert "name" not in body["metadata"]
    assert "namespace" not in body["metadata"]

    created = e2e.kube.create_pod(ns, body).body
    name = created["metadata"]["name"]
    stored = e2e.kube.read_pod(ns, name)

    assert name.startswith("worker-")
    assert name != "worker-"
    assert injected(stored) == ["log-shipper"]
    sidecar = container(stored, "log-shipper", kind="initContainers")
    # the pod's own name from the downward API (a template would see only the prefix at admission)
    assert [e["valueFrom"]["fieldRef"] for e in sidecar["env"]] == [
        {"apiVersion": "v1", "fieldPath": "metadata.name"},
        {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
    ]


# --- 3. selected by match rules -----------------------------------------------------------------------


def test_policy_selected_by_its_match_annotation_without_being_requested(e2e: E2E) -> None:
    ns = e2e.opted_in()
    e2e.kube.create_pod(ns, pod(name="matched", annotations={SHIP: "true"}))
    stored = e2e.kube.read_pod(ns, "matched")

    assert injected(stored) == ["log-shipper"]
    assert names(stored["spec"]["initContainers"]) == ["log-shipper"]
    assert stored["metadata"]["annotations"]["logging.example.com/shipper"] == "fluent-bit"


# --- 4. opt-out and namespaceSelector scope ---------------------------------------------------------


def test_opt_out_annotation_injects_nothing_not_even_matching_policies(e2e: E2E) -> None:
    ns = e2e.opted_in()
    e2e.kube.create_pod(ns, pod(name="opted-out", annotations={INJECT: "false", SHIP: "true"}))
    stored = e2e.kube.read_pod(ns, "opted-out")

    assert injected(stored) == []
    assert "initContainers" not in stored["spec"]
    assert "logging.example.com/shipper" not in stored["metadata"]["annotations"]


def test_policy_outside_its_namespace_selector_is_refused_with_a_warning_the_client_sees(e2e: E2E) -> None:
    elsewhere = e2e.opted_in("team-b", team="b")
    refused = e2e.kube.create_pod(elsewhere, pod(name="scoped", annotations={INJECT: "team-a-only"}))

    assert injected(refused.body) == []
    assert "TEAM" not in env_of(container(refused.body, "app"))
    assert any(
        "'team-a-only'" in w and f"namespace {elsewhere!r}" in w and "namespaceSelector" in w
        for w in refused.warnings
    ), refused.warnings

    team_a = e2e.opted_in("team-a", team="a")
    accepted = e2e.kube.create_pod(team_a, pod(name="scoped", annotations={INJECT: "team-a-only"}))
    assert injected(accepted.body) == ["team-a-only"]
    assert env_of(container(accepted.body, "app"))["TEAM"] == "a"
    assert accepted.warnings == []


# --- 5. unknown policy, required policy that cannot render ------------------------------------------


def test_unknown_policy_admits_the_pod_with_a_warning(e2e: E2E) -> None:
    ns = e2e.opted_in()
    created = e2e.kube.create_pod(ns, pod(name="unknown", annotations={INJECT: "no-such-policy,wait-for-db"}))
    stored = e2e.kube.read_pod(ns, "unknown")

    assert injected(stored) == ["wait-for-db"]
    assert any("'no-such-policy' does not exist" in w for w in created.warnings), created.warnings


def test_required_policy_that_fails_to_render_denies_the_pod_naming_the_policy(e2e: E2E) -> None:
    ns = e2e.opted_in()
    error = api_error(
        lambda: e2e.kube.create_pod(ns, pod(name="denied", annotations={INJECT: "needs-image"}))
    )
    message = error_message(error)

    assert error.status == 403, message
    assert 'admission webhook "podgraft.podgraft.io" denied the request' in message
    assert "'needs-image'" in message
    assert api_error(lambda: e2e.kube.read_pod(ns, "denied")).status == 404

    # the same policy renders once the pod carries what its template needs
    annotations = {INJECT: "needs-image", "e2e.podgraft.io/setup-image": "busybox:1.36"}
    stored = e2e.kube.create_pod(ns, pod(name="rendered", annotations=annotations)).body
    assert container(stored, "setup", kind="initContainers")["image"] == "busybox:1.36"


# --- 8. dry run -----------------------------------------------------------------------------------------


def test_dry_run_create_returns_the_injected_pod_and_stores_nothing(e2e: E2E) -> None:
    ns = e2e.opted_in()
    response = e2e.kube.create_pod(ns, pod(name="dry", annotations={INJECT: "wait-for-db"}), dry_run=True)

    assert injected(response.body) == ["wait-for-db"]
    assert names(response.body["spec"]["initContainers"]) == ["wait-for-db"]
    assert api_error(lambda: e2e.kube.read_pod(ns, "dry")).status == 404
    assert e2e.kube.core.list_namespaced_pod(ns).items == []


# --- 11. classic and native sidecars pass apiserver validation ----------------------------------------


@pytest.mark.parametrize(
    ("request_", "sidecar", "where", "restart_policy"),
    [
        pytest.param("classic-helper", "helper", "containers", None, id="classic"),
        pytest.param("mesh-proxy", "mesh-proxy", "initContainers", "Always", id="native"),
    ],
)
def test_sidecar_modes_pass_apiserver_validation(
    e2e: E2E, request_: str, sidecar: str, where: str, restart_policy: str | None
) -> None:
    ns = e2e.opted_in()
    e2e.kube.create_pod(ns, pod(name="sidecar", annotations={INJECT: request_}))
    stored = e2e.kube.read_pod(ns, "sidecar")

    assert injected(stored) == [request_]
    assert container(stored, sidecar, kind=where).get("restartPolicy") == restart_policy


def test_every_example_policy_at_once_passes_apiserver_validation(e2e: E2E) -> None:
    ns = e2e.opted_in()
    annotations = {
        INJECT: "wait-for-db,mesh-proxy,classic-helper",
        SHIP: "true",
        "debug.example.com/rules": "standard",
    }
    e2e.kube.create_pod(
        ns, pod(name="all", annotations=annotations, labels={"content.example.com/sync": "git"})
    )
    stored = e2e.kube.read_pod(ns, "all")

    assert sorted(injected(stored)) == sorted(
        ["wait-for-db", "mesh-proxy", "classic-helper", "log-shipper", "content-sync"]
    )
    inits = names(stored["spec"]["initContainers"])
    assert set(inits[:2]) == {"mesh-proxy", "log-shipper"}  # native sidecars start first
    assert {"wait-for-db", "content-sync-init"} <= set(inits)
    assert names(stored["spec"]["containers"])[0] == "app"
    assert {"helper", "content-sync"} <= set(names(stored["spec"]["containers"]))
