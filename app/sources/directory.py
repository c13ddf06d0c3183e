"""Local mode's policy source: a directory of YAML/JSON files, reloaded when a file changes.

Each file is one source key. It never dies on bad input: a file that does not validate is reported
and its last good version stays in force; a failing watcher is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from app.retry import Backoff
from app.sources.documents import SourceText, read_source
from app.sources.store import PolicyStore

log = logging.getLogger("podgraft.policy")

POLICY_SUFFIXES = (".yaml", ".yml", ".json")  # in any case: `.YAML` is read too


def list_directory(directory: Path) -> tuple[list[Path], list[Path]]:
    """The policy files under `directory` (recursively, hidden files and `..data` links skipped), and
    the other files found there (not read: their suffix is not one of `POLICY_SUFFIXES`)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"policy directory {directory} does not exist")
    policies: list[Path] = []
    others: list[Path] = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue  # Kubernetes volume internals (..data, ..2024_...) and editor files
        (policies if path.suffix.lower() in POLICY_SUFFIXES else others).append(path)
    return policies, others


def read_directory(directory: Path) -> dict[str, SourceText]:
    """Every policy file under `directory`, by its path relative to it (see `list_directory`)."""
    files, _others = list_directory(directory)
    return {str(path.relative_to(directory)): read_source(path) for path in files}


def load_directory(store: PolicyStore, directory: Path) -> dict[str, str]:
    """Load (or reload) the whole directory into the store; returns the errors by file."""
    errors = store.replace_all(read_directory(directory))
    for key, message in errors.items():
        log.error("policy file rejected; last good version kept", extra={"source": key, "error": message})
    log.info("policies loaded", extra={"policies": len(store.current()), "source": str(directory)})
    return errors


class DirectorySource:
    """Local mode: load a directory, then reload it whenever a file in it changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def run(self, store: PolicyStore) -> None:
        from watchfiles import awatch

        load_directory(store, self.directory)
        backoff = Backoff(initial=1.0, cap=30.0)
        while True:
            try:
                async for _changes in awatch(self.directory, debounce=200, step=50):
                    load_directory(store, self.directory)
                    backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception:  # a vanished directory or watcher failure must not stop the server
                delay = backoff.next()
                log.exception(
                    "policy directory watch failed; retrying", extra={"retry_in_seconds": round(delay, 2)}
                )
                await asyncio.sleep(delay)
