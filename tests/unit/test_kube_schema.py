"""app/sources/kubeschema.py: the shipped Kubernetes schemas (not stale, the chart's versions), their
agreement with kubernetes-validate on whole Pods, and the value checks the schema cannot make."""

from __future__ import annotations

import importlib.util
import re
from decimal import Decimal
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

from app.sources.kubeschema import SCHEMAS, check_spec, quantity, schema_version, shipped_versions
from tests.conftest import ROOT, _pod_validator

NEWEST = kv_utils.major_minor(kubernetes_validate.latest_version())


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "hack" / "kubeschema" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_schemas_are_what_the_script_generates_from_the_pinned_package() -> None:
    expected = _generator().expected_files()
    assert sorted(expected) == sorted(SCHEMAS.glob("v*.json")), "run hack/kubeschema/generate.py"
    for path, text in expected.items():
        assert path.read_text() == text, f"{path.name} is stale: run hack/kubeschema/generate.py"


def test_the_shipped_versions_are_the_ones_the_chart_supports() -> None:
    chart = (ROOT / "charts" / "podgraft" / "Chart.yaml").read_text()
    oldest = re.search(r'^kubeVersion: ">=(\d+\.\d+)\.0-0"$', chart, re.M)
    assert oldest is not None
    versions = shipped_versions()
    assert versions[0] == oldest.group(1)
    assert versions[-1] == NEWEST, "the newest minor kubernetes-validate ships, as the chart tests"
    minors = [int(v.split(".")[1]) for v in versions]
    assert minors == list(range(minors[0], minors[-1] + 1))
    size = sum(path.stat().st_size for path in SCHEMAS.glob("v*.json"))
    assert size < 1024 * 1024, f"{size} bytes: ship only the definitions a policy injects"


@pytest.mark.parametrize(
    ("version", "minor", "noted"),
    [
        pytest.param("1.30", "1.30", False, id="minor"),
        pytest.param("v1.35.4", "1.35", False, id="git-version"),
        pytest.param("1.33+", "1.33", False, id="plus"),
        pytest.param("1.28", "1.29", True, id="older-than-shipped"),
        pytest.param("1.99", NEWEST, True, id="newer-than-shipped"),
    ],
)
def test_schema_version(version: str, minor: str, noted: bool) -> None:
    found, note = schema_version(version)
    assert found == minor
    assert (note is not None) == noted


def test_schema_version_refuses_what_is_not_a_version() -> None:
    with pytest.raises(ValueError, match="expected a Kubernetes version"):
        schema_version("latest")


# --- the schema agrees with kubernetes-validate on whole Pods --------------------------------------

SAMPLES = [
    pytest.param({"name": "a", "image": "b"}, id="minimal"),
    pytest.param({"name": "a", "image": "b", "imag": "typo"}, id="unknown-top-level"),
    pytest.param({"name": "a", "image": "b", "livenessProbe": {"periodSecondz": 3}}, id="unknown-nested"),
    pytest.param({"name": "a", "image": "b", "livenessProbe": {"periodSeconds": "3"}}, id="string-for-int"),
    pytest.param({"name": "a", "image": "b", "resources": {"limits": {"memory": []}}}, id="list-quantity"),
    pytest.param({"name": "a", "image": "b", "resources": {"limits": {"memory": "1Gi"}}}, id="quantity"),
    pytest.param(
        {"name": "a", "image": "b", "securityContext": {"capabilities": {"drop": ["ALL"]}}}, id="caps"
    ),
    pytest.param({"name": "a", "image": "b", "securityContext": {"runAsUser": "root"}}, id="user-as-string"),
    pytest.param(
        {"name": "a", "image": "b", "env": [{"name": "A", "valueFrom": {"fieldRef": {}}}]}, id="no-path"
    ),
    pytest.param(
        {"name": "a", "image": "b", "ports": [{"containerPort": 80, "hostIp": "x"}]}, id="port-case"
    ),
    pytest.param(
        {"name": "a", "image": "b", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}, id="sleep"
    ),
]


@pytest.mark.parametrize("container", SAMPLES)
@pytest.mark.parametrize("version", ["1.30", NEWEST])
def test_structural_checks_agree_with_kubernetes_validate(container: dict[str, Any], version: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [container]}}
    validate_refuses = jsonschema.exceptions.best_match(_pod_validator(version).iter_errors(pod)) is not None
    found = [
        p
        for p in check_spec({"sidecars": [container]}, kubernetes_version=version)
        if "is not a quantity" not in p[1]
    ]
    assert bool(found) == validate_refuses, found


# --- values the schema cannot check ----------------------------------------------------------------


