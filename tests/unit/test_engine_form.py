"""The engine's two forms (setup.py, app/__init__.py): the compiled modules where `make venv` built
them, the Python sources with PODGRAFT_ENGINE=interpreted, and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import app

ROOT = Path(app.__file__).resolve().parent.parent
IMPORT_ALL = """
import importlib, json, pkgutil
import app.admission, app.engine
found = {}
for package in (app.engine, app.admission):
    for info in pkgutil.iter_modules(package.__path__):
        name = f"{package.__name__}.{info.name}"
        found[name] = importlib.import_module(name).__file__
print(json.dumps(found))
"""


def _loaded(form: str) -> dict[str, str]:
    env = {**os.environ, "PODGRAFT_ENGINE": form}
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return {name: Path(path).name for name, path in json.loads(out).items()}


def test_the_interpreted_form_runs_every_module_from_its_source() -> None:
    loaded = _loaded("interpreted")
    assert {"app.engine.mutate", "app.engine.render", "app.admission.review"} <= set(loaded)
    assert all(path.endswith(".py") for path in loaded.values()), loaded


def test_the_compiled_form_runs_every_compiled_module_and_the_sources_of_the_others() -> None:
    for name, path in _loaded("compiled").items():
        directory = ROOT / name.rpartition(".")[0].replace(".", "/")
        built = list(directory.glob(name.rpartition(".")[2] + ".*.so"))
        assert path.endswith(".so") == bool(built), (name, path)


def test_the_compiled_modules_are_the_current_sources() -> None:
    assert app.stale_compiled_modules() == []


def test_an_unknown_form_is_refused_by_name() -> None:
    env = {**os.environ, "PODGRAFT_ENGINE": "fast"}
    run = subprocess.run(
        [sys.executable, "-c", "import app"], env=env, capture_output=True, text=True, check=False
    )
    assert run.returncode != 0
    assert "PODGRAFT_ENGINE must be one of compiled, interpreted, got 'fast'" in run.stderr


def test_the_compiled_classes_refuse_an_assignment() -> None:
    """What `Final` says to mypy, the compiled form enforces at run time."""
    from app.engine import select

    if str(select.__file__).endswith(".py"):
        pytest.skip("the interpreted form (mypy alone checks it)")
    decision = select.PolicyDecision("p", True, "requested")
    with pytest.raises(AttributeError, match="not writable"):
        decision.applied = False  # type: ignore[misc]


def test_the_image_builds_with_the_mypy_the_tests_ran() -> None:
    """requirements-build.lock (the Dockerfile's compiler) pins what requirements-dev.lock pins."""

    def pins(name: str) -> set[str]:
        lines = (ROOT / name).read_text().splitlines()
        return {line.strip() for line in lines if line.strip() and not line.startswith("#")}

    build = pins("requirements-build.lock")
    assert any(pin.startswith("mypy==") for pin in build)
    assert build <= pins("requirements-dev.lock")
    # mypyc type-checks what the compiled modules import: every stub package `make typecheck`
    # has must be there too (without types-PyYAML the image build stopped at "Library stubs").
    stubs = {pin for pin in pins("requirements-dev.lock") if pin.startswith("types-")}
    assert stubs <= build
