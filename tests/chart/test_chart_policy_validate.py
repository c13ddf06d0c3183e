"""`podgraft policy validate` on what the pinned helm renders: the chart's policy ConfigMaps
(`policies.definitions`) are read from the whole stream, each policy named by ConfigMap and key, the
chart's other objects noted, a broken definition refused as the webhook would refuse it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from app.cli import main
from tests.chart.chart_support import FULLNAME, NAMESPACE, Helm
from tests.conftest import EXAMPLE_POLICIES

pytestmark = pytest.mark.chart


@pytest.fixture(autouse=True)
def _no_podgraft_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PODGRAFT_")]:
        monkeypatch.delenv(name)


def _definitions(tmp_path: Path, **definitions: object) -> Path:
    values = tmp_path / "policies.yaml"
    values.write_text(yaml.safe_dump({"policies": {"definitions": definitions}}))
    return values


def test_a_helm_rendered_stream_is_read_as_cluster_mode_loads_it(
    helm: Helm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wait_for_db = yaml.safe_load((EXAMPLE_POLICIES / "wait-for-db.yaml").read_text())["spec"]
    broken = {
        "volumes": [{"name": "data", "hostPth": {"path": "/var/data"}}],
        "sidecars": [
            {"name": "helper", "image": "busybox:1.36", "resources": {"limits": {"memory": "lots"}}}
        ],
    }
    values = _definitions(tmp_path, **{"wait-for-db": wait_for_db, "broken": broken})
    stream = tmp_path / "rendered.yaml"
    stream.write_text(helm.run(*helm.template_args(values_files=[values])).stdout)

    assert main(["policy", "validate", str(stream)]) == 1
    out, err = capsys.readouterr()
    configmap = f"configmap {NAMESPACE}/{FULLNAME}-policy"
    where = f"{stream}: {configmap}-broken key broken.yaml: document 1: policy 'broken': "
    lines = err.splitlines()
    assert lines[:2] == [
        where + "spec.sidecars[0].resources.limits.memory: 'lots' is not a quantity "
        "(like 512Mi, 1Gi, 250m, 0.5, 1e3)",
        where + "spec.volumes[0].hostPth: unknown field in Kubernetes 1.29; did you mean 'hostPath'?",
    ]
    assert lines[2].startswith(f"{stream}: note: not policies, skipped: ")
    assert "1 Deployment" in lines[2]
    assert "1 MutatingWebhookConfiguration" in lines[2]
    assert len(lines) == 3
    rows = out.splitlines()
    assert rows[0].startswith(
        f"ok  wait-for-db  ({stream}: {configmap}-wait-for-db key wait-for-db.yaml, hash "
    )
    assert (
        rows[1]
        == "1 file, 1 policy from 2 ConfigMaps: 2 errors, 0 warnings (checked against Kubernetes 1.29)"
    )
