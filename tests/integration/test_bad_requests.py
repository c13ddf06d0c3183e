"""Every way a webhook request can be unusable: an HTTP 4xx whose body is an AdmissionReview-shaped error
with a specific message, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .support import V1, V1BETA1, pod, review

pytestmark = pytest.mark.timeout(60)

LIMIT = 3 * 1024 * 1024  # the default PODGRAFT_MAX_BODY_BYTES
JSON = {"content-type": "application/json"}
INJECT = "podgraft.io/inject"


def _review(**changes: Any) -> dict[str, Any]:
    """A valid v1 review with a fixed uid, then `changes` applied (`request.x` keys edit the request;
    a value of ... deletes the key)."""
    body = review(pod(), uid="uid-1")
    for key, value in changes.items():
        target = body
        *parents, last = key.split(".")
        for parent in parents:
            target = target[parent]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return body


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth):
        node = {"a": node}
    return node


def _encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def assert_error_review(
    response: httpx.Response, *, status: int, message: str, uid: str = "", api_version: str = V1
) -> None:
    """The 4xx body is an AdmissionReview whose response carries the status and the exact message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": False,
            "status": {
                "code": status,
                "reason": "BadRequest" if status == 400 else "Error",
                "message": message,
            },
        },
    }


BAD_BODIES = [
    pytest.param(b"", "empty body: expected an AdmissionReview", "", V1, id="empty-body"),
    pytest.param(b"[1, 2]", "expected an AdmissionReview object, got a list", "", V1, id="json-array"),
    pytest.param(b'"review"', "expected an AdmissionReview object, got a string", "", V1, id="json-string"),
    pytest.param(b"42", "expected an AdmissionReview object, got a number", "", V1, id="json-number"),
    pytest.param(b"null", "expected an AdmissionReview object, got null", "", V1, id="json-null"),
    pytest.param(
        _review(apiVersion="admission.k8s.io/v2"),
        "unsupported apiVersion 'admission.k8s.io/v2'; "
        "expected admission.k8s.io/v1 or admission.k8s.io/v1beta1",
        "",
        V1,
        id="wrong-apiversion",
    ),
    pytest.param(
        _review(apiVersion=...),
        "apiVersion missing: expected an AdmissionReview of admission.k8s.io/v1 or admission.k8s.io/v1beta1",
        "",
        V1,
        id="missing-apiversion",
    ),
    pytest.param(
        _review(kind="AdmissionRequest"),
        "unsupported kind 'AdmissionRequest'; expected AdmissionReview",
        "",
        V1,
        id="wrong-kind",
    ),
    pytest.param(
        _review(apiVersion=V1BETA1, kind="Pod"),
        "unsupported kind 'Pod'; expected AdmissionReview",
        "",
        V1BETA1,
        id="wrong-kind-v1beta1-answered-in-v1beta1",
    ),
    pytest.param(
        _review(request=...), "the AdmissionReview has no request object", "", V1, id="missing-request"
    ),
    pytest.param(
        _review(request=["uid-1"]),
        "the AdmissionReview has no request object",
        "",
        V1,
        id="request-not-object",
    ),
    pytest.param(
        _review(**{"request.uid": ...}), "request.uid is missing or not a string", "", V1, id="missing-uid"
    ),
    pytest.param(
        _review(**{"request.uid": ""}), "request.uid is missing or not a string", "", V1, id="empty-uid"
    ),
    pytest.param(
        _review(**{"request.uid": 42}), "request.uid is missing or not a string", "", V1, id="non-string-uid"
    ),
    pytest.param(
        _review(**{"request.uid": "u" * 257}),
        "request.uid is longer than 256 characters",
        "",
        V1,
        id="long-uid",
    ),
    pytest.param(
        _review(**{"request.operation": "PATCH"}),
        "request.operation 'PATCH' is not one of CREATE, UPDATE, DELETE, CONNECT",
        "uid-1",
        V1,
        id="bad-operation",
    ),
    pytest.param(
        _review(**{"request.operation": ...}),
        "request.operation 'None' is not one of CREATE, UPDATE, DELETE, CONNECT",
        "uid-1",
        V1,
        id="missing-operation",
    ),
    pytest.param(
        _review(**{"request.object": ...}),
        "request.object is required for CREATE",
        "uid-1",
        V1,
        id="missing-object-on-create",
    ),
    pytest.param(
        _review(**{"request.object": ..., "request.operation": "UPDATE"}),
        "request.object is required for UPDATE",
        "uid-1",
        V1,
        id="missing-object-on-update",
    ),
    pytest.param(
        _review(**{"request.object": [pod()]}),
        "request.object must be an object, got a list",
        "uid-1",
        V1,
        id="object-not-object",
    ),
    pytest.param(
        _review(**{"request.oldObject": "pod"}),
        "request.oldObject must be an object, got a string",
        "uid-1",
        V1,
        id="old-object-not-object",
    ),
    pytest.param(
        _review(**{"request.resource": "pods"}),
        "request.kind and request.resource must be objects",
        "uid-1",
        V1,
        id="resource-not-object",
    ),
    pytest.param(
        _review(**{"request.namespace": ["shop"]}),
        "request.namespace must be a string",
        "uid-1",
        V1,
        id="namespace-not-string",
    ),
    pytest.param(
        _review(**{"request.object.metadata.annotations": _nested(80)}),
        "request is nested deeper than 64 levels",
        "uid-1",
        V1,
        id="nested-too-deep",
    ),
]


