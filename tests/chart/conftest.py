"""Fixtures of the chart tier: the pinned helm binary, built once per machine and cached."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.chart.chart_support import HELM_BUILD, Helm


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """hack/helm/build.sh: HELM_BIN if set, else the cached build, else a build from the Go module proxy."""
    result = subprocess.run(
        ["bash", str(HELM_BUILD)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        env=os.environ.copy(),
    )
    if result.returncode != 0:
        pytest.fail(f"building helm with {HELM_BUILD} failed:\n{result.stderr}", pytrace=False)
    binary = Path(result.stdout.strip().splitlines()[-1])
    assert binary.is_file(), binary
    assert os.access(binary, os.X_OK), binary
    return binary


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(binary=helm_binary, home=tmp_path_factory.mktemp("helm-home"))
