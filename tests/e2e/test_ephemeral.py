"""Scenario 7 of issue 3: `kubectl debug`-style ephemeral containers through the
`pods/ephemeralcontainers` subresource get the policy's debug rules; a disallowed image is refused."""

from __future__ import annotations

import pytest

from .conftest import E2E
from .kube import api_error, container, env_of, error_message, names, pod

pytestmark = pytest.mark.e2e


def test_ephemeral_container_gets_debug_mounts_and_env_and_a_disallowed_image_is_refused(e2e: E2E) -> None:
    kube, ns = e2e.kube, e2e.opted_in()
    # log-shipper (matched) brings the app-logs volume that debug-rules mounts into debug containers
    annotations = {"logging.example.com/ship": "true", "debug.example.com/rules": "standard"}
    kube.create_pod(ns, pod(name="debuggee", annotations=annotations))

    debugger = {
        "name": "debugger",
        "image": "busybox:1.36",
        "command": ["sh"],
        "stdin": True,
        "tty": True,
        "targetContainerName": "app",
    }
    kube.add_ephemeral_container(ns, "debuggee", debugger)
    stored = kube.read_pod(ns, "debuggee")

    grafted = container(stored, "debugger", kind="ephemeralContainers")
    mounts = {m["mountPath"]: m for m in grafted.get("volumeMounts") or []}
    assert mounts["/debug/logs"]["name"] == "app-logs"
    assert mounts["/debug/logs"].get("readOnly") is True
    assert env_of(grafted)["DEBUG_SESSION"] == f"{ns}/debuggee"

    refused = api_error(
        lambda: kube.add_ephemeral_container(ns, "debuggee", {"name": "shell", "image": "alpine:3.20"})
    )
    message = error_message(refused)
    assert refused.status == 403, message
    assert "'alpine:3.20'" in message
    assert "'debug-rules'" in message
    assert names(kube.read_pod(ns, "debuggee")["spec"]["ephemeralContainers"]) == ["debugger"]
