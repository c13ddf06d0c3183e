"""The objects of a file (or stdin) as users and `kubectl` write them, for every command that reads one.

- JSON (`kubectl get -o json`) is parsed as JSON. `Source.objects()` yields a List's items one at a
  time (decoded as they are reached), so a dump of many pods is never held as objects all at once;
- YAML with libyaml's C loader when PyYAML has it (PyYAML's wheels do; the pure-Python loader is
  about 50x slower), every document of a stream, parsed once;
- no object is shared between two places: a YAML alias (`*env` for `&env`) is loaded as a copy of
  its own, so editing one container's env never edits another's (a bounded number of copies: an
  "alias bomb" is refused);
- `kind: List` documents stand for their items (`Source.objects()`);
- every error is a `FileError` whose message names the file, and the line for YAML and JSON.

Used by `podgraft inject` (`documents()`) and `podgraft audit -f` (`objects()`); written for any
command that reads manifests (policy ConfigMaps, for one).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

MAX_ALIAS_COPIES = 1_000_000  # nodes copied for aliases, per document: far above any real manifest
NESTED = "nested too deeply"  # the words of the policy loader's and the webhook's refusals

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
WITH_LIBYAML = _Loader is not yaml.SafeLoader


class FileError(ValueError):
    """A file that cannot be read or parsed; the message names it (and the line, for a parse error)."""


class _UnsharedLoader(_Loader):  # type: ignore[misc,valid-type]
    """The safe loader, but an alias constructs a new copy of its anchor's node instead of returning
    the object already built for it (PyYAML's default, which shares one object between both places)."""

    copies = 0

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node in self.constructed_objects:
            self.copies += 1
            if self.copies > MAX_ALIAS_COPIES:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"YAML aliases expand to more than {MAX_ALIAS_COPIES:,} copied nodes",
                    node.start_mark,
                )
            del self.constructed_objects[node]
        return super().construct_object(node, deep)

    def construct_document(self, node: yaml.Node) -> Any:
        self.copies = 0
        return super().construct_document(node)


def _yaml_error(name: str, exc: yaml.YAMLError) -> FileError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        return FileError(f"{name}: not valid YAML: {where}{what}")
    return FileError(f"{name}: not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}")


def _json_error(name: str, exc: ValueError) -> FileError:
    if isinstance(exc, json.JSONDecodeError):
        return FileError(f"{name}: not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}")
    return FileError(f"{name}: not valid JSON: {exc}")


# --- a JSON List, one item at a time -------------------------------------------------------------

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")


def _skip(text: str, at: int) -> int:
    """Past the white space at `at`."""
    match = _SPACE.match(text, at)
    return match.end() if match else at


def _expect(text: str, at: int, allowed: str) -> int:
    """Past the white space and one of `allowed` (the one found is at the returned index - 1)."""
    at = _skip(text, at)
    if text[at : at + 1] not in tuple(allowed):
        raise json.JSONDecodeError(f"expected one of {allowed!r}", text, at)
    return at + 1


def json_objects(text: str) -> Iterator[Any]:
    """The values of a JSON text (one, or several one after another), decoded one at a time: the
    items of a List (`kubectl get ... -o json`) are yielded as they are read, so a dump of many pods is
    never held as objects all at once; any other value is yielded whole. Broken JSON raises
    `json.JSONDecodeError`."""
    at = _skip(text, 0)
    while at < len(text):
        if text[at] == "{":
            at = yield from _json_object(text, at)
        else:
            value, at = _DECODER.raw_decode(text, at)
            yield value
        at = _skip(text, at)


def _json_object(text: str, at: int) -> Generator[Any, None, int]:
    """One object at `at`: its `items` one by one (then not the object), or the object. Returns the
    index past it (`yield from`'s value)."""
    other: dict[str, Any] = {}
    listed = False
    at = _skip(text, at + 1)
    while text[at : at + 1] != "}":
        key, after = _DECODER.raw_decode(text, at)
        if not isinstance(key, str):
            raise json.JSONDecodeError("expected a string key", text, at)
        at = _skip(text, _expect(text, after, ":"))
        if key == "items" and text[at : at + 1] == "[":
            listed, at = True, _skip(text, at + 1)
            while text[at : at + 1] != "]":
                item, at = _DECODER.raw_decode(text, at)
                yield item
                at = _expect(text, at, ",]")
                if text[at - 1] == "]":
                    at -= 1
                at = _skip(text, at)
            at += 1
        else:
            other[key], at = _DECODER.raw_decode(text, at)
        at = _expect(text, at, ",}")
        if text[at - 1] == "}":
            at -= 1
        at = _skip(text, at)
    if not listed:
        yield other
    return at + 1


