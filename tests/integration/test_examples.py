"""The example AdmissionReviews of the README (examples/reviews/) give the answers its table promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from .conftest import Mutate
from .support import decode_patch

pytestmark = pytest.mark.timeout(60)

REVIEWS = Path(__file__).resolve().parents[2] / "examples" / "reviews"


def _send(mutate: Mutate, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    sent = json.loads((REVIEWS / name).read_text())
    status, body = mutate(sent)
    assert status == 200, body
    assert body["response"]["uid"] == sent["request"]["uid"]
    return sent["request"]["object"], body["response"]


def _names(items: list[dict[str, Any]] | None) -> list[str]:
    return [item["name"] for item in items or []]


def test_every_example_review_is_covered() -> None:
    assert sorted(p.name for p in REVIEWS.glob("*.json")) == sorted(
        [
            "controller-pod-create.json",
            "debug-allowed.json",
            "debug-denied.json",
            "opt-out.json",
            "unknown-policy.json",
            "web-create.json",
        ]
    )


def test_web_create_injects_init_container_native_sidecars_and_shared_volume(mutate: Mutate) -> None:
    pod, response = _send(mutate, "web-create.json")
    result = jsonpatch.apply_patch(pod, decode_patch(response))
    init = result["spec"]["initContainers"]
    assert _names(init) == ["mesh-proxy", "log-shipper", "wait-for-db"]
    assert [c.get("restartPolicy") for c in init] == ["Always", "Always", None]
    assert _names(result["spec"]["volumes"]) == ["app-logs"]
    mounts = result["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "app-logs", "mountPath": "/var/log/app"} in mounts
    assert result["metadata"]["labels"]["mesh.example.com/proxied"] == "true"
    status = json.loads(result["metadata"]["annotations"]["podgraft.io/status"])
    assert [p["name"] for p in status["policies"]] == ["log-shipper", "mesh-proxy", "wait-for-db"]
    assert "warnings" not in response


def test_controller_pod_gets_content_sync_helper(mutate: Mutate) -> None:
    pod, response = _send(mutate, "controller-pod-create.json")
    result = jsonpatch.apply_patch(pod, decode_patch(response))
    assert _names(result["spec"]["containers"]) == ["nginx", "content-sync"]
    assert _names(result["spec"]["initContainers"]) == ["content-sync-init"]
    mount = result["spec"]["containers"][0]["volumeMounts"][0]
    assert mount == {"name": "content", "mountPath": "/usr/share/nginx/html", "readOnly": True}
    assert "namespace" not in result["metadata"]


def test_opt_out_gets_nothing(mutate: Mutate) -> None:
    _, response = _send(mutate, "opt-out.json")
    assert response["allowed"] is True
    assert "patch" not in response
    assert "patchType" not in response


def test_unknown_policy_is_a_warning(mutate: Mutate) -> None:
    pod, response = _send(mutate, "unknown-policy.json")
    assert response["warnings"] == [
        "podgraft: requested policy 'no-such-policy' does not exist; nothing injected for it"
    ]
    result = jsonpatch.apply_patch(pod, decode_patch(response))
    assert _names(result["spec"]["initContainers"]) == ["wait-for-db"]


def test_debug_allowed_gets_mounts_and_env_on_the_new_container(mutate: Mutate) -> None:
    pod, response = _send(mutate, "debug-allowed.json")
    ops = decode_patch(response)
    assert all(op["path"].startswith("/spec/ephemeralContainers/0/") for op in ops)
    debugger = jsonpatch.apply_patch(pod, ops)["spec"]["ephemeralContainers"][0]
    assert debugger["volumeMounts"] == [{"name": "app-logs", "mountPath": "/debug/logs", "readOnly": True}]
    assert debugger["env"] == [{"name": "DEBUG_SESSION", "value": "shop/web"}]


def test_debug_denied_names_policy_and_image(mutate: Mutate) -> None:
    _, response = _send(mutate, "debug-denied.json")
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "'debug-rules'" in message
    assert "'evil.example.com/toolbox:latest'" in message
    assert "patch" not in response


def test_identical_pods_are_answered_from_the_decision_cache(mutate: Mutate, client: Any) -> None:
    def hits() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("podgraft_decision_cache_hits_total "):
                return float(line.split()[1])
        raise AssertionError("no podgraft_decision_cache_hits_total in /metrics")

    before = hits()
    first_pod, first = _send(mutate, "controller-pod-create.json")
    _, second = _send(mutate, "controller-pod-create.json")
    assert hits() >= before + 1
    assert decode_patch(second) == decode_patch(first)
    assert (
        jsonpatch.apply_patch(first_pod, decode_patch(second))["spec"]["containers"][1]["name"]
        == "content-sync"
    )
