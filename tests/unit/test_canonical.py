"""Items as the apiserver stores them: its defaults and omissions compare equal, nothing else does."""

from __future__ import annotations

import copy
import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from kubernetes.utils import parse_quantity

from app.engine.canonical import (
    MAX_DEPTH,
    pull_policy,
    quantity,
    same_container,
    same_env,
    same_mount,
    same_volume,
)

BASE = {"name": "proxy", "image": "envoy:1.31"}


def container(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


@pytest.mark.parametrize(
    ("rendered", "stored"),
    [
        pytest.param(
            container(),
            container(
                imagePullPolicy="IfNotPresent",
                terminationMessagePath="/dev/termination-log",
                terminationMessagePolicy="File",
                resources={},
            ),
            id="container-defaults",
        ),
        pytest.param(
            container(image="envoy"),
            container(image="envoy", imagePullPolicy="Always"),
            id="no-tag-is-latest",
        ),
        pytest.param(
            container(ports=[{"containerPort": 80}]),
            container(ports=[{"containerPort": 80, "protocol": "TCP"}]),
            id="port-protocol",
        ),
        pytest.param(
            container(readinessProbe={"httpGet": {"port": 80}, "initialDelaySeconds": 0}),
            container(
                readinessProbe={
                    "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                    "timeoutSeconds": 1,
                    "periodSeconds": 10,
                    "successThreshold": 1,
                    "failureThreshold": 3,
                }
            ),
            id="probe-defaults",
        ),
        pytest.param(
            container(lifecycle={"preStop": {"httpGet": {"port": 80}}}),
            container(lifecycle={"preStop": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}}}),
            id="lifecycle-http-defaults",
        ),
        pytest.param(
            container(resources={"limits": {"cpu": "0.5", "memory": "1024Mi"}}),
            container(
                resources={
                    "limits": {"cpu": "500m", "memory": "1Gi"},
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                }
            ),
            id="requests-from-limits-and-canonical-quantities",
        ),
        pytest.param(
            container(
                env=[
                    {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "E", "value": ""},
                ]
            ),
            container(
                env=[
                    {
                        "name": "N",
                        "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}},
                    },
                    {"name": "E"},
                ]
            ),
            id="env-field-ref-and-empty-value",
        ),
        pytest.param(
            container(
                stdin=False, tty=False, volumeMounts=[{"name": "v", "mountPath": "/v", "readOnly": False}]
            ),
            container(volumeMounts=[{"name": "v", "mountPath": "/v"}]),
            id="plain-false-fields-are-omitted",
        ),
    ],
)
def test_what_the_apiserver_fills_in_is_the_same(rendered: dict[str, Any], stored: dict[str, Any]) -> None:
    assert same_container(stored, rendered, host_network=False)


def test_host_network_ports_are_host_ports() -> None:
    rendered = container(ports=[{"containerPort": 80}])
    stored = container(ports=[{"containerPort": 80, "hostPort": 80, "protocol": "TCP"}])
    assert same_container(stored, rendered, host_network=True)
    assert not same_container(stored, rendered, host_network=False)


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(container(command=["sleep", "infinity"]), id="command-added"),
        pytest.param(container(image="envoy:1.30"), id="other-image"),
        pytest.param(container(imagePullPolicy="Never"), id="other-pull-policy"),
        pytest.param(container(securityContext={"privileged": True}), id="privileged"),
        pytest.param(container(securityContext={"runAsUser": 0}), id="run-as-root"),
        pytest.param(container(resources={"limits": {"cpu": "1"}}), id="limits-added"),
        pytest.param(
            container(ports=[{"containerPort": 80, "protocol": "UDP"}, {"containerPort": 81}]),
            id="other-protocol",
        ),
        pytest.param(container(stdin=True), id="stdin"),
        pytest.param(container(restartPolicy="Always"), id="restart-policy"),
    ],
)
def test_a_real_difference_is_never_explained_away(stored: dict[str, Any]) -> None:
    assert not same_container(
        stored, container(ports=None) if "ports" in stored else container(), host_network=False
    )


def test_false_of_a_pointer_field_is_kept() -> None:
    rendered = container(securityContext={"allowPrivilegeEscalation": False, "runAsNonRoot": True})
    assert not same_container(container(securityContext={"runAsNonRoot": True}), rendered, host_network=False)


@pytest.mark.parametrize(
    ("rendered", "stored"),
    [
        pytest.param({"name": "v", "emptyDir": {}}, {"name": "v"}, id="no-source-is-an-empty-dir"),
        pytest.param(
            {"name": "v", "configMap": {"name": "c"}},
            {"name": "v", "configMap": {"name": "c", "defaultMode": 420}},
            id="config-map",
        ),
        pytest.param(
            {"name": "v", "secret": {"secretName": "s"}},
            {"name": "v", "secret": {"secretName": "s", "defaultMode": 420}},
            id="secret",
        ),
        pytest.param(
            {"name": "v", "hostPath": {"path": "/x"}},
            {"name": "v", "hostPath": {"path": "/x", "type": ""}},
            id="host-path",
        ),
        pytest.param(
            {"name": "v", "persistentVolumeClaim": {"claimName": "c", "readOnly": False}},
            {"name": "v", "persistentVolumeClaim": {"claimName": "c"}},
            id="claim-read-only-false",
        ),
        pytest.param(
            {
                "name": "v",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "t"}},
                        {
                            "downwardAPI": {
                                "items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]
                            }
                        },
                    ]
                },
            },
            {
                "name": "v",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"path": "t", "expirationSeconds": 3600}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "n",
                                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"},
                                    }
                                ]
                            }
                        },
                    ],
                },
            },
            id="projected",
        ),
        pytest.param(
            {"name": "v", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}},
            {
                "name": "v",
                "ephemeral": {
                    "volumeClaimTemplate": {
                        "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}
                    }
                },
            },
            id="ephemeral-claim",
        ),
    ],
)
def test_volume_defaults(rendered: dict[str, Any], stored: dict[str, Any]) -> None:
    assert same_volume(stored, rendered)


