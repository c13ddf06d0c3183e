"""Local mode's policy source: a directory of YAML/JSON files, reloaded when a file changes.

Each file is one source key. It never dies on bad input: a file that does not validate is reported
and its last good version stays in force; a failing watcher is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from app.policy.model import PolicyError
from app.retry import Backoff
from app.sources.documents import SourceText
from app.sources.store import PolicyStore

log = logging.getLogger("podgraft.policy")

POLICY_SUFFIXES = (".yaml", ".yml", ".json")


def read_directory(directory: Path) -> dict[str, SourceText]:
    """Every policy file under `directory` (recursively, hidden files and `..data` links skipped)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"policy directory {directory} does not exist")
    texts: dict[str, SourceText] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue  # Kubernetes volume internals (..data, ..2024_...) and editor files
        if path.suffix in POLICY_SUFFIXES and path.is_file():
            try:
                texts[str(relative)] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                texts[str(relative)] = PolicyError(f"cannot read the file: {exc}")
    return texts


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
