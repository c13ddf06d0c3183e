"""Helpers for the chart tests: the pinned helm binary, rendering, and small Kubernetes semantics."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "podgraft"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
HELM_BUILD = REPO / "hack" / "helm" / "build.sh"

RELEASE = "pg"
NAMESPACE = "podgraft"
FULLNAME = "pg-podgraft"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")

# Kinds no kubernetes-validate schema covers (CRDs); their key fields are asserted by hand instead.
CRD_KINDS = frozenset(
    {
        ("cert-manager.io/v1", "Issuer"),
        ("cert-manager.io/v1", "Certificate"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    }
)

# One entry per value set the chart is rendered with: the defaults, then every ci/*-values.yaml.
VALUE_SETS: dict[str, Path | None] = {"defaults": None} | {
    path.stem.removesuffix("-values"): path for path in CI_VALUES
}
VALUE_SET_PARAMS = [pytest.param(name, id=name) for name in VALUE_SETS]


def values_of(name: str) -> dict[str, Any]:
    """The chart's default values merged with one value set (deep merge, as helm does for maps)."""
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    path = VALUE_SETS[name]
    if path is not None:
        _deep_merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


class HelmError(AssertionError):
    """helm exited non-zero; carries its stderr."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
        self.stderr = result.stderr


@dataclass
class Helm:
    """The pinned helm binary, with a render cache (helm template of the same input is pure,
    except for the certificates that tls.mode=helm generates, which tests compare only within one render)."""

    binary: Path
    home: Path
    _cache: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)

    def run(
        self, *args: str, check: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        # Keep helm's config, cache and data out of the user's home, and away from any real cluster.
        base = {
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": str(self.home / "no-kubeconfig"),
            "PATH": "/usr/bin:/bin",
        }
        result = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=base | dict(env or {}),
            check=False,
        )
        if check and result.returncode != 0:
            raise HelmError(args, result)
        return result

    def template_args(
        self, value_set: str | None = None, *, sets: Iterable[str] = (), values_files: Iterable[Path] = ()
    ) -> list[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        path = VALUE_SETS[value_set] if value_set else None
        for values in [*([path] if path else []), *values_files]:
            args += ["--values", str(values)]
        for item in sets:
            args += ["--set", item]
        return args

    def render(
        self,
        value_set: str | None = None,
        *,
        sets: Iterable[str] = (),
        values_files: Iterable[Path] = (),
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        cached: bool = True,
    ) -> list[dict[str, Any]]:
        """`helm template` -> the rendered objects (comments and empty documents dropped)."""
        args = [*self.template_args(value_set, sets=sets, values_files=values_files), *extra_args]
        key = tuple(args)
        if not cached or env:
            return parse_manifests(self.run(*args, env=env).stdout)
        if key not in self._cache:
            self._cache[key] = parse_manifests(self.run(*args).stdout)
        return self._cache[key]

    def render_error(self, *, sets: Iterable[str] = (), values_files: Iterable[Path] = ()) -> str:
        """`helm template` that must fail -> its error output."""
        result = self.run(*self.template_args(sets=sets, values_files=values_files), check=False)
        assert result.returncode != 0, f"helm template unexpectedly succeeded with {list(sets)}"
        return result.stderr


def parse_manifests(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def is_hook(obj: Mapping[str, Any]) -> bool:
    """A Helm hook (templates/uninstall-hook.yaml): run at a release event, not part of the release."""
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def find(
    objects: Iterable[dict[str, Any]], kind: str, name: str | None = None, *, hooks: bool = False
) -> list[dict[str, Any]]:
    """The release's objects of `kind` (and `name`); the hooks' instead when `hooks`."""
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name) and is_hook(obj) == hooks
    ]


def one(objects: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every matchExpression must hold."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    """Container env as name -> value (or the valueFrom mapping)."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}