def _json_values(text: str) -> Iterator[Any]:
    """The values of a JSON text, whole, one after another."""
    at = _skip(text, 0)
    while at < len(text):
        value, at = _DECODER.raw_decode(text, at)
        yield value
        at = _skip(text, at)


def is_list(document: Any) -> bool:
    """A `kind: List` (what `kubectl get` prints for several objects) with its items."""
    return (
        isinstance(document, dict)
        and document.get("kind") == "List"
        and isinstance(document.get("items"), list)
    )


# --- a file ---------------------------------------------------------------------------------------


def _read_bytes(source: str) -> bytes | str:
    if source != "-":
        return Path(source).read_bytes()
    stream = getattr(sys.stdin, "buffer", None)
    return stream.read() if stream is not None else sys.stdin.read()


class Source:
    """One file's text (`-`: stdin), read once; its documents or objects parsed on demand.

    `name` is how messages call it. Reading raises `FileError` (no such file, not UTF-8)."""

    def __init__(self, source: str) -> None:
        self.name = "<stdin>" if source == "-" else source
        try:
            data = _read_bytes(source)
        except OSError as exc:
            raise FileError(f"{self.name}: cannot read: {exc.strerror or exc}") from None
        if isinstance(data, str):
            self.text = data
        else:
            try:
                self.text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                line = data.count(b"\n", 0, exc.start) + 1
                raise FileError(
                    f"{self.name}: not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line}"
                ) from None
        self.json = self.text.lstrip()[:1] in ("{", "[")
        self._documents: list[Any] | None = None

    def documents(self) -> list[Any]:
        """Every document, in order (a JSON text holds one, or several one after another; empty YAML
        documents are skipped). Parsed on the first call, kept for the next."""
        if self._documents is None:
            self._documents = self._parse()
            self.text = ""  # a 20 MB dump: its text is not kept beside its objects
        return self._documents

    def _parse(self) -> list[Any]:
        json_error: ValueError | None = None
        if self.json:
            try:
                return [orjson.loads(self.text)]
            except orjson.JSONDecodeError:
                try:  # several values one after another (`cat a.json b.json`)?
                    return list(_json_values(self.text))
                except json.JSONDecodeError as exc:  # or YAML flow style (`{kind: Pod}`)
                    json_error = exc
                except RecursionError:
                    raise FileError(f"{self.name}: not valid JSON: {NESTED}") from None
        try:
            return [d for d in yaml.load_all(self.text, Loader=_UnsharedLoader) if d is not None]
        except yaml.YAMLError as exc:
            raise _json_error(self.name, json_error) if json_error else _yaml_error(self.name, exc) from None
        except RecursionError:
            raise FileError(f"{self.name}: not valid YAML: {NESTED}") from None

    def objects(self) -> Iterator[dict[str, Any]]:
        """Every object, a List's items in its place; a JSON List decoded one item at a time on
        every call (nothing is kept), YAML parsed once. Documents that are no objects are left out."""
        streamed = self.json and self._documents is None
        documents: Iterable[Any] = self._json_stream() if streamed else self.documents()
        for document in documents:
            if is_list(document):
                yield from (item for item in document["items"] if isinstance(item, dict))
            elif isinstance(document, dict):
                yield document

    def _json_stream(self) -> Iterator[Any]:
        yielded = False
        try:
            for value in json_objects(self.text):
                yielded = True
                yield value
        except json.JSONDecodeError as exc:
            if yielded:
                raise _json_error(self.name, exc) from None
            yield from self.documents()  # YAML flow style, or the error of both parsers
        except RecursionError:
            raise FileError(f"{self.name}: not valid JSON: {NESTED}") from None
