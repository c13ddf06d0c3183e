"""Fixtures of the unit tier (only those several modules ask for; none is autouse)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the environment they set: no PODGRAFT_* or POD_NAMESPACE from the caller's."""
    for name in list(os.environ):
        if name.startswith("PODGRAFT_") or name == "POD_NAMESPACE":
            monkeypatch.delenv(name)
