"""Pod Security Standards checks on injected containers and volumes."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine.podsecurity import container_problems, enforced_level, injection_warnings, volume_problems

HARDENED: dict[str, Any] = {
    "name": "h",
    "image": "x",
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def _with(**security: Any) -> dict[str, Any]:
    return {**HARDENED, "securityContext": {**HARDENED["securityContext"], **security}}


@pytest.mark.parametrize(
    ("container", "level", "expected"),
    [
        pytest.param(HARDENED, "restricted", [], id="hardened-restricted"),
        pytest.param({"name": "p", "image": "x"}, "baseline", [], id="plain-baseline"),
        pytest.param({"name": "p", "image": "x"}, "privileged", [], id="anything-privileged"),
        pytest.param(_with(privileged=True), "baseline", ["privileged"], id="privileged-baseline"),
        pytest.param(
            _with(capabilities={"drop": ["ALL"], "add": ["NET_ADMIN"]}),
            "baseline",
            ["adds capabilities NET_ADMIN"],
            id="net-admin-baseline",
        ),
        pytest.param(
            {**HARDENED, "ports": [{"containerPort": 80, "hostPort": 80}]},
            "baseline",
            ["hostPort"],
            id="host-port",
        ),
        pytest.param(
            _with(seccompProfile={"type": "Unconfined"}),
            "baseline",
            ["seccompProfile Unconfined"],
            id="unconfined-baseline",
        ),
        pytest.param(
            {"name": "p", "image": "x"},
            "restricted",
            [
                "allowPrivilegeEscalation is not false",
                "runAsNonRoot is not true",
                "capabilities do not drop ALL",
                "seccompProfile is not RuntimeDefault or Localhost",
            ],
            id="plain-restricted",
        ),
        pytest.param(_with(runAsUser=0), "restricted", ["runAsUser 0"], id="root-uid-restricted"),
    ],
)
def test_container_problems(container: dict[str, Any], level: str, expected: list[str]) -> None:
    assert container_problems(container, level=level, pod_security={}) == expected


def test_pod_level_security_context_counts_for_restricted() -> None:
    container = {
        "name": "p",
        "image": "x",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod_security = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container_problems(container, level="restricted", pod_security=pod_security) == []


@pytest.mark.parametrize(
    ("volume", "level", "expected"),
    [
        pytest.param({"name": "v", "emptyDir": {}}, "restricted", [], id="emptydir"),
        pytest.param(
            {"name": "v", "hostPath": {"path": "/"}}, "baseline", ["hostPath volume"], id="hostpath"
        ),
        pytest.param(
            {"name": "v", "nfs": {"server": "s", "path": "/"}}, "restricted", ["nfs volume"], id="nfs"
        ),
        pytest.param({"name": "v", "nfs": {"server": "s", "path": "/"}}, "baseline", [], id="nfs-baseline"),
    ],
)
def test_volume_problems(volume: dict[str, Any], level: str, expected: list[str]) -> None:
    assert volume_problems(volume, level=level) == expected


@pytest.mark.parametrize(
    ("labels", "level"),
    [
        pytest.param(None, None, id="unknown"),
        pytest.param({}, None, id="unlabelled"),
        pytest.param({"pod-security.kubernetes.io/enforce": "privileged"}, None, id="privileged"),
        pytest.param({"pod-security.kubernetes.io/enforce": "baseline"}, "baseline", id="baseline"),
        pytest.param({"pod-security.kubernetes.io/enforce": "restricted"}, "restricted", id="restricted"),
        pytest.param({"pod-security.kubernetes.io/warn": "restricted"}, None, id="warn-only"),
    ],
)
def test_enforced_level(labels: dict[str, str] | None, level: str | None) -> None:
    assert enforced_level(labels) == level


def test_warning_names_policy_item_level_namespace_and_rule() -> None:
    warnings = injection_warnings(
        level="baseline",
        namespace="shop",
        pod_spec={},
        injected=[
            ("debug", "container", _with(privileged=True)),
            ("logs", "volume", {"name": "h", "hostPath": {}}),
        ],
    )
    assert warnings == [
        "podgraft: policy 'debug': container 'h' violates Pod Security 'baseline' enforced in namespace "
        "'shop' (privileged); the apiserver will reject the pod",
        "podgraft: policy 'logs': volume 'h' violates Pod Security 'baseline' enforced in namespace 'shop' "
        "(hostPath volume); the apiserver will reject the pod",
    ]