def _container(**fields: Any) -> dict[str, Any]:
    return {"sidecars": [{"name": "s", "image": "b", **fields}]}


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        pytest.param(
            _container(resources={"limits": {"memory": "lots"}}),
            "spec.sidecars[0].resources.limits.memory",
            "'lots' is not a quantity",
            id="quantity",
        ),
        pytest.param(
            _container(resources={"requests": {"cpu": "1 core"}}),
            "spec.sidecars[0].resources.requests.cpu",
            "'1 core' is not a quantity",
            id="quantity-with-space",
        ),
        pytest.param(
            _container(resources={"limits": {"memroy": "1Gi"}}),
            "spec.sidecars[0].resources.limits.memroy",
            "did you mean 'memory'?",
            id="resource-name",
        ),
        pytest.param(
            _container(resources={"limits": {"cpu": "-1"}}),
            "spec.sidecars[0].resources.limits.cpu",
            "is negative",
            id="negative",
        ),
        pytest.param(
            _container(resources={"limits": {"memory": "64Mi"}, "requests": {"memory": "1Gi"}}),
            "spec.sidecars[0].resources.requests.memory",
            "the request is above the limit ('64Mi')",
            id="request-above-limit",
        ),
        pytest.param(
            {"volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1 Gi"}}]},
            "spec.volumes[0].emptyDir.sizeLimit",
            "is not a quantity",
            id="size-limit",
        ),
        pytest.param(
            _container(readinessProbe={"httpGet": {"port": 0}}),
            "spec.sidecars[0].readinessProbe.httpGet.port",
            "port 0 is not between 1 and 65535",
            id="probe-port",
        ),
        pytest.param(
            _container(readinessProbe={"tcpSocket": {"port": "Web_Port"}}),
            "spec.sidecars[0].readinessProbe.tcpSocket.port",
            "is not a valid port name",
            id="probe-port-name",
        ),
        pytest.param(
            _container(ports=[{"containerPort": 80, "name": "metrics-http-port"}]),
            "spec.sidecars[0].ports[0].name",
            "is not a valid port name",
            id="port-name-too-long",
        ),
        pytest.param(
            _container(ports=[{"containerPort": 80, "name": "8080"}]),
            "spec.sidecars[0].ports[0].name",
            "must contain a letter",
            id="port-name-digits",
        ),
        pytest.param(
            _container(readinessProbe={"grpc": {"port": 70000}}),
            "spec.sidecars[0].readinessProbe.grpc.port",
            "port 70000",
            id="grpc-port",
        ),
        pytest.param(
            _container(readinessProbe={"httpGet": {"port": 80, "scheme": "http"}}),
            "spec.sidecars[0].readinessProbe.httpGet.scheme",
            "'http' is not one of 'HTTP', 'HTTPS'; did you mean 'HTTP'?",
            id="enum-scheme",
        ),
        pytest.param(
            {"volumeMounts": [{"name": "v", "mountPath": "/v", "mountPropagation": "Bidirectionnal"}]},
            "spec.volumeMounts[0].mountPropagation",
            "did you mean 'Bidirectional'?",
            id="enum-propagation",
        ),
        pytest.param(
            {"volumes": [{"name": "v", "hostPath": {"path": "/x", "type": "Dir"}}]},
            "spec.volumes[0].hostPath.type",
            "is not one of",
            id="enum-host-path-type",
        ),
        pytest.param(
            _container(securityContext={"seccompProfile": {"type": "runtime/default"}}),
            "spec.sidecars[0].securityContext.seccompProfile.type",
            "is not one of 'RuntimeDefault', 'Unconfined', 'Localhost'",
            id="enum-seccomp",
        ),
        pytest.param(
            {
                "volumes": [
                    {
                        "name": "v",
                        "ephemeral": {
                            "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce", "RWX"]}}
                        },
                    }
                ]
            },
            "spec.volumes[0].ephemeral.volumeClaimTemplate.spec.accessModes[1]",
            "'RWX' is not one of",
            id="enum-in-a-list",
        ),
        pytest.param(
            _container(livenessProbe={"exec": {"command": ["x"]}, "successThreshold": 2}),
            "spec.sidecars[0].livenessProbe.successThreshold",
            "must be 1 for a livenessProbe",
            id="liveness-success-threshold",
        ),
        pytest.param(
            _container(readinessProbe={"periodSeconds": 5}),
            "spec.sidecars[0].readinessProbe",
            "a probe needs exactly one handler: give one of exec, httpGet, tcpSocket, grpc",
            id="probe-without-handler",
        ),
        pytest.param(
            _container(readinessProbe={"exec": {"command": ["x"]}, "timeoutSeconds": -1}),
            "spec.sidecars[0].readinessProbe.timeoutSeconds",
            "-1 is negative",
            id="negative-timeout",
        ),
        pytest.param(
            _container(lifecycle={"preStop": {"exec": {"command": ["x"]}, "sleep": {"seconds": 1}}}),
            "spec.sidecars[0].lifecycle.preStop",
            "give only one of exec, sleep",
            id="two-lifecycle-actions",
        ),
        pytest.param(
            {"env": [{"name": "A", "valueFrom": {}}]},
            "spec.env[0].valueFrom",
            "valueFrom needs exactly one source",
            id="value-from-empty",
        ),
        pytest.param(
            {"env": [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
            "spec.env[0].valueFrom",
            "give value or valueFrom, not both",
            id="value-and-value-from",
        ),
        pytest.param(
            {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.nmae"}}}]},
            "spec.env[0].valueFrom.fieldRef.fieldPath",
            "did you mean 'metadata.name'?",
            id="env-field-path",
        ),
        pytest.param(
            {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}}]},
            "spec.env[0].valueFrom.fieldRef.fieldPath",
            "is not a supported field path",
            id="env-whole-labels",
        ),
        pytest.param(
            {"env": [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.mem"}}}]},
            "spec.env[0].valueFrom.resourceFieldRef.resource",
            "did you mean 'limits.memory'?",
            id="resource-field",
        ),
        pytest.param(
            {"volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "../etc"}]},
            "spec.volumeMounts[0].subPath",
            "must be a relative path without '..'",
            id="sub-path",
        ),
        pytest.param(
            {"volumes": [{"name": "v", "configMap": {"name": "c", "defaultMode": 1000}}]},
            "spec.volumes[0].configMap.defaultMode",
            "is not a file mode",
            id="file-mode",
        ),
        pytest.param(
            {"ephemeral": {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.node"}}}]}},
            "spec.ephemeral.env[0].valueFrom.fieldRef.fieldPath",
            "is not a supported field path",
            id="ephemeral-env",
        ),
        pytest.param(
            {"imagePullSecrets": [{"nmae": "regcred"}]},
            "spec.imagePullSecrets[0].nmae",
            "unknown field in Kubernetes 1.29; did you mean 'name'?",
            id="pull-secret",
        ),
    ],
)
def test_values_are_checked_as_the_apiserver_does(spec: dict[str, Any], path: str, words: str) -> None:
    problems = dict(check_spec(spec, kubernetes_version="1.29"))
    assert path in problems, problems
    assert words in problems[path]


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(
            _container(resources={"limits": {"memory": "{{ params.memory }}"}}), id="templated-quantity"
        ),
        pytest.param(_container(resources={"limits": {"cpu": 0.5, "memory": 512}}), id="numbers"),
        pytest.param(
            _container(resources={"limits": {"example.com/gpu": 1, "hugepages-2Mi": "1Gi", "cpu": "500m"}}),
            id="extended-and-hugepages",
        ),
        pytest.param(
            _container(resources={"requests": {"cpu": "250m"}, "limits": {"cpu": "1"}}), id="request-below"
        ),
        pytest.param(_container(readinessProbe={"httpGet": {"port": "http"}}), id="port-name"),
        pytest.param(
            _container(readinessProbe={"httpGet": {"port": "{{ params.port }}"}}), id="templated-port"
        ),
        pytest.param(
            {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}]},
            id="subscripted-label",
        ),
        pytest.param(
            {
                "volumes": [
                    {
                        "name": "v",
                        "downwardAPI": {
                            "items": [{"path": "l", "fieldRef": {"fieldPath": "metadata.labels"}}]
                        },
                    }
                ]
            },
            id="downward-volume-labels",
        ),
        pytest.param(
            {"volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "a/b..c"}]}, id="dots-in-name"
        ),
        pytest.param(
            {"env": [{"name": "A", "value": ""}], "imagePullSecrets": [{"name": "regcred"}]}, id="plain"
        ),
    ],
)
def test_valid_values_pass(spec: dict[str, Any]) -> None:
    assert check_spec(spec, kubernetes_version="1.29") == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("512Mi", Decimal(512 * 1024**2), id="binary"),
        pytest.param("250m", Decimal("0.25"), id="milli"),
        pytest.param("1e3", Decimal(1000), id="exponent"),
        pytest.param(".5", Decimal("0.5"), id="leading-dot"),
        pytest.param("1.", Decimal(1), id="trailing-dot"),
        pytest.param("+2k", Decimal(2000), id="sign"),
        pytest.param(3, Decimal(3), id="number"),
        pytest.param("lots", None, id="word"),
        pytest.param("1 Gi", None, id="space"),
        pytest.param("1gi", None, id="lower-case-binary"),
        pytest.param("", None, id="empty"),
        pytest.param(True, None, id="boolean"),
    ],
)
def test_quantity(text: object, value: Decimal | None) -> None:
    assert quantity(text) == value