@pytest.mark.parametrize(("body", "message", "uid", "api_version"), BAD_BODIES)
def test_bad_review_is_a_400_with_a_specific_message(
    client: httpx.Client, body: Any, message: str, uid: str, api_version: str
) -> None:
    response = client.post("/mutate", content=_encode(body), headers=JSON)
    assert_error_review(response, status=400, message=message, uid=uid, api_version=api_version)


def test_invalid_json_is_a_400_naming_the_json_error(client: httpx.Client) -> None:
    response = client.post("/mutate", content=b'{"apiVersion": "admission.k8s.io/v1",', headers=JSON)
    assert response.status_code == 400
    message = response.json()["response"]["status"]["message"]
    assert message.startswith("body is not valid JSON: "), message
    assert_error_review(response, status=400, message=message)


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        pytest.param("text/plain", "'text/plain'", id="text-plain"),
        pytest.param("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'", id="form"),
        pytest.param("application/yaml", "'application/yaml'", id="yaml"),
        pytest.param(None, "'(none)'", id="missing"),
    ],
)
def test_wrong_content_type_is_a_400(client: httpx.Client, content_type: str | None, shown: str) -> None:
    request = client.build_request("POST", "/mutate", content=json.dumps(_review()).encode())
    request.headers.pop("content-type", None)  # raw bytes: httpx sets no Content-Type itself
    if content_type is not None:
        request.headers["content-type"] = content_type
    response = client.send(request)
    assert_error_review(response, status=400, message=f"Content-Type must be application/json, got {shown}")


