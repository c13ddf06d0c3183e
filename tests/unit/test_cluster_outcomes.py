"""What one admitted or denied pod tells its workload: the reason of every warning the engine gives
(taken from the golden cases, which pin the engine's texts), `Injected` with versions and containers,
`InjectionDenied`, and what each level keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cluster.outcomes import (
    DENIED,
    INJECTED,
    SKIPPED,
    STALE,
    WITH_WARNINGS,
    Note,
    notes,
    warning_reason,
    worth_telling,
)
from app.engine.config import EngineConfig
from app.engine.inject import InjectionResult, inject_pod
from tests.unit.builders import compiled, policy_set

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
STATUS = "podgraft.io/status"

# Every golden case whose webhook answer carries warnings, and the reason of each warning.
EXPECTED_REASONS = {
    "env-mount-volume-conflicts": [SKIPPED, SKIPPED, SKIPPED],
    "existing-container-named-like-sidecar": [SKIPPED],
    "forged-status-required-injected": [WITH_WARNINGS],
    "host-network-port-clash": [SKIPPED],
    "job-classic-sidecar-old-cluster": [SKIPPED],
    "job-explicit-classic-warned": [WITH_WARNINGS],
    "namespace-scope-refused": [SKIPPED],
    "namespace-scope-required-denied": [SKIPPED],
    "older-version-updated": [STALE],
    "optional-name-clash-nothing-applied": [SKIPPED],
    "optional-render-failure-warned": [SKIPPED],
    "pod-security-restricted-warning": [WITH_WARNINGS],
    "pod-volume-same-name-refused": [SKIPPED],
    "pod-volumes-declared-missing": [SKIPPED],
    "port-clash-warning": [SKIPPED],
    "required-render-failure-denied": [SKIPPED],
    "unknown-policy": [SKIPPED, SKIPPED],
}


def _golden_warnings() -> dict[str, list[str]]:
    found = {}
    for path in sorted(GOLDEN.glob("*/expected.yaml")):
        warnings = (yaml.safe_load(path.read_text()) or {}).get("warnings") or []
        if warnings:
            found[path.parent.name] = list(warnings)
    return found


def test_every_golden_warning_has_a_decided_reason() -> None:
    """A new warning in the engine's golden cases must be given its Event reason here."""
    assert sorted(_golden_warnings()) == sorted(EXPECTED_REASONS)


@pytest.mark.parametrize("case", sorted(EXPECTED_REASONS))
def test_the_reason_of_each_engine_warning(case: str) -> None:
    assert [warning_reason(w) for w in _golden_warnings()[case]] == EXPECTED_REASONS[case]


# --- notes of one pod, through the real engine ---------------------------------------------------

SHIPPER = compiled(
    "log-shipper",
    volumes=[{"name": "app-logs", "emptyDir": {}}],
    sidecars=[{"name": "log-shipper", "image": "fluent/fluent-bit:3.2"}],
    sidecarMode="native",
)
WAIT = compiled("wait-for-db", initContainers=[{"name": "wait-for-db", "image": "busybox:1.36"}])
REQUIRED = compiled("proxy", required=True, containers=[{"name": "proxy", "image": "envoy:1"}])
CONFIG = EngineConfig()


def _replica(inject: str, **spec: Any) -> dict[str, Any]:
    """A pod as the ReplicaSet controller submits it: no name, a generateName, its controller."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c6b5-",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {"podgraft.io/inject": inject},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d9f8c6b5",
                    "uid": "2f3c1c9e-8d6b-4f0e-9a51-0c3b7e9d4a11",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec or {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }


def _inject(pod: dict[str, Any], *policies: Any) -> InjectionResult:
    return inject_pod(
        pod, namespace="shop", namespace_labels=None, policies=policy_set(*policies), config=CONFIG
    )


def test_injected_names_policies_versions_and_the_containers_added_and_only_at_level_all() -> None:
    pod = _replica("log-shipper,wait-for-db")
    result = _inject(pod, SHIPPER, WAIT)
    assert result.injected == ("log-shipper", "wait-for-db")
    assert notes(result, level="warnings") == []
    assert not worth_telling(result, "warnings")
    assert worth_telling(result, "all")
    [note] = notes(result, level="all")
    assert note == Note(
        "Normal",
        INJECTED,
        f"injected policies log-shipper (version {SHIPPER.content_hash}), wait-for-db (version "
        f"{WAIT.content_hash}); containers: log-shipper, wait-for-db",
    )
    assert note.action == "Inject"


def test_a_skipped_policy_is_a_warning_in_the_words_of_the_admission_warning() -> None:
    pod = _replica(
        "log-shipper,wait-for-db",
        containers=[{"name": "app", "image": "nginx:1.27"}],
        volumes=[{"name": "app-logs", "configMap": {"name": "logs"}}],
    )
    result = _inject(pod, SHIPPER, WAIT)
    [warning] = result.warnings
    told = notes(result, level="all")
    assert told == [
        Note(
            "Normal",
            INJECTED,
            f"injected policy wait-for-db (version {WAIT.content_hash}); containers: wait-for-db",
        ),
        Note("Warning", SKIPPED, warning),
    ]
    assert notes(result, level="warnings") == told[1:]
    assert told[1].action == "Skip"


def test_a_denied_pod_tells_the_denial_and_its_warnings_never_an_injection() -> None:
    pod = _replica("proxy,log-shipper", containers=[{"name": "proxy", "image": "mine:1"}])
    result = _inject(pod, REQUIRED, SHIPPER)
    assert result.denial is not None
    told = notes(result, level="all")
    assert told[-1] == Note("Warning", DENIED, result.denial)
    assert told[-1].action == "Deny"
    assert all(note.reason != INJECTED for note in told)
    assert worth_telling(result, "warnings")


def test_level_off_tells_nothing() -> None:
    pod = _replica("proxy", containers=[{"name": "proxy", "image": "mine:1"}])
    result = _inject(pod, REQUIRED)
    assert not worth_telling(result, "off")
    assert notes(result, level="off") == []