def test_a_different_volume_source_is_a_difference() -> None:
    assert not same_volume(
        {"name": "app-logs", "hostPath": {"path": "/etc"}}, {"name": "app-logs", "emptyDir": {}}
    )
    assert not same_volume(
        {"name": "v", "secret": {"secretName": "s", "defaultMode": 511}},
        {"name": "v", "secret": {"secretName": "s"}},
    )


def test_env_and_mounts() -> None:
    assert same_env({"name": "A"}, {"name": "A", "value": ""})
    assert not same_env({"name": "A", "value": "x"}, {"name": "A", "value": "y"})
    assert same_mount({"name": "v", "mountPath": "/v"}, {"name": "v", "mountPath": "/v", "readOnly": False})
    assert not same_mount(
        {"name": "v", "mountPath": "/v"}, {"name": "v", "mountPath": "/v", "readOnly": True}
    )


def test_a_hostile_deep_item_equals_nothing() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_DEPTH + 5):
        node["x"] = {}
        node = node["x"]
    assert not same_container(container(securityContext=deep), container(), host_network=False)


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("busybox:1.36", "IfNotPresent"),
        ("registry.example.com:5000/team/busybox", "Always"),
        ("registry.example.com:5000/team/busybox:1", "IfNotPresent"),
        ("busybox@sha256:" + "0" * 64, "IfNotPresent"),
    ],
)
def test_pull_policy(image: str, policy: str) -> None:
    assert pull_policy(image) == policy


@pytest.mark.parametrize(
    "text",
    [
        "100m",
        "0.1",
        "1",
        "2.5",
        "1Gi",
        "1024Mi",
        "1.5Gi",
        "128974848",
        "129e6",
        "129M",
        "1e3",
        "1k",
        "1E",
        "5n",
        "7u",
        ".5",
        "3Ki",
        "0",
    ],
)
def test_quantity_against_the_kubernetes_client(text: str) -> None:
    expected = Decimal(parse_quantity(text))
    milli = Fraction(expected) * 1000
    assert quantity(text) == Fraction(math.ceil(milli), 1000)


def test_what_is_not_a_quantity_is_left_alone() -> None:
    assert quantity("lots") == "lots"
    assert quantity(True) is True
    assert quantity("1e999") == "1e999"
    assert quantity(2) == 2


# --- the API token mount the ServiceAccount admission plugin adds after Podgraft's patch ----------

TOKEN_MOUNT = {
    "name": "kube-api-access-x7k2q",
    "readOnly": True,
    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
}
HELPER = container(volumeMounts=[{"name": "logs", "mountPath": "/logs"}])


def test_the_service_account_plugins_token_mount_is_the_apiservers() -> None:
    """With ServiceAccount admission on, the apiserver re-runs its plugins after the webhooks: the
    injected helper comes back to Podgraft (reinvocation) and to the audit with the token mount
    appended (plugin/pkg/admission/serviceaccount, mountServiceAccountToken)."""
    stored = copy.deepcopy(HELPER)
    stored["volumeMounts"].append(dict(TOKEN_MOUNT))
    assert same_container(stored, HELPER, host_network=False)
    bare = container(volumeMounts=[dict(TOKEN_MOUNT)])
    assert same_container(bare, container(), host_network=False)


@pytest.mark.parametrize(
    "mount",
    [
        pytest.param({**TOKEN_MOUNT, "name": "my-token"}, id="another-volume"),
        pytest.param({**TOKEN_MOUNT, "readOnly": False}, id="writable"),
        pytest.param({**TOKEN_MOUNT, "subPath": "token"}, id="sub-path"),
        pytest.param({**TOKEN_MOUNT, "mountPath": "/var/run/secrets/other"}, id="another-path"),
    ],
)
def test_any_other_mount_is_a_difference(mount: dict[str, Any]) -> None:
    stored = copy.deepcopy(HELPER)
    stored["volumeMounts"].append(mount)
    assert not same_container(stored, HELPER, host_network=False)


def test_a_policy_that_mounts_the_token_path_itself_is_compared_as_it_is() -> None:
    own = container(volumeMounts=[{**TOKEN_MOUNT, "name": "policy-token"}])
    stored = container(volumeMounts=[dict(TOKEN_MOUNT)])
    assert not same_container(stored, own, host_network=False)
    twice = container(volumeMounts=[dict(TOKEN_MOUNT), {**TOKEN_MOUNT, "name": "kube-api-access-b"}])
    assert not same_container(twice, container(), host_network=False)
