"""The engine's compiled form. Everything else about the package is in pyproject.toml.

The pure, fully typed engine (app/engine) is compiled with mypyc, as black and mypy ship
themselves: about 35% fewer instructions per admission (README, "Instructions per admission").
The Python sources stay in the package beside the compiled modules, and are what runs when the
engine is not compiled, or with PODGRAFT_ENGINE=interpreted (app/__init__.py); `make test` runs the
same tests against both.

PODGRAFT_COMPILE: `1` compiles or fails (`make venv`, the Dockerfile: mypy and a C compiler in the
build environment, built with --no-build-isolation); `0` builds the Python sources only; unset, it
compiles when mypy is there and says so when it is not.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

# app/engine/trees.py is left out: its marks of compiled policy trees subclass dict and list, which
# mypyc does not compile.
INTERPRETED = {"__init__.py", "trees.py"}
COMPILED = sorted(
    str(path)
    for package in ("app/engine", "app/admission")
    for path in Path(package).glob("*.py")
    if path.name not in INTERPRETED
)


def extensions() -> list[object]:
    wanted = os.environ.get("PODGRAFT_COMPILE", "")
    if wanted not in ("", "0", "1"):
        raise SystemExit(f"PODGRAFT_COMPILE must be 0 or 1, got {wanted!r}")
    if wanted == "0" or sys.argv[1:2] in (["egg_info"], ["dist_info"]):  # metadata needs no compiling
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if wanted == "1":
            raise SystemExit(
                "PODGRAFT_COMPILE=1: mypyc (mypy) is not installed in the build environment"
            ) from None
        sys.stderr.write("podgraft: mypyc is not installed: building the engine interpreted only\n")
        return []
    return list(mypycify(COMPILED, opt_level="3", group_name="app.engine"))


setup(ext_modules=extensions())
