"""Shared test helpers: building AdmissionReviews, loading policies, strict schema validation."""

from __future__ import annotations

import base64
import functools
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import kubernetes_validate.utils as kv_utils
import orjson
import pytest
from kubernetes_validate.utils import latest_version
from referencing import Registry

from app.engine.policyset import PolicySet
from app.sources.store import PolicyStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICIES = ROOT / "examples" / "policies"
# Kubernetes versions every produced Pod must validate against (strict: unknown fields fail).
SCHEMA_VERSIONS = ("1.30", kv_utils.major_minor(latest_version()))


def pytest_configure(config: pytest.Config) -> None:
    """The compiled engine must be the current sources' (or the tests would run older code)."""
    import app

    stale = app.stale_compiled_modules()
    if stale and os.environ.get("PODGRAFT_ENGINE") != "interpreted":
        raise pytest.UsageError(
            f"compiled modules older than their sources: {', '.join(stale)}; rebuild them with "
            "`make venv` (or run the sources: PODGRAFT_ENGINE=interpreted)"
        )


def pytest_report_header(config: pytest.Config) -> str:
    import app.engine.mutate

    compiled = not str(app.engine.mutate.__file__).endswith(".py")
    return f"podgraft engine: {'compiled' if compiled else 'interpreted'}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/*/expected.yaml")


def make_review(
    obj: Mapping[str, Any] | None,
    *,
    namespace: str = "default",
    operation: str = "CREATE",
    sub_resource: str = "",
    old: Mapping[str, Any] | None = None,
    api_version: str = "admission.k8s.io/v1",
    resource: str = "pods",
    kind: str = "Pod",
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "operation": operation,
        "namespace": namespace,
        "userInfo": {"username": "tester"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    if obj is not None:
        request["object"] = obj
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = orjson.loads(base64.b64decode(response["patch"]))
    return ops


def apply_patch(pod: Mapping[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(pod, ops)
    return result


def store_from_texts(texts: Mapping[str, str]) -> PolicyStore:
    store = PolicyStore()
    errors = store.replace_all(dict(texts))
    assert not errors, errors
    return store


def policies_from_dir(directory: Path) -> PolicySet:
    from app.sources.directory import read_directory

    store = PolicyStore()
    errors = store.replace_all(read_directory(directory))
    assert not errors, errors
    return store.current()


@functools.cache
def _pod_validator(version: str) -> jsonschema.protocols.Validator:
    """kubernetes-validate's strict Pod schema for `version`, built once (its `validate()` rebuilds
    the schema registry on every call, which dominated the property tests)."""
    schema_dir = f"v{version}.0-local-strict"
    schema = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/pod-v1.json", version)
    definitions = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
    registry = kv_utils.Resource.from_contents(definitions) @ (
        kv_utils.Resource.from_contents(schema) @ Registry()
    )
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def assert_valid_pod(pod: Mapping[str, Any]) -> None:
    """Strict validation against the Kubernetes schema of every version in SCHEMA_VERSIONS."""
    for version in SCHEMA_VERSIONS:
        error = jsonschema.exceptions.best_match(_pod_validator(version).iter_errors(dict(pod)))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            raise AssertionError(
                f"pod does not validate against Kubernetes {version}: {where}: {error.message}"
            )
