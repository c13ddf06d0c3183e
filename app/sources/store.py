"""Holds the current `PolicySet`; swaps it atomically; keeps the last good version of each source.

Each source key (a file, one ConfigMap data key: see `app.sources.documents`) is compiled on its
own. A key that fails keeps its last good policies in force and its error is recorded (for logs,
metrics, Events and `/readyz`); `ErrorTracker` tells the reporters which errors are news. Readers
call `current()` and get an immutable `PolicySet`; they never see a half-applied change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from app.engine.policyset import CompiledPolicy, PolicySet
from app.policy.model import PolicyError
from app.sources.documents import DEFAULT_KUBERNETES_VERSION, SourceText, compile_source


class PolicyStore:
    """The one mutable holder of policies. Thread-safe writers; lock-free readers."""

    def __init__(
        self,
        *,
        max_bytes: int = 1024 * 1024,
        kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
        on_change: Callable[[PolicySet, dict[str, str]], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._max_bytes = max_bytes
        self._kubernetes_version = kubernetes_version  # what injected objects are checked against
        self._good: dict[str, tuple[CompiledPolicy, ...]] = {}
        self._errors: dict[str, str] = {}  # by key: why its text was refused (last good kept)
        self._conflicts: dict[str, str] = {}  # by key: a policy name another key already defines
        self._current = PolicySet()
        self._synced = False
        self._on_change = on_change

    def current(self) -> PolicySet:
        return self._current

    @property
    def synced(self) -> bool:
        """True once a source has completed its first full load."""
        return self._synced

    def errors(self) -> dict[str, str]:
        return {**self._conflicts, **self._errors}

    def replace_all(self, sources: Mapping[str, SourceText], *, full: bool = True) -> dict[str, str]:
        """Apply many keys at once (a full listing when `full`: keys not given are removed).

        A value of None removes that key; a `PolicyError` records a failure to read it (the last
        good version stays). Returns the errors of this call, by key.
        """
        errors: dict[str, str] = {}
        with self._lock:
            if full:
                for key in set(self._good) | set(self._errors):
                    if key not in sources:
                        self._good.pop(key, None)
                        self._errors.pop(key, None)
            for key, text in sources.items():
                if text is None:
                    self._good.pop(key, None)
                    self._errors.pop(key, None)
                    continue
                try:
                    if isinstance(text, PolicyError):
                        raise text
                    compiled = compile_source(
                        key, text, max_bytes=self._max_bytes, kubernetes_version=self._kubernetes_version
                    )
                    self._good[key] = tuple(compiled)
                    self._errors.pop(key, None)
                except PolicyError as exc:
                    errors[key] = str(exc)
                    self._errors[key] = str(exc)
            for key, message in self._swap().items():
                errors.setdefault(key, message)  # a refused text is the news, not its old conflict
            if full:
                self._synced = True
        return errors

    def _swap(self) -> dict[str, str]:
        """Rebuild the PolicySet from the good sources. A name defined by two keys: the first key wins."""
        conflicts: dict[str, str] = {}
        owners: dict[str, str] = {}
        chosen: list[CompiledPolicy] = []
        for key in sorted(self._good):
            for policy in self._good[key]:
                if policy.name in owners:
                    message = f"policy {policy.name!r} is already defined by {owners[policy.name]}; ignored"
                    conflicts[key] = message
                    continue
                owners[policy.name] = key
                chosen.append(policy)
        self._current = PolicySet.build(chosen)
        self._conflicts = conflicts  # recomputed on every swap: a resolved conflict is not reported
        if self._on_change is not None:
            self._on_change(self._current, self.errors())
        return conflicts


class ErrorTracker:
    """Which rejections were already reported, so that each (key, message) is reported once: an
    Event, a log line or a metric increment per new error, and again only after a fix or a change."""

    def __init__(self) -> None:
        self._reported: dict[str, str] = {}

    def fresh(self, errors: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
        """Errors of this update not reported yet. `current` is every error the store still holds."""
        for key in [k for k in self._reported if k not in current]:
            del self._reported[key]  # fixed or removed since: a new failure is news again
        new = {key: message for key, message in errors.items() if self._reported.get(key) != message}
        self._reported.update(new)
        return new
