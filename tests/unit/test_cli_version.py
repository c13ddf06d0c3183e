"""`podgraft --version` (the image check runs it too, in a pod)."""

from __future__ import annotations

import pytest

from app import __version__
from app.cli import main


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"podgraft {__version__}\n"
