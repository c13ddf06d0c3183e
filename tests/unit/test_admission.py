"""Admission: parsing AdmissionReviews (bad input -> BadReview), response constructors, decide()."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from app.admission.decide import decide
from app.admission.responses import (
    MAX_WARNING_CHARS,
    MAX_WARNINGS,
    allowed,
    bad_review_body,
    clean_warnings,
    denied,
    errored,
    patched,
    review,
)
from app.admission.review import MAX_DEPTH, V1, V1BETA1, AdmissionRequest, BadReview, parse_review
from app.engine.config import EngineConfig
from tests.conftest import apply_patch, decode_patch, make_review
from tests.unit.builders import compiled, pod, policy_set

CONFIG = EngineConfig()


def body(value: Any) -> bytes:
    return orjson.dumps(value)


def good(**request: Any) -> dict[str, Any]:
    """A valid review whose request fields are overridden (None deletes a field)."""
    sent = make_review(pod())
    sent["request"]["uid"] = "uid-1"
    for key, value in request.items():
        if value is None:
            sent["request"].pop(key, None)
        else:
            sent["request"][key] = value
    return sent


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


# --- parse_review ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "words", "uid"),
    [
        pytest.param(b"", "empty body", "", id="empty"),
        pytest.param(b"{", "not valid JSON", "", id="truncated-json"),
        pytest.param(b"\xff\xfe", "not valid JSON", "", id="not-utf8"),
        pytest.param(b"[]", "got a list", "", id="array"),
        pytest.param(b'"review"', "got a string", "", id="string"),
        pytest.param(b"null", "got null", "", id="null"),
        pytest.param(b"{}", "apiVersion missing: expected an AdmissionReview of", "", id="empty-object"),
        pytest.param(
            body({**good(), "apiVersion": "admission.k8s.io/v2"}), "unsupported apiVersion", "", id="v2"
        ),
        pytest.param(body({**good(), "apiVersion": None}), "apiVersion missing", "", id="no-api-version"),
        pytest.param(body({**good(), "kind": "Pod"}), "unsupported kind 'Pod'", "", id="wrong-kind"),
        pytest.param(
            body({"apiVersion": V1, "kind": "AdmissionReview"}), "no request object", "", id="no-request"
        ),
        pytest.param(body({**good(), "request": [1]}), "no request object", "", id="request-array"),
        pytest.param(body(good(uid=None)), "request.uid is missing or not a string", "", id="no-uid"),
        pytest.param(body(good(uid="")), "request.uid is missing or not a string", "", id="empty-uid"),
        pytest.param(body(good(uid=42)), "request.uid is missing or not a string", "", id="numeric-uid"),
        pytest.param(body(good(uid="u" * 257)), "longer than 256", "", id="long-uid"),
        pytest.param(
            body(good(operation="PATCH")), "request.operation 'PATCH' is not one of", "uid-1", id="bad-op"
        ),
        pytest.param(
            body(good(operation=None)), "request.operation 'None' is not one of", "uid-1", id="no-op"
        ),
        pytest.param(body(good(kind="Pod")), "request.kind and request.resource", "uid-1", id="kind-string"),
        pytest.param(
            body(good(resource=["pods"])), "request.kind and request.resource", "uid-1", id="resource-list"
        ),
        pytest.param(
            body(good(namespace=5)), "request.namespace must be a string", "uid-1", id="namespace-number"
        ),
        pytest.param(
            body(good(namespace=0)), "request.namespace must be a string", "uid-1", id="namespace-zero"
        ),
        pytest.param(
            body(good(namespace=False)), "request.namespace must be a string", "uid-1", id="namespace-false"
        ),
        pytest.param(
            body(good(namespace=[])), "request.namespace must be a string", "uid-1", id="namespace-empty-list"
        ),
        pytest.param(body(good(name={})), "request.name must be a string", "uid-1", id="name-empty-object"),
        pytest.param(
            body(good(subResource=1)), "request.subResource must be a string", "uid-1", id="subresource"
        ),
        pytest.param(
            body(good(object=None)), "request.object is required for CREATE", "uid-1", id="no-object"
        ),
        pytest.param(
            body(good(operation="UPDATE", object=None)),
            "request.object is required for UPDATE",
            "uid-1",
            id="no-object-update",
        ),
        pytest.param(
            body(good(object=[1])),
            "request.object must be an object, got a list",
            "uid-1",
            id="object-list",
        ),
        pytest.param(
            body(good(oldObject="x")),
            "request.oldObject must be an object, got a string",
            "uid-1",
            id="old-object-str",
        ),
        pytest.param(
            body(good(object={"metadata": nested(MAX_DEPTH + 5)})),
            f"nested deeper than {MAX_DEPTH} levels",
            "uid-1",
            id="too-deep",
        ),
        pytest.param(b"[" * 5000 + b"]" * 5000, "", "", id="deeper-than-the-json-parser"),
    ],
)
def test_bad_reviews(raw: bytes, words: str, uid: str) -> None:
    with pytest.raises(BadReview) as caught:
        parse_review(raw)
    error = caught.value
    assert error.status == 400
    assert words in error.message, error.message
    assert error.uid == uid
    assert str(error) == error.message


def test_bad_review_keeps_the_version_it_came_in() -> None:
    sent = good(uid=None)
    sent["apiVersion"] = V1BETA1
    with pytest.raises(BadReview) as caught:
        parse_review(body(sent))
    assert caught.value.api_version == V1BETA1
    answer = bad_review_body(caught.value)
    assert answer == {
        "apiVersion": V1BETA1,
        "kind": "AdmissionReview",
        "response": {
            "uid": "",
            "allowed": False,
            "status": {
                "code": 400,
                "reason": "BadRequest",
                "message": "request.uid is missing or not a string",
            },
        },
    }


def test_hostile_values_are_cut_in_messages() -> None:
    with pytest.raises(BadReview) as caught:
        parse_review(body({**good(), "apiVersion": "x" * 10_000}))
    assert len(caught.value.message) < 200


def test_a_good_review() -> None:
    sent = good(namespace="shop", name="web", subResource="", dryRun=True, oldObject=pod("old"))
    request = parse_review(body(sent))
    assert isinstance(request, AdmissionRequest)
    assert request.api_version == V1
    assert request.uid == "uid-1"
    assert request.operation == "CREATE"
    assert (request.namespace, request.name, request.sub_resource) == ("shop", "web", "")
    assert request.dry_run is True
    assert request.object == pod()
    assert request.old_object == pod("old")
    assert request.is_pod()


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"namespace": None, "name": None, "subResource": None}, id="absent-strings"),
        pytest.param({"operation": "DELETE", "object": None}, id="delete-without-object"),
        pytest.param({"operation": "CONNECT", "object": None}, id="connect-without-object"),
        pytest.param({"object": {"metadata": nested(MAX_DEPTH - 5)}}, id="deep-but-allowed"),
    ],
)
def test_acceptable_reviews(overrides: dict[str, Any]) -> None:
    request = parse_review(body(good(**overrides)))
    assert request.uid == "uid-1"


def test_v1beta1_is_kept() -> None:
    sent = good()
    sent["apiVersion"] = V1BETA1
    request = parse_review(body(sent))
    assert request.api_version == V1BETA1
    answer = review(request.api_version, allowed(request.uid))
    assert answer["apiVersion"] == V1BETA1
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "uid-1"


# --- response constructors ------------------------------------------------------------------------


def test_allowed_has_no_patch_and_no_warnings() -> None:
    assert allowed("u") == {"uid": "u", "allowed": True}


def test_patched_with_an_empty_patch_is_plain_allowed() -> None:
    assert patched("u", []) == {"uid": "u", "allowed": True}


def test_patched_carries_a_base64_json_patch() -> None:
    ops = [{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]
    response = patched("u", ops, warnings=["w"])
    assert set(response) == {"uid", "allowed", "patchType", "patch", "warnings"}
    assert response["patchType"] == "JSONPatch"
    assert orjson.loads(base64.b64decode(response["patch"])) == ops
    assert decode_patch(response) == ops
    assert response["warnings"] == ["w"]


def test_denied_and_errored() -> None:
    response = denied("u", "no")
    assert response == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": "no"},
    }
    assert denied("u", "no", warnings=["w"])["warnings"] == ["w"]
    assert errored("u", 500, "boom") == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 500, "reason": "InternalError", "message": "boom"},
    }


def test_bad_review_body_reason_follows_status() -> None:
    answer = bad_review_body(BadReview("too big", status=413, uid="x"))
    assert answer["apiVersion"] == V1
    assert answer["response"]["status"] == {"code": 413, "reason": "Error", "message": "too big"}
    assert answer["response"]["uid"] == "x"


@pytest.mark.parametrize(
    ("warning", "expected"),
    [
        pytest.param("plain words", "plain words", id="plain"),
        pytest.param("a\nb\rc\td", "a?b?c?d", id="newlines-and-tabs"),
        pytest.param("bell\x07 esc\x1b[31m del\x7f", "bell? esc?[31m del?", id="c0-and-del"),
        pytest.param("next\x85line \x9b", "next?line ?", id="c1-controls"),
        pytest.param("unicode é ✓ stays", "unicode é ✓ stays", id="printable-unicode"),
    ],
)
def test_clean_warnings_strips_control_characters(warning: str, expected: str) -> None:
    assert clean_warnings([warning]) == [expected]


def test_clean_warnings_bounds_length_and_count() -> None:
    long = clean_warnings(["x" * 1000])[0]
    assert len(long) == MAX_WARNING_CHARS
    assert long.endswith("...")
    assert clean_warnings(["y" * MAX_WARNING_CHARS]) == ["y" * MAX_WARNING_CHARS]
    many = clean_warnings([f"w{i}" for i in range(MAX_WARNINGS + 7)])
    assert len(many) == MAX_WARNINGS + 1
    assert many[:MAX_WARNINGS] == [f"w{i}" for i in range(MAX_WARNINGS)]
    assert many[-1] == "podgraft: 7 more warnings not shown"
    assert len(clean_warnings([f"w{i}" for i in range(MAX_WARNINGS)])) == MAX_WARNINGS


# --- decide ---------------------------------------------------------------------------------------

POLICIES = policy_set(
    compiled("env", env=[{"name": "A", "value": "1"}]),
    compiled(
        "strict",
        required=True,
        namespaceSelector={"matchLabels": {"team": "x"}},
        env=[{"name": "B", "value": "2"}],
    ),
    compiled(
        "debug",
        match={"annotations": {"debug": "on"}},
        ephemeral={"env": [{"name": "DEBUG", "value": "1"}], "allowedImages": ["busybox:*"]},
    ),
)


def run(sent: dict[str, Any], namespace_labels: dict[str, str] | None = None) -> Any:
    return decide(
        parse_review(body(sent)), policies=POLICIES, config=CONFIG, namespace_labels=namespace_labels
    )


ASKS = pod(annotations={"podgraft.io/inject": "env"})


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(make_review(ASKS, resource="deployments", kind="Deployment"), id="not-a-pod"),
        pytest.param(make_review(ASKS, operation="DELETE", old=ASKS), id="delete"),
        pytest.param(make_review(None, operation="DELETE", old=ASKS), id="delete-without-object"),
        pytest.param(make_review(ASKS, operation="UPDATE", old=ASKS), id="plain-update"),
        pytest.param(
            make_review(ASKS, operation="UPDATE", old=ASKS, sub_resource="status"), id="status-update"
        ),
        pytest.param(make_review({"target": {"name": "n"}}, sub_resource="binding"), id="binding-create"),
        pytest.param(make_review(ASKS, operation="CONNECT", sub_resource="exec"), id="exec-connect"),
    ],
)
def test_other_requests_are_ignored(sent: dict[str, Any]) -> None:
    decision = run(sent)
    assert decision.outcome == "ignored"
    assert decision.response == {"uid": sent["request"]["uid"], "allowed": True}
    assert decision.result is None


def test_create_is_patched() -> None:
    sent = make_review(ASKS)
    decision = run(sent)
    assert decision.outcome == "patched"
    response = decision.response
    assert response["uid"] == sent["request"]["uid"]
    assert response["allowed"] is True
    assert "warnings" not in response
    result = apply_patch(ASKS, decode_patch(response))
    assert result["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert decision.result.injected == ("env",)


def test_create_with_only_warnings_is_allowed_with_them() -> None:
    decision = run(make_review(pod(annotations={"podgraft.io/inject": "missing\x1b[2J"})))
    assert decision.outcome == "allowed"
    assert set(decision.response) == {"uid", "allowed", "warnings"}
    [warning] = decision.response["warnings"]
    assert "does not exist" in warning or "not a valid policy name" in warning
    assert "\x1b" not in warning


def test_create_in_a_never_namespace_is_skipped() -> None:
    decision = run(make_review(ASKS, namespace="kube-system"))
    assert decision.outcome == "skipped"
    assert decision.response == {"uid": decision.response["uid"], "allowed": True}
    assert decision.result.skip_code == "namespace-excluded"


def test_required_policy_refused_is_denied() -> None:
    labels = {"podgraft.io/injection": "enabled", "team": "y"}
    decision = run(make_review(pod(annotations={"podgraft.io/inject": "strict"})), namespace_labels=labels)
    assert decision.outcome == "denied"
    assert decision.response["allowed"] is False
    assert decision.response["status"]["code"] == 403
    assert "required policy 'strict'" in decision.response["status"]["message"]
    assert "patch" not in decision.response


def test_namespace_comes_from_the_request_then_the_pod() -> None:
    in_metadata = pod(annotations={"podgraft.io/inject": "env"})
    in_metadata["metadata"]["namespace"] = "kube-system"
    assert run(make_review(in_metadata, namespace="shop")).outcome == "patched"
    assert run(make_review(in_metadata, namespace="")).outcome == "skipped"


def _ephemeral_update(image: str) -> dict[str, Any]:
    old = pod(annotations={"debug": "on"})
    old["spec"]["ephemeralContainers"] = []
    new = pod(annotations={"debug": "on"})
    new["spec"]["ephemeralContainers"] = [{"name": "dbg", "image": image}]
    return make_review(new, operation="UPDATE", old=old, sub_resource="ephemeralcontainers")


def test_ephemeral_update_routes_to_the_debug_rules() -> None:
    sent = _ephemeral_update("busybox:1.36")
    decision = run(sent)
    assert decision.outcome == "patched"
    ops = decode_patch(decision.response)
    assert ops
    assert all(op["path"].startswith("/spec/ephemeralContainers") for op in ops)
    result = apply_patch(sent["request"]["object"], ops)
    assert result["spec"]["ephemeralContainers"][0]["env"] == [{"name": "DEBUG", "value": "1"}]


def test_ephemeral_update_with_a_disallowed_image_is_denied() -> None:
    decision = run(_ephemeral_update("evil/miner:latest"))
    assert decision.outcome == "denied"
    assert "does not allow image 'evil/miner:latest'" in decision.response["status"]["message"]


@pytest.mark.parametrize(
    ("where", "levels"),
    [
        pytest.param("metadata", 1, id="object-metadata"),  # the object is the root, metadata one below
        pytest.param("userInfo", 1, id="envelope"),  # the request is the root
        pytest.param("list", 1, id="envelope-list"),
    ],
)
def test_nesting_is_allowed_up_to_exactly_max_depth_levels(where: str, levels: int) -> None:
    def review(depth: int) -> bytes:
        inner: Any = nested(depth - levels)  # `depth` levels of maps below the root
        if where == "metadata":
            return body(good(object={"metadata": inner, "spec": nested(200)}))
        if where == "userInfo":
            return body(good(userInfo=inner))
        return body(good(extra=[nested(depth - levels - 1)]))

    assert parse_review(review(MAX_DEPTH)).uid == "uid-1"
    with pytest.raises(BadReview, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_review(review(MAX_DEPTH + 1))
