"""One source text -> validated, compiled policies.

A *source key* is one unit a source reports on its own: a file in directory mode, one data key of
one ConfigMap in cluster mode. Its text is decoded safely (size-limited, no aliases, no tags),
each document validated against the `InjectionPolicy` schema and compiled by the engine
(`compile_policy`: templates pre-parsed, content hashed). Any failure is one `PolicyError` naming
the document and the field.
"""

from __future__ import annotations

import orjson
import yaml

from app.engine.policyset import CompiledPolicy, compile_policy
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


class SourceError(PolicyError):
    """Every problem of one source, each naming its document; one line each in `str()`'s `; `-list."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def compile_source(key: str, text: str, *, max_bytes: int) -> list[CompiledPolicy]:
    """Parse, validate and compile every policy of one source key. Raises `SourceError` listing every
    document's problem (a source is used whole or not at all), or `PolicyError` for the text itself."""
    compiled: list[CompiledPolicy] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    for number, document in enumerate(load_documents(text, max_bytes=max_bytes), start=1):
        try:
            policy = parse_policy(document)
        except PolicyError as exc:
            problems.append(f"document {number}: {exc}")
            continue
        try:
            compiled.append(compile_policy(policy, source=key))
        except RenderError as exc:
            problems.append(f"document {number}: policy {policy.metadata.name!r}: {exc}")
        name = policy.metadata.name
        if name in first:
            problems.append(
                f"document {number}: policy {name!r} is already defined by document {first[name]}"
            )
        first.setdefault(name, number)
    if problems:
        raise SourceError(problems)
    return compiled
