"""/validate-policies over real HTTPS, served by `podgraft serve` in local mode (what `make run` runs):
the reviews a real kube-apiserver sent, answered as in cluster mode, minus the namespace scope."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .support import Server, wait_for

pytestmark = pytest.mark.timeout(60)

STORED = Path(__file__).resolve().parents[1] / "unit" / "apiserver_stored" / "policy-reviews.yaml"
REVIEWS = yaml.safe_load(STORED.read_text())
FIXED = REVIEWS["create"]["object"]["data"]["log.yaml"].replace("imag:", "image:")  # the misspelt field


def _review(what: str, **data: str) -> dict[str, Any]:
    request = copy.deepcopy(REVIEWS[what])
    if data:
        request["object"]["data"] = data
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _post(client: httpx.Client, body: Any) -> tuple[int, dict[str, Any]]:
    response = client.post("/validate-policies", json=body)
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def test_a_broken_policy_is_refused_and_a_fixed_one_passes(client: httpx.Client, server: Server) -> None:
    sent = _review("create")
    status, body = _post(client, sent)
    assert status == 200
    assert (body["apiVersion"], body["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = body["response"]
    assert (response["uid"], response["allowed"]) == (sent["request"]["uid"], False)
    assert response["status"]["message"].splitlines() == [
        "podgraft: 1 error in policy ConfigMap podgraft/log-shipper, which would not load:",
        "configmap podgraft/log-shipper key log.yaml: document 1: policy 'log-shipper': "
        "spec.sidecars[0].imag: unknown field; did you mean 'image'?",
    ]
    assert response["status"]["details"]["causes"][0]["field"] == "data[log.yaml]"

    fixed = _review("update", **{"log.yaml": FIXED})
    status, body = _post(client, fixed)
    assert (status, body["response"]) == (200, {"uid": fixed["request"]["uid"], "allowed": True})

    def logged() -> list[dict[str, Any]] | None:
        records = {r.get("uid"): r for r in server.log_records() if r.get("msg") == "policy validation"}
        found = [records.get(sent["request"]["uid"]), records.get(fixed["request"]["uid"])]
        return None if None in found else found  # type: ignore[return-value]

    refused, passed = wait_for(logged, what="both reviews logged")
    assert (refused["outcome"], refused["errors"], refused["configmap"]) == (
        "denied",
        1,
        "podgraft/log-shipper",
    )
    assert (passed["outcome"], passed["operation"]) == ("allowed", "UPDATE")


def test_local_mode_does_not_judge_against_its_directory(client: httpx.Client) -> None:
    """The example directory defines log-shipper too: no ConfigMap joins it in local mode."""
    sent = _review("create", **{"log.yaml": FIXED})
    sent["request"]["namespace"] = "anywhere"
    status, body = _post(client, sent)
    assert (status, body["response"]) == (200, {"uid": sent["request"]["uid"], "allowed": True})


def test_a_broken_request_is_a_4xx_never_a_500(client: httpx.Client, metrics: Any) -> None:
    before = metrics().get('podgraft_policy_validations_total{outcome="bad_request"}', 0.0)
    response = client.post("/validate-policies", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["response"]["status"]["message"]
    pods = _review("create")
    pods["request"]["resource"] = {"group": "", "version": "v1", "resource": "pods"}
    status, body = _post(client, pods)
    assert status == 400
    assert "reviews ConfigMaps (resource configmaps), got 'pods'" in body["response"]["status"]["message"]
    over = 3 * 1024 * 1024 + 1  # PODGRAFT_MAX_BODY_BYTES, default 3 MiB
    huge = client.post(
        "/validate-policies", content=b" " * over, headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413
    assert "over the 3145728-byte limit" in huge.json()["response"]["status"]["message"]
    assert metrics()['podgraft_policy_validations_total{outcome="bad_request"}'] == before + 3


def test_get_is_not_a_review(client: httpx.Client) -> None:
    assert client.get("/validate-policies").status_code == 405
