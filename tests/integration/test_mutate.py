"""/mutate happy paths over real HTTPS: the patch, applied to the pod sent, gives the injected pod."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest

from .conftest import Mutate
from .support import NAMESPACE, V1, V1BETA1, Server, decode_patch, load_pod, pod, review, wait_for

pytestmark = pytest.mark.timeout(60)

SCHEMA_VERSIONS = ["1.30", kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version())]
DEBUG_IMAGES = "busybox:1.*, nicolaka/netshoot:*, registry.example.com/debug/*"


def admit(mutate: Mutate, obj: dict[str, Any] | None, **kwargs: Any) -> dict[str, Any]:
    """Send one review, check the envelope (version, kind, uid echoed), return the response."""
    sent = review(obj, **kwargs)
    status, body = mutate(sent)
    assert status == 200, body
    assert body["apiVersion"] == sent["apiVersion"]
    assert body["kind"] == "AdmissionReview"
    response: dict[str, Any] = body["response"]
    assert response["uid"] == sent["request"]["uid"]
    return response


def patched_pod(mutate: Mutate, obj: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod after applying the returned patch to the pod that was sent, response)."""
    response = admit(mutate, obj, **kwargs)
    assert response["allowed"] is True
    result: dict[str, Any] = jsonpatch.apply_patch(obj, decode_patch(response))
    return result, response


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


@pytest.fixture
def web() -> dict[str, Any]:
    """examples/pods/web.yaml: requests wait-for-db and mesh-proxy, and is selected by log-shipper."""
    return load_pod()


DOWNWARD_API = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
]


def test_pod_create_returns_a_patch_that_yields_the_injected_pod(mutate: Mutate, web: dict[str, Any]) -> None:
    sent = copy.deepcopy(web)
    injected, response = patched_pod(mutate, web)
    assert web == sent, "the pod sent must not be changed by applying the patch to a copy"
    assert set(response) == {"uid", "allowed", "patchType", "patch"}

    spec = injected["spec"]
    inits = spec["initContainers"]
    assert [c["name"] for c in inits] == ["mesh-proxy", "log-shipper", "wait-for-db"]
    mesh, shipper, wait = inits
    assert mesh["restartPolicy"] == "Always", "mesh-proxy is a native sidecar"
    assert mesh["image"] == "envoyproxy/envoy:v1.31.2"
    assert mesh["args"] == ["--service-node", "$(POD_NAME).$(POD_NAMESPACE)", "--service-cluster", "web"]
    assert shipper["restartPolicy"] == "Always", "sidecarMode auto with Kubernetes 1.29: native"
    assert shipper["env"] == mesh["env"] == DOWNWARD_API
    assert "restartPolicy" not in wait, "a plain init container runs to completion"
    assert wait["args"] == ["until nc -z -w 2 postgres 5432; do echo waiting for database; sleep 2; done"]

    assert spec["volumes"] == [{"name": "app-logs", "emptyDir": {}}]
    (app,) = spec["containers"]
    assert app["volumeMounts"] == [{"name": "app-logs", "mountPath": "/var/log/app"}]
    assert by_name(app["env"]) == {
        "HTTP_PROXY": {"name": "HTTP_PROXY", "value": "http://127.0.0.1:15001"},
        "LOG_DIR": {"name": "LOG_DIR", "value": "/var/log/app"},
    }
    assert app["ports"] == [{"containerPort": 8080}], "the pod's own fields survive"

    metadata = injected["metadata"]
    assert metadata["labels"] == {"app": "web", "mesh.example.com/proxied": "true"}
    assert metadata["annotations"]["logging.example.com/shipper"] == "fluent-bit"
    status = json.loads(metadata["annotations"]["podgraft.io/status"])
    assert [entry["name"] for entry in status["policies"]] == ["log-shipper", "mesh-proxy", "wait-for-db"]
    assert all(len(entry["hash"]) >= 8 for entry in status["policies"])


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_patched_pod_validates_strictly(mutate: Mutate, web: dict[str, Any], version: str) -> None:
    injected, _ = patched_pod(mutate, web)
    assert kubernetes_validate.validate(injected, version, strict=True) == version


def test_patched_pod_sent_again_gets_no_patch(mutate: Mutate, web: dict[str, Any]) -> None:
    injected, _ = patched_pod(mutate, web)
    response = admit(mutate, injected)
    assert response == {"uid": response["uid"], "allowed": True}


