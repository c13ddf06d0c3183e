"""Hostile AdmissionReviews through the whole /mutate handler (in process, no sockets).

Whatever the body: never a 5xx (503 is overload, not produced here), never an internal error,
always a JSON AdmissionReview whose uid is echoed when the request had a usable one, and when
a patch comes back it applies to the object that was sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import jsonpatch
import orjson
from hypothesis import event, given
from hypothesis import strategies as st

from app.server import create_app
from app.settings import Settings
from tests.conftest import EXAMPLE_POLICIES, make_review

WEIRD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("\x00\x1b\u202e/~\n"),
    max_size=20,
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), WEIRD_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(WEIRD_TEXT, children, max_size=4),
    max_leaves=20,
)
POLICY_NAMES = st.sampled_from(["wait-for-db", "log-shipper", "mesh-proxy", "content-sync", "nope", "false"])


def _app() -> Any:
    from app.sources.directory import read_directory
    from app.sources.store import PolicyStore

    store = PolicyStore()
    store.replace_all(read_directory(EXAMPLE_POLICIES))
    return create_app(Settings(), store=store)


APP = _app()


async def _post(body: bytes, content_type: bytes = b"application/json") -> tuple[int, dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/mutate",
        "raw_path": b"/mutate",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8443),
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await APP(scope, receive, send)
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, orjson.loads(payload)


def post(body: bytes) -> tuple[int, dict[str, Any]]:
    return asyncio.run(_post(body))


def _check(status: int, reply: dict[str, Any]) -> None:
    assert status in (200, 400, 413), (status, reply)
    assert reply["kind"] == "AdmissionReview"
    response = reply["response"]
    assert isinstance(response["allowed"], bool)
    for warning in response.get("warnings", []):
        assert warning.isprintable(), warning
        assert "internal error" not in warning, warning
    event(f"status={status} allowed={response['allowed']} patched={'patch' in response}")


@given(body=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies(body: bytes) -> None:
    _check(*post(body))


@st.composite
def hostile_pods(draw: st.DrawFn) -> dict[str, Any]:
    """Pod-shaped objects with hostile content: junk types, control characters, odd keys."""
    annotations = draw(st.dictionaries(WEIRD_TEXT, WEIRD_TEXT | SCALARS, max_size=4))
    if draw(st.booleans()):
        annotations["podgraft.io/inject"] = ",".join(draw(st.lists(POLICY_NAMES, max_size=3)))
    if draw(st.booleans()):
        annotations["podgraft.io/status"] = draw(WEIRD_TEXT | JSON.map(json.dumps))
    metadata: dict[str, Any] = {
        "annotations": annotations,
        "labels": draw(st.dictionaries(WEIRD_TEXT, SCALARS)),
    }
    for key in ("name", "generateName", "namespace"):
        if draw(st.booleans()):
            metadata[key] = draw(WEIRD_TEXT | SCALARS)
    containers = draw(
        st.lists(
            st.fixed_dictionaries(
                {"name": WEIRD_TEXT | SCALARS, "image": WEIRD_TEXT},
                optional={"ports": JSON, "env": JSON, "volumeMounts": JSON},
            ),
            max_size=3,
        )
    )
    spec: dict[str, Any] = {"containers": containers}
    if draw(st.booleans()):
        spec["initContainers"] = draw(JSON)
    if draw(st.booleans()):
        spec["volumes"] = draw(JSON)
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    if draw(st.integers(0, 9)) == 0:
        pod[draw(st.sampled_from(["metadata", "spec"]))] = draw(SCALARS)
    return pod


@given(
    pod=hostile_pods(),
    namespace=WEIRD_TEXT,
    sub=st.sampled_from(["", "ephemeralcontainers", "status"]),
    operation=st.sampled_from(["CREATE", "UPDATE"]),
)
def test_hostile_pods(pod: dict[str, Any], namespace: str, sub: str, operation: str) -> None:
    review = make_review(pod, namespace=namespace, operation=operation, sub_resource=sub, old=pod)
    status, reply = post(json.dumps(review).encode())
    _check(status, reply)
    response = reply["response"]
    if status == 200:
        assert response["uid"] == review["request"]["uid"]
    if "patch" in response:
        jsonpatch.apply_patch(pod, orjson.loads(base64.b64decode(response["patch"])))


def test_duplicate_keys_take_the_last_value() -> None:
    body = (
        b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","uid":"b",'
        b'"kind":{"kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"DELETE"}}'
    )
    status, reply = post(body)
    assert status == 200
    assert reply["response"]["uid"] == "b"


def test_huge_strings_and_deep_nesting_are_refused_or_handled() -> None:
    deep = make_review(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"annotations": {"a": "x" * 2_000_000}},
            "spec": {"containers": [{"name": "a", "image": "b"}]},
        }
    )
    status, _ = post(orjson.dumps(deep))
    assert status == 200
    nested: Any = "x"
    for _ in range(500):
        nested = {"a": nested}
    status, reply = post(
        json.dumps(make_review({"apiVersion": "v1", "kind": "Pod", "metadata": nested})).encode()
    )
    assert status == 400
    assert "nested deeper" in reply["response"]["status"]["message"]
