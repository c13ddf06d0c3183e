"""Podgraft installed as users install it: the pinned helm (hack/helm/build.sh) runs `helm install`,
`upgrade` and `uninstall` of charts/podgraft against a cluster, with the image from the Dockerfile
(imported into the node, `pullPolicy: Never`)."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .processes import REPO

CHART = REPO / "charts" / "podgraft"
HELM_BUILD = REPO / "hack" / "helm" / "build.sh"


def helm_binary() -> Path:
    """hack/helm/build.sh: HELM_BIN if set, else the cached build, else a build from the Go module proxy."""
    result = subprocess.run(["bash", str(HELM_BUILD)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{HELM_BUILD} failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def image_values(image: str) -> dict[str, Any]:
    """The chart's `image` values for a local image (`repo:tag`, imported, never pulled)."""
    repository, _, tag = image.rpartition(":")
    return {"image": {"repository": repository, "tag": tag, "pullPolicy": "Never"}}


class HelmFailed(RuntimeError):
    """helm exited non-zero; carries its output."""


@dataclass
class Release:
    """One release of charts/podgraft, managed with the pinned helm as the cluster's admin."""

    helm: Path
    kubeconfig: Path
    home: Path  # helm's config, cache and data, and the values files written for it
    name: str = "podgraft"
    namespace: str = "podgraft"
    _files: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def fullname(self) -> str:
        """The chart's fullname: the release name when it contains "podgraft"."""
        return self.name if "podgraft" in self.name else f"{self.name}-podgraft"

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": "/usr/bin:/bin",
        }

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.helm), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise HelmFailed(
                f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result

    def _values_file(self, values: Mapping[str, Any]) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / f"values-{next(self._files)}.yaml"
        path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
        return path

    def _chart_args(self, values: Mapping[str, Any], extra: Sequence[str]) -> list[str]:
        return [
            self.name,
            str(CHART),
            f"--namespace={self.namespace}",
            f"--values={self._values_file(values)}",
            "--wait",
            "--timeout=180s",
            *extra,
        ]

    def install(self, values: Mapping[str, Any], *extra: str) -> str:
        """`helm install --create-namespace --wait`; returns helm's output (the NOTES)."""
        return self.run("install", *self._chart_args(values, ["--create-namespace", *extra])).stdout

    def upgrade(self, values: Mapping[str, Any], *extra: str) -> str:
        """`helm upgrade --wait` with these values on top of the release's (`--reuse-values`)."""
        return self.run("upgrade", *self._chart_args(values, ["--reuse-values", *extra])).stdout

    def uninstall(self) -> str:
        return self.run("uninstall", self.name, f"--namespace={self.namespace}", "--wait").stdout

    def values(self) -> dict[str, Any]:
        """The user-supplied values in force (`helm get values`)."""
        out = self.run("get", "values", self.name, f"--namespace={self.namespace}", "--output=yaml").stdout
        return dict(yaml.safe_load(out) or {})