def test_v1beta1_is_answered_in_v1beta1(mutate: Mutate, web: dict[str, Any]) -> None:
    injected, response = patched_pod(mutate, web, api_version=V1BETA1)
    assert response["patchType"] == "JSONPatch"
    assert [c["name"] for c in injected["spec"]["initContainers"]] == [
        "mesh-proxy",
        "log-shipper",
        "wait-for-db",
    ]


def test_controller_pod_without_name_or_namespace_uses_generate_name_and_request_namespace(
    mutate: Mutate,
) -> None:
    obj = pod(annotations={"podgraft.io/inject": "log-shipper,mesh-proxy"}, namespace=None)
    del obj["metadata"]["name"]
    obj["metadata"]["generateName"] = "web-7d9f6-"
    injected, _ = patched_pod(mutate, obj, namespace="orders")
    shipper, mesh = injected["spec"]["initContainers"]
    assert shipper["env"] == DOWNWARD_API, "the pod's own name comes from the downward API"
    assert mesh["args"][-1] == "orders", "no app label: the namespace, from the request"
    status = json.loads(injected["metadata"]["annotations"]["podgraft.io/status"])
    assert status["inputs"]["labels"] == {"app": None}, "what the templates read, as they read it"
    assert "namespace" not in injected["metadata"], "the namespace is not written into the pod"
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(injected, version, strict=True)


def test_unknown_policy_is_a_warning_without_patch(mutate: Mutate) -> None:
    response = admit(mutate, pod(annotations={"podgraft.io/inject": "no-such-policy"}))
    assert response == {
        "uid": response["uid"],
        "allowed": True,
        "warnings": ["podgraft: requested policy 'no-such-policy' does not exist; nothing injected for it"],
    }


def test_unknown_policy_next_to_a_known_one_still_injects_the_known_one(mutate: Mutate) -> None:
    injected, response = patched_pod(mutate, pod(annotations={"podgraft.io/inject": "wait-for-db,nope"}))
    assert response["warnings"] == [
        "podgraft: requested policy 'nope' does not exist; nothing injected for it"
    ]
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["wait-for-db"]


@pytest.mark.parametrize("value", ["false", "False", " off "])
def test_opt_out_gives_no_patch_even_for_matching_policies(mutate: Mutate, value: str) -> None:
    obj = pod(annotations={"podgraft.io/inject": value, "logging.example.com/ship": "true"})
    response = admit(mutate, obj)
    assert response == {"uid": response["uid"], "allowed": True}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(
            {"resource": "deployments", "group": "apps", "kind": "Deployment"}, id="non-pod-kind-create"
        ),
        pytest.param({"resource": "configmaps", "kind": "ConfigMap"}, id="configmap-create"),
        pytest.param({"operation": "UPDATE"}, id="plain-pod-update"),
        pytest.param({"operation": "UPDATE", "sub_resource": "status"}, id="pod-status-update"),
        pytest.param({"operation": "CREATE", "sub_resource": "binding"}, id="pod-binding-create"),
        pytest.param({"operation": "CONNECT", "sub_resource": "exec"}, id="pod-exec-connect"),
    ],
)
def test_other_requests_are_allowed_without_patch(mutate: Mutate, web: dict[str, Any], kwargs: Any) -> None:
    response = admit(mutate, web, old_object=web if kwargs.get("operation") == "UPDATE" else None, **kwargs)
    assert response == {"uid": response["uid"], "allowed": True}


def test_delete_is_allowed_without_patch(mutate: Mutate, web: dict[str, Any]) -> None:
    response = admit(mutate, None, operation="DELETE", old_object=web)
    assert response == {"uid": response["uid"], "allowed": True}


def test_kube_system_pods_are_never_injected(mutate: Mutate, web: dict[str, Any]) -> None:
    response = admit(mutate, web, namespace="kube-system")
    assert response == {"uid": response["uid"], "allowed": True}


def test_required_policy_port_clash_denies_the_pod(mutate: Mutate) -> None:
    obj = pod(
        annotations={"podgraft.io/inject": "mesh-proxy"},
        containers=[{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 15006}]}],
    )
    response = admit(mutate, obj)
    assert response == {
        "uid": response["uid"],
        "allowed": False,
        "status": {
            "code": 403,
            "reason": "Forbidden",
            "message": "podgraft: required policy 'mesh-proxy' cannot be applied: container 'mesh-proxy' "
            "port 15006/TCP clashes with container 'app' (containers in a pod share localhost)",
        },
    }


