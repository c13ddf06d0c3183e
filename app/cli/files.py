"""The objects of a file (or stdin) as users and `kubectl` write them, for every command that reads one.

- JSON (`kubectl get -o json`) is parsed as JSON (one value, or several one after another);
- YAML is parsed by libyaml when PyYAML has it (its wheels do), every document of a stream, and the
  objects are built straight from the parser's events (`_Builder`), with the safe loader's meaning
  of every scalar, tag and merge key but without its node graph: 7x faster than PyYAML's C loader
  on a kubectl dump, and a List's items can be handed out one at a time;
- `Source.objects()` yields the objects, a `kind: List`'s items in its place, each as soon as it is
  read, so a dump of many pods is never held as objects all at once (JSON and YAML alike);
- no object is shared between two places: a YAML alias (`*env` for `&env`) is loaded as a copy of
  its own, so editing one container's env never edits another's (at most MAX_ALIAS_COPIES copied
  nodes per document: an "alias bomb" is refused);
- every error is a `FileError` whose message names the file, and the line for YAML and JSON.

Used by `podgraft inject` (`documents()`) and `podgraft audit -f` (`objects()`); written for any
command that reads manifests (policy ConfigMaps, for one).
"""

from __future__ import annotations

import codecs
import json
import re
import sys
import types
from collections.abc import Generator, Iterator
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

    def __init__(self, message: str, where: tuple[int, int] = (0, 0)) -> None:
        super().__init__(message)
        self.where = where  # (line, column) of a parse error


def _likelier(json_error: FileError, yaml_error: FileError) -> FileError:
    """Of a text that starts like JSON and is neither JSON nor YAML, the error that tells more: the
    JSON parser's, unless it failed at once (`{kind: Pod, ...`, `[a]: 1` are YAML's flow style)."""
    return yaml_error if json_error.where <= (1, 2) else json_error


