"""values.yaml documentation, values.schema.json strictness, policies from values, NOTES.txt."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.policy.model import parse_policy
from tests.chart.chart_support import CHART, NAMESPACE, VALUE_SETS, Helm, find, one, values_of

pytestmark = pytest.mark.chart

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()
# Values that are Kubernetes objects handed through to a manifest: their keys are Kubernetes field
# names, documented once on the block, and the schema lists them (the API server owns their meaning).
PASSTHROUGH_BLOCKS = {"podSecurityContext", "securityContext", "resources", "updateStrategy"}


# ---- values.schema.json


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param("replicaCont=3", "additional properties 'replicaCont' not allowed", id="top-level-typo"),
        pytest.param("tls.mod=helm", "additional properties 'mod' not allowed", id="nested-typo"),
        pytest.param("image.tagg=1.0", "additional properties 'tagg' not allowed", id="image-typo"),
        pytest.param(
            "podSecurityContext.runAsUsr=1",
            "additional properties 'runAsUsr' not allowed",
            id="k8s-field-typo",
        ),
        pytest.param(
            "policies.definitions.ok.sidecar[0].name=a",
            "additional properties 'sidecar' not allowed",
            id="policy-spec-typo",
        ),
        pytest.param(
            "policies.definitions.Bad_Name.required=true", "invalid propertyName 'Bad_Name'", id="policy-name"
        ),
        pytest.param(
            "tls.mode=selfSigned", "value must be one of 'helm', 'certManager', 'secret'", id="tls-mode"
        ),
        pytest.param(
            "webhook.failurePolicy=Sometimes", "value must be one of 'Fail', 'Ignore'", id="failure-policy"
        ),
        pytest.param("webhook.timeoutSeconds=60", "maximum: got 60, want 30", id="timeout-too-long"),
        pytest.param("config.logLevel=verbose", "value must be one of", id="log-level"),
        pytest.param("webhook.name=podgraft", "does not match pattern", id="webhook-name-needs-three-labels"),
        pytest.param("replicaCount=0", "minimum: got 0, want 1", id="no-replicas"),
        pytest.param(
            "policyValidation.failurePolicy=Never",
            "value must be one of 'Fail', 'Ignore'",
            id="policy-validation-failure-policy",
        ),
        pytest.param(
            "policyValidation.timeoutSeconds=31", "maximum: got 31, want 30", id="policy-validation-timeout"
        ),
        pytest.param("policyValidation.name=policies", "does not match pattern", id="policy-validation-name"),
        pytest.param(
            "policyValidation.enable=true",
            "additional properties 'enable' not allowed",
            id="policy-validation-typo",
        ),
    ],
)
def test_schema_rejects_bad_values(helm: Helm, setting: str, message: str) -> None:
    error = helm.render_error(sets=[setting])
    assert "don't meet the specifications of the schema" in error
    assert message in error


def _schema_objects(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _schema_objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schema_objects(value, f"{path}[{index}]")


def test_schema_closes_every_object_it_describes() -> None:
    """Each object whose fields the schema lists forbids others; the open ones are free-form by design
    (Kubernetes objects the API server validates, maps of labels, policy parameters)."""
    described = [(path, node) for path, node in _schema_objects(SCHEMA) if "properties" in node]
    assert len(described) > 30
    for path, node in described:
        assert node.get("additionalProperties") is False, path
    open_objects = {
        path.removeprefix("$.").removeprefix("properties.")
        for path, node in _schema_objects(SCHEMA)
        if "properties" not in node and "additionalProperties" not in node and "$ref" not in node
    }
    assert open_objects == {
        "global",
        "extraEnv.items",
        "affinity",
        "topologySpreadConstraints.items",
        "tolerations.items",
        "networkPolicy.properties.ingressFrom.items",
        "serviceMonitor.properties.tlsConfig",
        "$defs.policySpec.properties.parameters",
        "$defs.policySpec.properties.match.properties.labels",
        "$defs.policySpec.properties.initContainers.items",
        "$defs.policySpec.properties.sidecars.items",
        "$defs.policySpec.properties.containers.items",
        "$defs.policySpec.properties.volumes.items",
        "$defs.policySpec.properties.volumeMounts.items",
        "$defs.policySpec.properties.env.items",
        "$defs.policySpec.properties.ephemeral.properties.volumeMounts.items",
        "$defs.policySpec.properties.ephemeral.properties.env.items",
    }


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def _value_paths(
    values: Any, schema: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, dict[str, Any] | None]]:
    schema = _resolve(schema)
    if not isinstance(values, dict) or "properties" not in schema:
        return
    for key, value in values.items():
        child = schema["properties"].get(key)
        yield f"{path}{key}", child
        if child is not None:
            yield from _value_paths(value, child, f"{path}{key}.")


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_value_is_described_by_the_schema(value_set: str) -> None:
    missing = [path for path, schema in _value_paths(values_of(value_set), SCHEMA) if schema is None]
    assert not missing


def _documented_keys() -> Iterator[tuple[str, bool, str]]:
    """(dotted key, is a leaf, the line above it) for each key line of values.yaml."""
    lines = VALUES_TEXT.splitlines()
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(k for _, k in stack), key])
        stack.append((indent, key))
        following = next((n for n in lines[number + 1 :] if n.strip() and not n.strip().startswith("#")), "")
        leaf = bool(rest) or following.strip().startswith("- ")
        above = lines[number - 1].strip() if number else ""
        yield path, leaf, above


def test_every_value_is_documented_key_by_key() -> None:
    keys = list(_documented_keys())
    assert sum(leaf for _, leaf, _ in keys) > 80
    # Every key has its own "# -- " line, except the fields inside Kubernetes blocks (documented once).
    undocumented = [
        path
        for path, _, above in keys
        if (path in PASSTHROUGH_BLOCKS or path.split(".")[0] not in PASSTHROUGH_BLOCKS)
        and not above.startswith("# -- ")
    ]
    assert not undocumented


def test_values_and_schema_defaults_agree_with_the_design() -> None:
    values = values_of("defaults")
    assert values["replicaCount"] == 2
    assert values["tls"]["mode"] == "helm"
    assert values["config"]["namespaceLabel"] == "podgraft.io/injection"
    assert values["config"]["injectAnnotation"] == "podgraft.io/inject"
    assert values["config"]["policyLabel"] == "podgraft.io/policy"
    assert values["webhook"]["name"] == "podgraft.podgraft.io"
    assert values["podDisruptionBudget"] == {"enabled": True, "minAvailable": 1}


# ---- policies from values


def _policy_configmaps(
    objects: list[dict[str, Any]], label: str = "podgraft.io/policy"
) -> dict[str, dict[str, Any]]:
    """policy name -> parsed document, from the ConfigMaps that carry the policy label."""
    documents = {}
    for config_map in find(objects, "ConfigMap"):
        assert config_map["metadata"]["labels"][label] == "true"
        assert config_map["metadata"]["namespace"] == NAMESPACE
        ((key, text),) = config_map["data"].items()
        document = yaml.safe_load(text)
        assert key == f"{document['metadata']['name']}.yaml"
        documents[document["metadata"]["name"]] = document
    return documents


def test_policies_in_values_become_labelled_configmaps(helm: Helm) -> None:
    objects = helm.render("helm")
    definitions = values_of("helm")["policies"]["definitions"]
    documents = _policy_configmaps(objects)
    assert set(documents) == set(definitions) == {"log-shipper", "wait-for-db"}
    for name, document in documents.items():
        assert document == {
            "apiVersion": "podgraft.io/v1alpha1",
            "kind": "InjectionPolicy",
            "metadata": {"name": name},
            "spec": definitions[name],
        }
        assert parse_policy(document).metadata.name == name
    assert one(objects, "ConfigMap", "pg-podgraft-policy-log-shipper")
    # Policy templates are the server's (Jinja in a sandbox), never helm's: they arrive verbatim.
    command = documents["wait-for-db"]["spec"]["initContainers"][0]["command"]
    assert command[-1] == "until nc -z {{ params.host }} {{ params.port }}; do sleep 1; done"


def test_policy_label_is_configurable_and_null_removes_a_policy(helm: Helm) -> None:
    objects = helm.render(
        "helm", sets=["config.policyLabel=example.com/policy", "policies.definitions.wait-for-db=null"]
    )
    assert set(_policy_configmaps(objects, label="example.com/policy")) == {"log-shipper"}


def _commented_example() -> str:
    """The example policies shown commented out under policies.definitions in values.yaml."""
    block = VALUES_TEXT.split("  definitions: {}\n", 1)[1].split("\nwebhook:", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("  #   ")]
    return "\n".join(line.removeprefix("  #   ") for line in lines)


def test_commented_values_example_is_a_valid_policy_set(helm: Helm, tmp_path: Path) -> None:
    example = yaml.safe_load(_commented_example())
    assert set(example) == {"log-shipper", "wait-for-db"}
    values = tmp_path / "example-values.yaml"
    values.write_text(yaml.safe_dump({"policies": {"definitions": example}}))
    documents = _policy_configmaps(helm.render(values_files=[values]))
    assert set(documents) == set(example)
    for document in documents.values():
        parse_policy(document)


# ---- NOTES.txt


def _render_notes(helm: Helm, tmp_path: Path, sets: list[str]) -> str:
    """helm template does not print NOTES.txt: render it from a copy of the chart, through tpl."""
    chart = tmp_path / "podgraft"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
    )
    args = ["template", "pg", str(chart), "--namespace", NAMESPACE, "--show-only", "templates/zz-notes.yaml"]
    for item in sets:
        args += ["--set", item]
    return str(yaml.safe_load(helm.run(*args).stdout)["data"]["notes"])


def test_notes_tell_how_to_opt_a_namespace_in(helm: Helm, tmp_path: Path) -> None:
    notes = _render_notes(helm, tmp_path, [])
    assert "kubectl label namespace <your-namespace> podgraft.io/injection=enabled" in notes
    assert 'podgraft.io/inject: "log-shipper,wait-for-db"' in notes
    assert "kube-system, kube-public, kube-node-lease, podgraft" in notes
    assert "kubectl get configmaps -A -l podgraft.io/policy=true" in notes
    assert "WARNING" not in notes


def test_notes_warn_about_a_single_replica(helm: Helm, tmp_path: Path) -> None:
    notes = _render_notes(helm, tmp_path, ["replicaCount=1", "tls.mode=certManager"])
    assert "WARNING: a single replica" in notes
    assert "cert-manager issues and renews" in notes