# --- ephemeral containers (kubectl debug) -----------------------------------------------------------


def debugged_pod(image: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(old, new) pods of a pods/ephemeralcontainers update: `new` adds a debug container with `image`."""
    old = load_pod()
    old["metadata"]["annotations"] = {"debug.example.com/rules": "standard"}
    old["spec"]["volumes"] = [{"name": "app-logs", "emptyDir": {}}]
    earlier = {"name": "debugger-0", "image": "busybox:1.36", "stdin": True}
    old["spec"]["ephemeralContainers"] = [earlier]
    new = copy.deepcopy(old)
    new["spec"]["ephemeralContainers"].append(
        {
            "name": "debugger-1",
            "image": image,
            "stdin": True,
            "tty": True,
            "env": [{"name": "A", "value": "1"}],
        }
    )
    return old, new


def test_ephemeral_container_with_allowed_image_gets_mounts_and_env(mutate: Mutate) -> None:
    old, new = debugged_pod("busybox:1.36")
    result, response = patched_pod(
        mutate, new, operation="UPDATE", sub_resource="ephemeralcontainers", old_object=old
    )
    assert "warnings" not in response
    earlier, added = result["spec"]["ephemeralContainers"]
    assert earlier == old["spec"]["ephemeralContainers"][0], "containers of earlier sessions are untouched"
    assert added["volumeMounts"] == [{"name": "app-logs", "mountPath": "/debug/logs", "readOnly": True}]
    assert added["env"] == [{"name": "A", "value": "1"}, {"name": "DEBUG_SESSION", "value": "shop/web"}]
    assert {k: v for k, v in added.items() if k not in ("volumeMounts", "env")} == {
        "name": "debugger-1",
        "image": "busybox:1.36",
        "stdin": True,
        "tty": True,
    }
    rest = copy.deepcopy(result)
    del rest["spec"]["ephemeralContainers"]
    del new["spec"]["ephemeralContainers"]
    assert rest == new, "nothing but the new ephemeral container changes"
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(result, version, strict=True)


@pytest.mark.parametrize("image", ["alpine:3.20", "busybox:latest", "registry.example.com/other/tool:1"])
def test_ephemeral_container_with_disallowed_image_is_denied(mutate: Mutate, image: str) -> None:
    old, new = debugged_pod(image)
    response = admit(mutate, new, operation="UPDATE", sub_resource="ephemeralcontainers", old_object=old)
    assert response == {
        "uid": response["uid"],
        "allowed": False,
        "status": {
            "code": 403,
            "reason": "Forbidden",
            "message": f"podgraft: policy 'debug-rules' does not allow image {image!r} for ephemeral "
            f"container 'debugger-1'; allowed: {DEBUG_IMAGES}",
        },
    }


def test_ephemeral_update_of_a_pod_without_debug_rules_gets_no_patch(mutate: Mutate) -> None:
    old, new = debugged_pod("alpine:3.20")
    for obj in (old, new):
        obj["metadata"]["annotations"] = {}
    response = admit(mutate, new, operation="UPDATE", sub_resource="ephemeralcontainers", old_object=old)
    assert response == {"uid": response["uid"], "allowed": True}


# --- logs -------------------------------------------------------------------------------------------


def test_each_admission_is_logged_as_json_with_uid_namespace_and_pod(
    mutate: Mutate, server: Server, web: dict[str, Any]
) -> None:
    del web["metadata"]["name"]
    web["metadata"]["generateName"] = "web-5c8d-"
    sent = review(web, uid="log-uid-7f3a")
    assert mutate(sent)[0] == 200

    def logged() -> dict[str, Any] | None:
        return next((r for r in server.log_records() if r.get("uid") == "log-uid-7f3a"), None)

    record = wait_for(logged, what="the admission log record")
    assert record["msg"] == "admission"
    assert record["level"] == "info"
    assert record["namespace"] == NAMESPACE
    assert record["pod"] == "web-5c8d-*"
    assert record["operation"] == "CREATE"
    assert record["outcome"] == "patched"
    assert record["injected"] == ["wait-for-db", "mesh-proxy", "log-shipper"]
    assert "patch" not in record, "patches are not logged at the default level"


def test_v1_is_the_default_answer_version(mutate: Mutate) -> None:
    status, body = mutate(review(pod()))
    assert status == 200
    assert body["apiVersion"] == V1