def test_content_type_with_charset_is_accepted(client: httpx.Client) -> None:
    response = client.post(
        "/mutate",
        content=json.dumps(_review()).encode(),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200
    assert response.json()["response"]["uid"] == "uid-1"


def _padded_review(size: int) -> bytes:
    """A valid review padded with trailing whitespace to exactly `size` bytes."""
    body = json.dumps(_review()).encode()
    return body + b" " * (size - len(body))


def test_body_over_the_limit_with_content_length_is_a_413(client: httpx.Client) -> None:
    body = _padded_review(LIMIT + 1)
    response = client.post("/mutate", content=body, headers=JSON)
    assert response.request.headers["content-length"] == str(LIMIT + 1)
    assert_error_review(
        response, status=413, message=f"body of {LIMIT + 1} bytes is over the {LIMIT}-byte limit"
    )


def test_chunked_body_over_the_limit_is_a_413(client: httpx.Client) -> None:
    body = _padded_review(LIMIT + 64 * 1024)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = client.post("/mutate", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error_review(response, status=413, message=f"body is over the {LIMIT}-byte limit")


def test_body_of_exactly_the_limit_is_accepted(client: httpx.Client) -> None:
    response = client.post("/mutate", content=_padded_review(LIMIT), headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["response"] == {"uid": "uid-1", "allowed": True}


GARBAGE = [
    pytest.param(b"\x00\xff\xfe garbage", id="binary"),
    pytest.param(b"{" * 10_000, id="unclosed-braces"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-array"),
    pytest.param(b'{"a":' * 10_000 + b"{}" + b"}" * 10_000, id="deep-object"),
    pytest.param(b'{"apiVersion": "admission.k8s.io/v1", "apiVersion": 1}', id="duplicate-keys"),
    pytest.param(b'{"a": NaN}', id="nan"),
    pytest.param(b'{"a": 1e999999}', id="huge-number"),
    pytest.param(b'"\\ud800"', id="lone-surrogate"),
    pytest.param(
        json.dumps(_review(**{"request.uid": "\x00\u202e\U0001f600"})).encode(), id="control-chars-uid"
    ),
    pytest.param(
        json.dumps(_review(**{"request.kind": None, "request.resource": None})).encode(), id="null-kind"
    ),
    pytest.param(json.dumps(_review(**{"request.object": None})).encode(), id="null-object"),
    pytest.param(json.dumps(_review(**{"request.object.spec": "not-a-spec"})).encode(), id="string-spec"),
    pytest.param(
        json.dumps(_review(**{"request.object.metadata.annotations": {"podgraft.io/inject": 7}})).encode(),
        id="numeric-annotation",
    ),
    pytest.param(json.dumps(_review(**{"request.dryRun": "yes"})).encode(), id="string-dryrun"),
    pytest.param(
        json.dumps(_review(**{"request.name": "", "request.object.metadata": {"generateName": 7}})).encode(),
        id="numeric-generate-name",
    ),
    pytest.param(
        json.dumps(
            _review(**{"request.name": "", "request.object.metadata": {"generateName": ["web-"]}})
        ).encode(),
        id="list-generate-name",
    ),
    pytest.param(json.dumps(_review(**{"request.subResource": 3})).encode(), id="numeric-subresource"),
]


@pytest.mark.parametrize("body", GARBAGE)
def test_no_input_gives_a_5xx(client: httpx.Client, body: bytes) -> None:
    response = client.post("/mutate", content=body, headers=JSON)
    assert response.status_code < 500, response.text
    assert response.json()["kind"] == "AdmissionReview"
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/mutate", 405, id="get-mutate"),
        pytest.param("PUT", "/mutate", 405, id="put-mutate"),
        pytest.param("POST", "/validate", 404, id="unknown-path"),
        pytest.param("POST", "/healthz", 405, id="post-healthz"),
    ],
)
def test_other_routes_are_4xx(client: httpx.Client, method: str, path: str, status: int) -> None:
    response = client.request(method, path, content=json.dumps(_review()).encode(), headers=JSON)
    assert response.status_code == status


def _malformed(metadata: dict[str, Any], *, spec: Any = None, **kwargs: Any) -> dict[str, Any]:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec or {"containers": []}}
    return review(obj, uid="uid-malformed", **kwargs)


# Objects the kube-apiserver would never send (it decodes pods into typed structs first), but a webhook
# must survive: the engine is written to read any JSON defensively, so none of these may reach the
# internal-error path (which admits the pod uninjected with an "internal error" warning).
MALFORMED_PODS = [
    pytest.param(
        _malformed({"name": "p", "labels": ["x"], "annotations": {INJECT: "log-shipper"}}), id="labels-list"
    ),
    pytest.param(
        _malformed({"name": "p", "annotations": {INJECT: "log-shipper", "a": 1}, "labels": {"app": 2}}),
        id="non-string-label-and-annotation-values",
    ),
    pytest.param(
        _malformed({"generateName": 7, "annotations": {INJECT: "log-shipper"}}), id="generate-name-number"
    ),
    pytest.param(
        _malformed({"name": "p", "annotations": {INJECT: "log-shipper"}}, spec={"serviceAccountName": ["x"]}),
        id="service-account-list",
    ),
    pytest.param(
        _malformed(
            {"name": "p", "annotations": {"debug.example.com/rules": "standard"}},
            spec={"containers": [], "ephemeralContainers": [{"name": "d", "image": "busybox:1.36"}]},
            operation="UPDATE",
            sub_resource="ephemeralcontainers",
            old_object={"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": "not-a-spec"},
        ),
        id="ephemeral-old-spec-string",
    ),
]


@pytest.mark.parametrize("body", MALFORMED_PODS)
def test_malformed_pod_is_not_an_internal_error(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post("/mutate", content=json.dumps(body).encode(), headers=JSON)
    assert response.status_code == 200, response.text
    answer = response.json()["response"]
    assert answer["uid"] == "uid-malformed"
    assert not any("internal error" in w for w in answer.get("warnings", [])), answer["warnings"]