_MAP_TAG, _SEQ_TAG, _STR_TAG = (f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str"))
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PENDING = object()  # an anchor whose collection is still being built (an alias to it is recursive)
_NO_KEY = object()
_MERGE = object()  # the merge key `<<`


class _Collection:
    """A mapping or sequence being built from its events."""

    __slots__ = ("anchor", "key", "mark", "merges", "stream", "value")

    def __init__(self, value: dict[Any, Any] | list[Any], anchor: str | None, mark: Any) -> None:
        self.value = value
        self.anchor = anchor
        self.mark = mark
        self.key: Any = _NO_KEY
        self.merges: list[dict[Any, Any]] = []
        self.stream = False  # a List's `items`: each item is yielded instead of kept

    def finish(self) -> Any:
        if not self.merges:
            return self.value
        merged: dict[Any, Any] = {}
        for mapping in self.merges:
            merged.update(mapping)
        merged.update(self.value)
        return merged


class _Builder:
    """Python objects straight from the parser's events (libyaml's, when present), with the safe
    loader's meaning of every scalar, tag and merge key, but no node graph: a List's items can be
    yielded one at a time, and an alias is a copy of its anchor's object, never the same object.
    Collections tagged `!!set`, `!!omap` or `!!pairs` (which no Kubernetes object holds) are refused
    as unknown tags, naming the line."""

    def __init__(self, text: str | bytes) -> None:
        self.loader: Any = _Loader(text)
        self.tags: dict[tuple[str, Any], str] = {}  # the resolver's answer, per plain scalar
        self.anchors: dict[str, Any] = {}
        self.copies = 0

    def error(self, problem: str, mark: Any) -> yaml.constructor.ConstructorError:
        return yaml.constructor.ConstructorError(None, None, problem, mark)

    def scalar(self, event: Any) -> Any:
        tag, value = event.tag, event.value
        if tag is None or tag == "!":
            key = (value, event.implicit)
            tag = self.tags.get(key)
            if tag is None:
                tag = self.tags[key] = self.loader.resolve(yaml.ScalarNode, value, event.implicit)
        if tag == _STR_TAG:
            return value
        if tag == _MERGE_TAG:
            return _MERGE
        constructors = self.loader.yaml_constructors
        constructor = constructors.get(tag, constructors[None])
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
        data = constructor(self.loader, node)
        if isinstance(data, types.GeneratorType):
            raise self.error(f"the tag {tag!r} is not for a scalar", event.start_mark)
        return data

    def copy(self, value: Any, mark: Any) -> Any:
        """A copy of an anchor's object for one of its aliases (at most MAX_ALIAS_COPIES nodes)."""
        self.copies += 1
        if self.copies > MAX_ALIAS_COPIES:
            raise self.error(f"YAML aliases expand to more than {MAX_ALIAS_COPIES:,} copied nodes", mark)
        if type(value) is dict:
            return {k: self.copy(v, mark) for k, v in value.items()}
        if type(value) is list:
            return [self.copy(v, mark) for v in value]
        return value  # a scalar: immutable (or a datetime, bytes: never edited)

    def collection(self, event: Any, value: dict[Any, Any] | list[Any]) -> _Collection:
        if event.tag not in (None, "!", _MAP_TAG if type(value) is dict else _SEQ_TAG):
            raise self.error(f"could not determine a constructor for the tag {event.tag!r}", event.start_mark)
        if event.anchor is not None:
            self.anchors[event.anchor] = _PENDING
        return _Collection(value, event.anchor, event.start_mark)

    def documents(self, *, stream_items: bool) -> Iterator[Any]:
        """Every document (None for an empty one); with `stream_items`, a top-level mapping's
        `items` (a List's) one by one in its place, and then not the mapping."""
        get = self.loader.get_event
        try:
            get()  # StreamStartEvent
            while not isinstance(get(), yaml.StreamEndEvent):  # DocumentStartEvent
                self.anchors, self.copies = {}, 0
                yield from self.document(stream_items=stream_items)
                get()  # DocumentEndEvent
        finally:
            self.loader.dispose()

    def document(self, *, stream_items: bool) -> Iterator[Any]:
        get = self.loader.get_event
        stack: list[_Collection] = []
        streamed = False
        while True:
            event = get()
            kind = type(event)
            if kind is yaml.ScalarEvent:
                value = self.scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = value
            elif kind is yaml.MappingStartEvent:
                stack.append(self.collection(event, {}))
                continue
            elif kind is yaml.SequenceStartEvent:
                stack.append(self.collection(event, []))
                if stream_items and len(stack) == 2 and stack[0].key == "items":
                    stack[-1].stream = streamed = True
                continue
            elif kind is yaml.AliasEvent:
                anchored = self.anchors.get(event.anchor, _NO_KEY)
                if anchored is _NO_KEY or anchored is _PENDING:
                    what = "undefined" if anchored is _NO_KEY else "recursive"
                    raise self.error(f"found {what} alias {event.anchor!r}", event.start_mark)
                value = self.copy(anchored, event.start_mark)
            else:  # MappingEndEvent, SequenceEndEvent
                done = stack.pop()
                value = done.finish()
                if done.anchor is not None:
                    self.anchors[done.anchor] = value
            if not stack:
                if not streamed:
                    yield value
                return
            parent = stack[-1]
            if value is _MERGE and not (type(parent.value) is dict and parent.key is _NO_KEY):
                raise self.error("a merge (<<) can only be a mapping's key", event.start_mark)
            if type(parent.value) is list:
                if parent.stream:
                    yield value
                else:
                    parent.value.append(value)
            elif parent.key is _NO_KEY:
                if type(value) is dict or type(value) is list:
                    raise self.error("found an unhashable key (a mapping or a sequence)", event.start_mark)
                parent.key = value
            else:
                if parent.key is _MERGE:
                    parent.merges += self.merge(value, parent.mark)
                else:
                    parent.value[parent.key] = value
                parent.key = _NO_KEY

    def merge(self, value: Any, mark: Any) -> list[dict[Any, Any]]:
        """The mappings a merge key (`<<: *base`) brings, in the order they apply (the first of a
        sequence wins, as with the safe loader)."""
        if type(value) is dict:
            return [value]
        if type(value) is list and all(type(v) is dict for v in value):
            return list(reversed(value))
        raise self.error("expected a mapping or a list of mappings for merging", mark)


def _yaml_error(name: str, exc: yaml.YAMLError) -> FileError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        position = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        return FileError(f"{name}: not valid YAML: {where}{what}", position)
    return FileError(f"{name}: not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}")


def _json_error(name: str, exc: ValueError) -> FileError:
    if isinstance(exc, json.JSONDecodeError):
        message = f"{name}: not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
        return FileError(message, (exc.lineno, exc.colno))
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


def _read_bytes(source: str) -> bytes:
    if source != "-":
        return Path(source).read_bytes()
    stream = getattr(sys.stdin, "buffer", None)
    return stream.read() if stream is not None else sys.stdin.read().encode()


def _check_utf8(name: str, data: bytes) -> None:
    """Raise `FileError` naming the first byte that is not UTF-8, and its line (1 MiB at a time: no
    decoded copy of a big file is made just to check it)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    step = 1 << 20
    for at in range(0, len(data) or 1, step):
        try:
            decoder.decode(view[at : at + step], final=at + step >= len(data))
        except UnicodeDecodeError as exc:
            bad = at + exc.start
            line = data.count(b"\n", 0, bad) + 1
            raise FileError(f"{name}: not UTF-8 text: byte 0x{data[bad]:02x} on line {line}") from None


class Source:
    """One file (`-`: stdin), read once; its documents (`documents()`) or its objects (`objects()`,
    streamed) parsed once, and its bytes then dropped. `name` is how messages call it. Reading raises
    `FileError` (no such file, not UTF-8), and so does parsing (with the line). YAML is parsed from
    the bytes as read; JSON, which Python's streaming decoder reads from text, is decoded first."""

    def __init__(self, source: str) -> None:
        self.name = "<stdin>" if source == "-" else source
        try:
            data = _read_bytes(source)
        except OSError as exc:
            raise FileError(f"{self.name}: cannot read: {exc.strerror or exc}") from None
        _check_utf8(self.name, data)
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        self.data = data
        self.json = data[:4096].lstrip()[:1] in (b"{", b"[")  # (a longer indent is no JSON dump)

    def _take(self) -> bytes:
        data, self.data = self.data, b""  # a 100 MB dump: its bytes are not kept beside its objects
        return data

    def documents(self) -> list[Any]:
        """Every document, in order (a JSON text holds one, or several one after another; empty YAML
        documents are left out)."""
        data = self._take()
        json_error: FileError | None = None
        if self.json:
            try:
                return [orjson.loads(data)]
            except orjson.JSONDecodeError:
                try:  # several values one after another (`cat a.json b.json`)?
                    return list(_json_values(data.decode()))
                except json.JSONDecodeError as exc:  # or YAML flow style (`{kind: Pod}`)
                    json_error = _json_error(self.name, exc)
                except RecursionError:
                    raise FileError(f"{self.name}: not valid JSON: {NESTED}") from None
        try:
            return [d for d in _Builder(data).documents(stream_items=False) if d is not None]
        except yaml.YAMLError as exc:
            error = _yaml_error(self.name, exc)
            raise (_likelier(json_error, error) if json_error else error) from None
        except RecursionError:
            raise FileError(f"{self.name}: not valid YAML: {NESTED}") from None

    def objects(self) -> Iterator[dict[str, Any]]:
        """Every object, a List's items in its place, each as soon as it is read (the List is never
        held whole); documents that are no objects are left out."""
        documents = self._json_stream(self._take().decode()) if self.json else self._yaml_stream(self._take())
        for document in documents:
            if is_list(document):
                yield from (item for item in document["items"] if isinstance(item, dict))
            elif isinstance(document, dict):
                yield document

    def _yaml_stream(self, text: str | bytes) -> Iterator[Any]:
        try:
            yield from (d for d in _Builder(text).documents(stream_items=True) if d is not None)
        except yaml.YAMLError as exc:
            raise _yaml_error(self.name, exc) from None
        except RecursionError:
            raise FileError(f"{self.name}: not valid YAML: {NESTED}") from None

    def _json_stream(self, text: str) -> Iterator[Any]:
        yielded = False
        try:
            for value in json_objects(text):
                yielded = True
                yield value
        except json.JSONDecodeError as exc:
            if yielded:
                raise _json_error(self.name, exc) from None
            try:  # YAML flow style?
                yield from self._yaml_stream(text)
            except FileError as error:
                raise _likelier(_json_error(self.name, exc), error) from None
        except RecursionError:
            raise FileError(f"{self.name}: not valid JSON: {NESTED}") from None
