"""Golden cases: `tests/golden/<case>/input.yaml` -> `expected.yaml`.

Each case runs through the webhook (the real FastAPI app, in process) and, for Pod CREATE, through
the offline `podgraft inject` path; both must give the expected pod. The injected pod must validate
strictly against the Kubernetes schema, and a second pass over it must produce no patch.
Regenerate with `pytest tests/golden --update-golden`; an expected file that no longer matches,
or one without an input, fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from app.admission.engine import engine_config
from app.cli import inject_documents
from app.server import create_app
from app.settings import Settings
from app.sources.directory import read_directory
from app.sources.store import PolicyStore
from tests.conftest import apply_patch, assert_valid_pod, decode_patch, make_review

HERE = Path(__file__).parent
POLICIES = HERE / "policies"
CASES = sorted(p.parent.name for p in HERE.glob("*/input.yaml"))


class _Namespaces:
    def __init__(self, labels: Mapping[str, str] | None) -> None:
        self._labels = labels

    def labels(self, name: str) -> Mapping[str, str] | None:
        return self._labels


def _settings(case: Mapping[str, Any]) -> Settings:
    options = case.get("settings") or {}
    return Settings(
        kubernetes_version=options.get("kubernetesVersion", "1.30"),
        sidecar_mode=options.get("sidecarMode", "auto"),
    )


def _store() -> PolicyStore:
    store = PolicyStore()
    assert not store.replace_all(read_directory(POLICIES))
    return store


def _webhook(
    case: Mapping[str, Any], pod: Mapping[str, Any], old: Mapping[str, Any] | None
) -> dict[str, Any]:
    request = case.get("request") or {}
    app = create_app(_settings(case), store=_store(), namespaces=_Namespaces(case.get("namespaceLabels")))
    review = make_review(
        pod,
        namespace=request.get("namespace", "shop"),
        operation=request.get("operation", "CREATE"),
        sub_resource=request.get("subResource", ""),
        old=old,
    )
    with TestClient(app) as client:
        reply = client.post("/mutate", json=review)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    assert body["apiVersion"] == review["apiVersion"]
    assert body["response"]["uid"] == review["request"]["uid"]
    return body["response"]


def _outcome(case: Mapping[str, Any]) -> dict[str, Any]:
    """Run the case through the webhook: the expected.yaml content."""
    pod = case["pod"]
    response = _webhook(case, pod, case.get("oldPod"))
    ops = decode_patch(response)
    assert ("patchType" in response) == bool(ops), "patchType must be present exactly when there is a patch"
    outcome: dict[str, Any] = {"allowed": response["allowed"], "warnings": response.get("warnings", [])}
    if not response["allowed"]:
        outcome["denial"] = response["status"]["message"]
    if ops:
        outcome["pod"] = apply_patch(pod, ops)
    return outcome


def _read(case: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((HERE / case / "input.yaml").read_text())
    return data


def test_enough_golden_cases() -> None:
    assert len(CASES) >= 25


def test_no_stale_golden_files() -> None:
    orphans = [p.parent.name for p in HERE.glob("*/expected.yaml") if not (p.parent / "input.yaml").exists()]
    assert not orphans, f"expected.yaml without input.yaml (stale): {orphans}"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, request: pytest.FixtureRequest) -> None:
    data = _read(case)
    outcome = _outcome(data)
    expected_file = HERE / case / "expected.yaml"
    if request.config.getoption("--update-golden"):
        expected_file.write_text(yaml.safe_dump(outcome, sort_keys=False, allow_unicode=True, width=1000))
    assert expected_file.exists(), f"{expected_file} missing: run pytest tests/golden --update-golden"
    expected = yaml.safe_load(expected_file.read_text())
    assert outcome == expected, f"golden case {case} changed; review and rerun with --update-golden"

    if "pod" not in outcome:
        return
    injected = outcome["pod"]
    assert_valid_pod(injected)
    # Idempotency: the webhook on its own output gives no patch (reinvocationPolicy: IfNeeded).
    again = _webhook(data, injected, data.get("oldPod") and injected)
    assert decode_patch(again) == [], "second pass must not patch"
    assert "patchType" not in again


@pytest.mark.parametrize("case", [c for c in CASES if not (_read(c).get("request") or {}).get("subResource")])
def test_golden_offline_inject_matches_webhook(case: str) -> None:
    data = _read(case)
    expected = yaml.safe_load((HERE / case / "expected.yaml").read_text())
    store = _store()
    namespace = (data.get("request") or {}).get("namespace", "shop")
    output, denials = inject_documents(
        [data["pod"]],
        store=store,
        config=engine_config(_settings(data)),
        namespace=namespace,
        namespace_labels=data.get("namespaceLabels"),
        explain=None,
    )
    if not expected["allowed"]:
        assert denials
        assert expected["denial"] in denials[0]
        assert output == [data["pod"]]
    else:
        want = expected.get("pod", data["pod"])
        assert output[0] == want
