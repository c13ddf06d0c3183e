"""The cached strict Pod validator of tests/conftest.py agrees with kubernetes-validate."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.conftest import SCHEMA_VERSIONS, assert_valid_pod


def test_cached_validator_agrees_with_kubernetes_validate() -> None:
    good = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a"},
        "spec": {"containers": [{"name": "a", "image": "b"}]},
    }
    bad = {**good, "spec": {"containers": [{"name": "a", "image": "b", "imag": "typo"}]}}
    for version in SCHEMA_VERSIONS:
        assert_valid_pod(good)
        kubernetes_validate.validate(good, version, strict=True)
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, version, strict=True)
    with pytest.raises(AssertionError, match="imag"):
        assert_valid_pod(bad)
