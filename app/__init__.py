"""Podgraft: a Kubernetes mutating admission webhook that grafts helpers onto pods from policies.

`PODGRAFT_ENGINE=interpreted` runs the engine's Python sources even where its compiled form is
installed (see setup.py); `compiled` (or unset) runs the compiled form when there is one.
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


class _EngineSources(importlib.abc.MetaPathFinder):
    """Finds the modules of `app.engine` as their Python sources, never as compiled modules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != "app.engine" or path is None:
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
