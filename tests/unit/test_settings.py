"""Settings: environment parsing, validation at start-up, derived values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import ALWAYS_EXCLUDED_NAMESPACES, Settings, version_at_least

pytestmark = pytest.mark.usefixtures("clean_env")  # tests see only the environment they set


def test_defaults() -> None:
    settings = Settings()
    assert settings.port == 8443
    assert settings.host == "127.0.0.1"
    assert settings.pod_namespace == "podgraft"
    assert settings.excluded_namespaces == list(ALWAYS_EXCLUDED_NAMESPACES)
    assert settings.sidecar_mode == "auto"
    assert settings.max_body_bytes == 3 * 1024 * 1024
    assert settings.policy_dir == Path("examples/policies")
    assert settings.watched_policy_namespaces() == ["podgraft"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("team-a", ["team-a"], id="one"),
        pytest.param("team-a,team-b", ["team-a", "team-b"], id="two"),
        pytest.param(" team-a , team-b ,, ", ["team-a", "team-b"], id="spaces-and-empties"),
        pytest.param("", [], id="empty"),
    ],
)
def test_excluded_namespaces_csv(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]) -> None:
    monkeypatch.setenv("PODGRAFT_EXCLUDED_NAMESPACES", value)
    assert Settings().excluded_namespaces == expected


def test_policy_namespaces_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODGRAFT_POLICY_NAMESPACES", "podgraft, platform")
    assert Settings().watched_policy_namespaces() == ["podgraft", "platform"]


def test_pod_namespace_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "podgraft-system")
    settings = Settings()
    assert settings.pod_namespace == "podgraft-system"
    assert settings.watched_policy_namespaces() == ["podgraft-system"]


def test_never_injected_namespaces_include_system_and_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "podgraft-system")
    monkeypatch.setenv("PODGRAFT_EXCLUDED_NAMESPACES", "legacy")
    never = Settings().never_injected_namespaces()
    assert never == frozenset(["legacy", "kube-system", "kube-public", "kube-node-lease", "podgraft-system"])


def test_system_namespaces_cannot_be_configured_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODGRAFT_EXCLUDED_NAMESPACES", "")
    assert set(ALWAYS_EXCLUDED_NAMESPACES) <= Settings().never_injected_namespaces()


def test_env_values_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODGRAFT_PORT", "9443")
    monkeypatch.setenv("PODGRAFT_SIDECAR_MODE", "classic")
    monkeypatch.setenv("PODGRAFT_KUBERNETES_VERSION", "v1.30.2")
    monkeypatch.setenv("PODGRAFT_POLICY_DIR", "/etc/podgraft/policies")
    settings = Settings()
    assert settings.port == 9443
    assert settings.sidecar_mode == "classic"
    assert settings.native_sidecars_supported()
    assert settings.policy_dir == Path("/etc/podgraft/policies")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("kubernetes_version", "latest", id="version-word"),
        pytest.param("kubernetes_version", "1", id="version-major-only"),
        pytest.param("kubernetes_version", "", id="version-empty"),
        pytest.param("port", 0, id="port-zero"),
        pytest.param("port", 70000, id="port-too-big"),
        pytest.param("sidecar_mode", "sometimes", id="sidecar-mode"),
        pytest.param("policy_source", "etcd", id="policy-source"),
        pytest.param("max_body_bytes", 10, id="tiny-body-limit"),
        pytest.param("log_level", "trace", id="log-level"),
        pytest.param("unknown_knob", 1, id="unknown-field"),
    ],
)
def test_bad_values_are_rejected_at_start_up(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**{field: value})
    assert field in str(caught.value)


def test_bad_version_from_env_names_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODGRAFT_KUBERNETES_VERSION", "one.thirty")
    with pytest.raises(ValidationError, match=r"expected a version like 1\.30.*one\.thirty"):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("version", "native"),
    [
        pytest.param("1.28", False, id="1.28"),
        pytest.param("1.29", True, id="1.29"),
        pytest.param("v1.30.2", True, id="v-prefix-patch"),
        pytest.param("1.30+", True, id="gke-plus"),
        pytest.param("1.100", True, id="numeric-not-string-compare"),
        pytest.param("1.9", False, id="single-digit-minor"),
        pytest.param("2.0", True, id="major-2"),
    ],
)
def test_native_sidecars_follow_the_version(version: str, native: bool) -> None:
    assert Settings(kubernetes_version=version).native_sidecars_supported() is native
    assert version_at_least(version, (1, 29)) is native


def test_version_at_least_on_garbage() -> None:
    assert version_at_least("garbage", (1, 0)) is False
