"""Podgraft: a Kubernetes mutating admission webhook that grafts helpers onto pods from policies.

`PODGRAFT_ENGINE=interpreted` runs the Python sources of the engine and the admission step even
where their compiled form is installed (see setup.py); `compiled` (or unset) runs the compiled form
when there is one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__version__ = "0.1.0"
ENGINE_FORMS = ("compiled", "interpreted")
COMPILED_PACKAGES = ("app.engine", "app.admission")  # what setup.py compiles


class _EngineSources(importlib.abc.MetaPathFinder):
    """Finds the modules of the compiled packages as their Python sources, never compiled."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package not in COMPILED_PACKAGES or path is None:
            return None
        for entry in path:
            source = Path(entry) / f"{name}.py"
            if source.is_file():
                return importlib.util.spec_from_file_location(fullname, source)
        return None


_form = os.environ.get("PODGRAFT_ENGINE", "compiled")
if _form not in ENGINE_FORMS:
    raise ImportError(f"PODGRAFT_ENGINE must be one of {', '.join(ENGINE_FORMS)}, got {_form[:40]!r}")
if _form == "interpreted":
    sys.meta_path.insert(0, _EngineSources())


def stale_compiled_modules() -> list[str]:
    """The compiled modules (built in place by `make venv`) older than their Python source, or
    whose source is gone: an edit the compiled form does not have yet."""
    stale = []
    for package in COMPILED_PACKAGES:
        directory = Path(__file__).parent.parent / package.replace(".", "/")
        for compiled in directory.glob("*.so"):
            source = compiled.with_name(compiled.name.partition(".")[0] + ".py")
            if not source.exists() or source.stat().st_mtime > compiled.stat().st_mtime:
                stale.append(str(compiled.relative_to(directory.parent.parent)))
    return sorted(stale)
