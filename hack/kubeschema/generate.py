"""Generate app/sources/schemas/v<minor>.json: the Kubernetes schema of what a policy injects.

For every Kubernetes minor the chart supports (1.29 to the newest that the pinned kubernetes-validate
ships, the range tests/chart/test_chart_render.py renders the chart for), it takes the package's
strict JSON schema (`additionalProperties: false`, from the Kubernetes OpenAPI document) and keeps
only the definitions reachable from the objects a policy injects (Container, Volume, EnvVar,
VolumeMount, LocalObjectReference), without their descriptions. Two definitions the schema types as
"string or number" are marked (`x-podgraft`), so that app/sources/schema.py checks their values as the
apiserver does: quantities and int-or-string ports.

    .venv/bin/python hack/kubeschema/generate.py          # rewrite the files
    .venv/bin/python hack/kubeschema/generate.py --check  # exit 1 if a shipped file is stale

tests/unit/test_kube_schema.py runs the same check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
from kubernetes_validate import utils
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "app" / "sources" / "schemas"
OLDEST = Version("1.29")  # charts/podgraft/Chart.yaml: kubeVersion >=1.29.0-0
ROOTS = {
    "Container": "io.k8s.api.core.v1.Container",
    "Volume": "io.k8s.api.core.v1.Volume",
    "EnvVar": "io.k8s.api.core.v1.EnvVar",
    "VolumeMount": "io.k8s.api.core.v1.VolumeMount",
    "LocalObjectReference": "io.k8s.api.core.v1.LocalObjectReference",
}
MARKS = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "quantity",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "int-or-string",
}
DROPPED = ("description",)


def versions() -> list[str]:
    """The minors to ship: every one kubernetes-validate has, from 1.29 on."""
    minors = {utils.major_minor(v) for v in utils.all_versions()}
    return sorted((m for m in minors if Version(m) >= OLDEST), key=Version)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in DROPPED}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"].rsplit("/", 1)[-1]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for v in value.values() for ref in _refs(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in _refs(v)]
    return []


def generate(minor: str) -> dict[str, Any]:
    """The shipped document for one minor (`1.30`)."""
    name = f"kubernetes-json-schema/v{minor}.0-local-strict/_definitions.json"
    definitions = utils.schema_contents(name, minor)["$defs"]
    kept: dict[str, Any] = {}
    pending = list(ROOTS.values())
    while pending:
        ref = pending.pop()
        if ref in kept:
            continue
        kept[ref] = _strip(definitions[ref])
        if ref in MARKS:
            kept[ref]["x-podgraft"] = MARKS[ref]
        pending.extend(_refs(kept[ref]))
    return {
        "kubernetesVersion": minor,
        "source": f"kubernetes-validate {kubernetes_validate.__version__}, v{minor}.0-local-strict",
        "roots": ROOTS,
        "$defs": dict(sorted(kept.items())),
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=False) + "\n"


def expected_files() -> dict[Path, str]:
    return {OUTPUT / f"v{minor}.json": render(generate(minor)) for minor in versions()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a shipped file differs")
    args = parser.parse_args()
    expected = expected_files()
    shipped = set(OUTPUT.glob("v*.json"))
    if args.check:
        stale = [p for p, text in expected.items() if not p.is_file() or p.read_text() != text]
        extra = sorted(shipped - set(expected))
        for path in [*stale, *extra]:
            sys.stderr.write(f"{path.relative_to(ROOT)}: stale; run hack/kubeschema/generate.py\n")
        return 1 if stale or extra else 0
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for path in shipped - set(expected):
        path.unlink()
    for path, text in expected.items():
        path.write_text(text)
        sys.stdout.write(f"{path.relative_to(ROOT)}: {len(text)} bytes\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
