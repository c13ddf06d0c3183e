"""How a refused policy document is told: every problem named by its path in the document, the
misspelt field guessed ("did you mean 'image'?"), schema errors before "Field required" noise, and
values named by their YAML/JSON kind, never a Python type."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names (as written in YAML) of the object at `loc` below `model`, [] if unknown."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside `X`, `list[X]`, `X | None` (None for anything else)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "dict[")):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def validation_problems(
    error: ValidationError, model: type[BaseModel] | None = None
) -> list[tuple[str, str]]:
    """One `(path, message)` per problem, the field named by its path in the document
    (`spec.sidecars[0].image`).

    Unknown and invalid fields come first, "Field required" last, and an unknown field close to a
    known one says "did you mean ...?" (a `Field required` for the field it misspells is dropped).
    """
    items = error.errors()
    guesses: dict[int, str] = {}
    meant: set[tuple[Any, ...]] = set()
    for index, item in enumerate(items):
        loc = tuple(item["loc"])
        if item["type"] == "extra_forbidden" and model is not None and isinstance(loc[-1], str):
            close = difflib.get_close_matches(loc[-1], _fields_at(model, loc[:-1]), n=1, cutoff=0.75)
            if close:
                guesses[index] = close[0]
                meant.add((*loc[:-1], close[0]))
    parts: list[tuple[int, tuple[str, str]]] = []
    for index, item in enumerate(items):
        loc = tuple(item["loc"])
        if item["type"] == "missing" and loc in meant:
            continue
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field" + (f"; did you mean {guesses[index]!r}?" if index in guesses else "")
        parts.append((1 if item["type"] == "missing" else 0, (_path(loc), message)))
    return [problem for _, problem in sorted(parts, key=lambda part: part[0])]


Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a policy source: where it is (source, document, policy, field) and what.

    An error keeps the source from being used; a warning is something that works but not as meant
    (`podgraft policy validate --strict` fails on it); a note tells what was read or skipped.
    """

    message: str
    source: str = ""  # "team/log.yaml", "configmap podgraft/log-shipper key log-shipper.yaml"
    document: int | None = None  # 1-based, within the source's text
    policy: str | None = None
    field: str | None = None  # the path in the document: spec.sidecars[0].image
    severity: Severity = "error"

    def __str__(self) -> str:
        """Where and what, without the source (the store records messages by source)."""
        parts = [
            f"document {self.document}" if self.document is not None else "",
            f"policy {self.policy!r}" if self.policy is not None else "",
            self.field or "",
            self.message,
        ]
        return ": ".join(part for part in parts if part)


def problem_line(where: str, problem: Problem) -> str:
    """One line of `podgraft policy validate` (and of the webhook's refusal): where, then the
    severity unless it is an error, then the problem."""
    label = "" if problem.severity == "error" else f"{problem.severity}: "
    return f"{where}: {label}{problem}" if where else f"{label}{problem}"


_KINDS = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def kind_of(value: object) -> str:
    """What a decoded YAML or JSON value is, in their words (for messages: never a Python type name)."""
    return "null" if value is None else _KINDS.get(type(value), "a value")
