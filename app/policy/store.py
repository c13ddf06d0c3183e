"""Holds the current `PolicySet`; swaps it atomically; keeps the last good version of each source.

A *source key* is one unit a source reports on its own: a file in directory mode, one data key of
one ConfigMap in cluster mode. Each key is parsed and validated on its own. A key that fails keeps
its last good policies in force and its error is recorded (for logs, metrics and `/readyz`).
Readers call `current()` and get an immutable `PolicySet`; they never see a half-applied change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

import orjson
import yaml

from app.engine.policyset import CompiledPolicy, PolicySet, compile_policy
from app.engine.render import RenderError
from app.policy.model import PolicyError, parse_policy

MAX_DOCUMENTS = 256

SourceText = str | PolicyError | None  # a source's text, an error reading it, or None: removed


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (YAML bombs) outright."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                "while loading a policy",
                None,
                "YAML aliases (*anchor) are not allowed in policies",
                event.start_mark,
            )
        return super().compose_node(parent, index)  # type: ignore[arg-type]


def load_documents(text: str, *, max_bytes: int) -> list[object]:
    """Decode one or more YAML (or JSON) documents safely: size-limited, no aliases, no tags."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise PolicyError(f"{size} bytes is over the {max_bytes}-byte limit for a policy source")
    if text.lstrip().startswith("{"):
        try:  # a JSON document: parse it as JSON (YAML refuses some characters JSON allows)
            return [orjson.loads(text)]
        except orjson.JSONDecodeError:
            pass  # YAML flow style, or broken JSON: the YAML parser gives the better message
    try:
        documents = [d for d in yaml.load_all(text, Loader=_NoAliasLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}".replace("\n", " ")) from None
    except RecursionError:
        raise PolicyError("not valid YAML: nested too deeply") from None
    if len(documents) > MAX_DOCUMENTS:
        raise PolicyError(f"{len(documents)} documents; at most {MAX_DOCUMENTS} per source")
    return documents


def compile_source(key: str, text: str, *, max_bytes: int) -> list[CompiledPolicy]:
    """Parse, validate and compile every policy of one source key. Raises `PolicyError`."""
    compiled: list[CompiledPolicy] = []
    for index, document in enumerate(load_documents(text, max_bytes=max_bytes)):
        where = f"document {index + 1}"
        try:
            policy = parse_policy(document)
            compiled.append(compile_policy(policy, source=key))
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}") from None
        except RenderError as exc:
            raise PolicyError(f"{where}: policy {policy.metadata.name!r}: {exc}") from None
    names = [p.name for p in compiled]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PolicyError(f"policy name defined twice: {', '.join(duplicates)}")
    return compiled


class PolicyStore:
    """The one mutable holder of policies. Thread-safe writers; lock-free readers."""

    def __init__(
        self,
        *,
        max_bytes: int = 1024 * 1024,
        on_change: Callable[[PolicySet, dict[str, str]], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._max_bytes = max_bytes
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

    def apply(self, key: str, text: str) -> str | None:
        """Replace one source key. Returns the error message (the last good version stays), or None."""
        return self.replace_all({key: text}, full=False).get(key)

    def remove(self, key: str) -> None:
        with self._lock:
            self._good.pop(key, None)
            self._errors.pop(key, None)
            self._swap()

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
                    self._good[key] = tuple(compile_source(key, text, max_bytes=self._max_bytes))
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

    def keys(self) -> Iterable[str]:
        return sorted(set(self._good) | set(self._errors))
