"""Issue 12 over real HTTPS, with the example policies: a pod cannot evade, half-apply or steer a
policy. `mesh-proxy` is required (native proxy on 15000/15006, HTTP_PROXY, a label); `log-shipper`
is optional (a sidecar mounting its own `app-logs` volume)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest

from .conftest import Mutate
from .support import decode_patch, pod, review

pytestmark = pytest.mark.timeout(60)

APP = {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}
STATUS = "podgraft.io/status"


def admit(mutate: Mutate, obj: dict[str, Any]) -> dict[str, Any]:
    status, body = mutate(review(obj))
    assert status == 200, body
    response: dict[str, Any] = body["response"]
    return response


def injected(mutate: Mutate, obj: dict[str, Any]) -> dict[str, Any]:
    response = admit(mutate, obj)
    assert response["allowed"], response
    result: dict[str, Any] = jsonpatch.apply_patch(obj, decode_patch(response))
    return result


def mesh_pod(**spec: Any) -> dict[str, Any]:
    return pod(
        annotations={"podgraft.io/inject": "mesh-proxy"},
        labels={"app": "web"},
        **{"containers": [APP], **spec},
    )


def test_a_forged_status_annotation_does_not_skip_the_required_proxy(mutate: Mutate) -> None:
    real = injected(mutate, mesh_pod())
    forged = mesh_pod()
    forged["metadata"]["annotations"][STATUS] = real["metadata"]["annotations"][STATUS]  # the live hash
    response = admit(mutate, forged)
    assert response["allowed"]
    assert response["warnings"] == [
        "podgraft: policy 'mesh-proxy': podgraft.io/status lists it, but the pod does not contain it; "
        "injected"
    ]
    assert jsonpatch.apply_patch(forged, decode_patch(response)) == real
    again = admit(mutate, real)
    assert again == {"uid": again["uid"], "allowed": True}, "really injected: no patch, no warning"


def test_a_required_policy_is_denied_rather_than_half_applied(mutate: Mutate) -> None:
    own_proxy = mesh_pod(containers=[APP, {"name": "mesh-proxy", "image": "busybox:1.36"}])
    response = admit(mutate, own_proxy)
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == (
        "podgraft: required policy 'mesh-proxy' cannot be applied: the pod already has a container named "
        "'mesh-proxy'"
    )
    assert "patch" not in response


def test_the_pod_does_not_choose_what_the_sidecar_mounts(mutate: Mutate) -> None:
    host_etc = pod(
        annotations={"podgraft.io/inject": "log-shipper"},
        containers=[APP],
        volumes=[{"name": "app-logs", "hostPath": {"path": "/etc"}}],
    )
    response = admit(mutate, host_etc)
    assert response == {
        "uid": response["uid"],
        "allowed": True,
        "warnings": [
            "podgraft: policy 'log-shipper' not injected: the pod already has a different volume named "
            "'app-logs'"
        ],
    }


@pytest.mark.parametrize("restart", ["Never", "OnFailure"])
def test_a_job_pod_gets_a_native_sidecar(mutate: Mutate, restart: str) -> None:
    job = pod(annotations={"podgraft.io/inject": "log-shipper"}, containers=[APP], restartPolicy=restart)
    (shipper,) = injected(mutate, job)["spec"]["initContainers"]
    assert shipper["name"] == "log-shipper"
    assert shipper["restartPolicy"] == "Always"


def test_a_host_network_port_clash_denies_the_required_proxy(mutate: Mutate) -> None:
    node_agent = mesh_pod(containers=[{**APP, "ports": [{"containerPort": 15000}]}], hostNetwork=True)
    response = admit(mutate, node_agent)
    assert response["allowed"] is False
    assert response["status"]["message"] == (
        "podgraft: required policy 'mesh-proxy' cannot be applied: container 'mesh-proxy' port 15000/TCP "
        "clashes with container 'app' on the node (the pod uses hostNetwork)"
    )


def test_a_copy_of_an_older_version_is_updated(mutate: Mutate) -> None:
    live = injected(mutate, mesh_pod())
    old = copy.deepcopy(live)
    old["spec"]["initContainers"][0]["image"] = "envoyproxy/envoy:v1.30.0"
    status = json.loads(old["metadata"]["annotations"][STATUS])
    live_hash = status["policies"][0]["hash"]
    status["policies"][0]["hash"] = "0123456789abcdef"
    old["metadata"]["annotations"][STATUS] = json.dumps(status, separators=(",", ":"))
    response = admit(mutate, old)
    assert response["warnings"] == [
        "podgraft: policy 'mesh-proxy': the pod carries version 0123456789abcdef, the live one is "
        f"{live_hash}; updated to the live one"
    ]
    assert jsonpatch.apply_patch(old, decode_patch(response)) == live
