"""hack/lib/compiler.sh: whether `make venv` compiles the engine, and what it says when it cannot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "lib" / "compiler.sh"


def _run(path: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), python], env={"PATH": path}, capture_output=True, text=True, check=True
    )


def _bin_without_a_compiler(tmp_path: Path) -> str:
    """A PATH with what the script runs besides the compiler (and no apt-get, so nothing installs)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for tool in ("bash", "id", "dirname"):
        found = shutil.which(tool)
        assert found is not None
        (directory / tool).symlink_to(found)
    return str(directory)


def test_without_a_compiler_the_engine_is_installed_interpreted_and_it_says_so(tmp_path: Path) -> None:
    run = _run(_bin_without_a_compiler(tmp_path))
    assert run.stdout == "0\n"
    assert "no C compiler (cc): installing the engine interpreted" in run.stderr
    assert "rm .venv/.installed and make venv" in run.stderr


def test_without_the_interpreters_headers_the_engine_is_installed_interpreted(tmp_path: Path) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    python = tmp_path / "python-without-headers"
    python.write_text("#!/bin/sh\necho False\n")
    python.chmod(0o755)
    run = _run(str(Path(shutil.which("cc") or "").parent) + ":/usr/bin:/bin", str(python))
    assert run.stdout == "0\n"
    assert "has no C headers (Python.h; Debian: python3-dev)" in run.stderr


def test_with_a_compiler_and_the_headers_it_compiles() -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    run = _run("/usr/local/bin:/usr/bin:/bin")
    assert (run.stdout, run.stderr) == ("1\n", "")
