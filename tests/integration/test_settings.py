"""A second server with non-default settings, given as CLI flags and PODGRAFT_* environment variables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonpatch
import kubernetes_validate
import pytest

from .support import Server, build_server, client_context, decode_patch, load_pod, pod, review, running

pytestmark = pytest.mark.timeout(60)

BODY_LIMIT = 4096
SETTINGS_ENV = {
    "PODGRAFT_MAX_BODY_BYTES": str(BODY_LIMIT),
    "PODGRAFT_EXCLUDED_NAMESPACES": "legacy, batch-old",
}
SETTINGS_FLAGS = ["--kubernetes-version", "1.28"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Kubernetes 1.28 (no native sidecars for `auto`), a 4 KiB body limit, two extra excluded namespaces."""
    server = build_server(
        tmp_path_factory.mktemp("podgraft-tuned"), env=SETTINGS_ENV, extra_args=SETTINGS_FLAGS
    )
    with running(server) as started:
        yield started


@pytest.fixture(scope="module")
def tuned_client(tuned: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuned.base_url, verify=client_context(tuned.ca_file), timeout=10.0) as http:
        yield http


def post(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/mutate", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["response"]
    return answer


def test_auto_sidecars_are_classic_containers_before_kubernetes_1_29(tuned_client: httpx.Client) -> None:
    web = load_pod()
    injected = jsonpatch.apply_patch(web, decode_patch(post(tuned_client, review(web))))
    spec = injected["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app", "log-shipper"]
    assert "restartPolicy" not in spec["containers"][1], "sidecarMode auto on 1.28: a classic container"
    inits = {c["name"]: c for c in spec["initContainers"]}
    assert list(inits) == ["mesh-proxy", "wait-for-db"]
    assert inits["mesh-proxy"]["restartPolicy"] == "Always", "sidecarMode native is kept as asked"
    kubernetes_validate.validate(injected, "1.30", strict=True)


@pytest.mark.parametrize("namespace", ["legacy", "batch-old", "kube-system"])
def test_configured_excluded_namespaces_are_never_injected(
    tuned_client: httpx.Client, namespace: str
) -> None:
    answer = post(tuned_client, review(load_pod(), namespace=namespace))
    assert answer == {"uid": answer["uid"], "allowed": True}


def test_configured_body_limit_is_enforced(tuned_client: httpx.Client) -> None:
    small = review(pod(annotations={"podgraft.io/inject": "wait-for-db"}))
    assert "patch" in post(tuned_client, small)
    big = review(pod(annotations={"podgraft.io/inject": "wait-for-db", "padding": "x" * BODY_LIMIT}))
    response = tuned_client.post("/mutate", json=big)
    assert response.status_code == 413
    message = response.json()["response"]["status"]["message"]
    assert message.startswith("body of "), message
    assert message.endswith(f"bytes is over the {BODY_LIMIT}-byte limit"), message


def test_readyz_of_the_second_server(tuned_client: httpx.Client) -> None:
    response = tuned_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["policies"] == 5
