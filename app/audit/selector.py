"""Label selectors as `kubectl -l` and the apiserver read them (pure): `app=web,tier!=db`,
`env in (prod,staging)`, `env notin (dev)`, `canary`, `!canary`, `replicas>2`.

A port of the grammar and the matching rules of k8s.io/apimachinery's `labels.Parse` (v0.35):
requirements separated by commas, all of which must hold; `!=` and `notin` also hold when the key is
absent; `>` and `<` compare integers and fail on a label that is not one; keys and values are
validated as the apiserver validates them, so `podgraft audit -l` refuses what a cluster refuses,
with or without `-f`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_SPECIAL = "=!(),<>"
_OPERATORS = ("!=", "==", "=", "<", ">", "in", "notin")
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


class SelectorError(ValueError):
    """A selector the apiserver would refuse; the message says what and where."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # one of _OPERATORS, or "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "exists":
            return value is not None
        if self.operator == "!":
            return value is None
        if self.operator in ("=", "==", "in"):
            return value is not None and value in self.values
        if self.operator in ("!=", "notin"):
            return value is None or value not in self.values
        if value is None or not _INTEGER.match(value):  # `>` and `<`
            return False
        [bound] = self.values
        return int(value) > int(bound) if self.operator == ">" else int(value) < int(bound)


@dataclass(frozen=True, slots=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _tokens(text: str) -> list[str]:
    """The lexer's tokens: identifiers, and the longest operator among `_SPECIAL`'s characters."""
    tokens: list[str] = []
    at = 0
    while at < len(text):
        char = text[at]
        if char in " \t\r\n":
            at += 1
        elif char in _SPECIAL:
            end = at + 1
            if text[at : at + 2] in ("!=", "=="):
                end = at + 2
            tokens.append(text[at:end])
            at = end
        else:
            end = at
            while end < len(text) and text[end] not in _SPECIAL and text[end] not in " \t\r\n":
                end += 1
            tokens.append(text[at:end])
            at = end
    return tokens


def _identifier(token: str | None) -> bool:
    return token is not None and (token in ("in", "notin") or token[0] not in _SPECIAL)


def _check_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise SelectorError(f"invalid label key {key!r}: the prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _NAME.match(name):
        raise SelectorError(
            f"invalid label key {key!r}: a name of at most 63 characters, alphanumeric, '-', '_' or '.'"
            ", starting and ending with an alphanumeric character"
        )


def _check_value(key: str, value: str, operator: str) -> None:
    if value and (len(value) > 63 or not _NAME.match(value)):
        raise SelectorError(
            f"invalid label value {value!r} for {key!r}: at most 63 characters, alphanumeric, '-', '_'"
            " or '.', starting and ending with an alphanumeric character"
        )
    if operator in ("<", ">") and not _INTEGER.match(value):
        raise SelectorError(f"for '{operator}', the value must be an integer, got {value!r}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.at += 1
        return token

    def requirement(self) -> Requirement:
        negated = self.peek() == "!"
        if negated:
            self.take()
        key = self.take()
        if not _identifier(key) or key is None:
            raise SelectorError(f"found {key or 'the end'!r}, expected: a label key")
        _check_key(key)
        if self.peek() in (None, ","):
            return Requirement(key, "!" if negated else "exists")
        operator = self.take()
        if negated or operator not in _OPERATORS or operator is None:
            raise SelectorError(f"found {operator!r} after {key!r}, expected one of {', '.join(_OPERATORS)}")
        values = self.values() if operator in ("in", "notin") else self.exact_value()
        for value in values:
            _check_value(key, value, operator)
        return Requirement(key, operator, frozenset(values))

    def exact_value(self) -> list[str]:
        if self.peek() in (None, ","):
            return [""]
        value = self.take()
        if not _identifier(value) or value is None:
            raise SelectorError(f"found {value!r}, expected: a label value")
        return [value]

    def values(self) -> list[str]:
        if self.take() != "(":
            raise SelectorError("expected '(' after 'in' or 'notin'")
        values: list[str] = []
        expect_value = True
        while (token := self.take()) != ")":
            if token is None:
                raise SelectorError("found the end, expected: ')'")
            if token == ",":  # noqa: S105 (a token, no password)
                if expect_value:
                    values.append("")  # `(,a)`: an empty value, as the apiserver reads it
                expect_value = True
            elif _identifier(token) and expect_value:
                values.append(token)
                expect_value = False
            else:
                raise SelectorError(f"found {token!r}, expected: ',' or ')'")
        if expect_value:
            values.append("")  # `()` and `(a,)`
        return values


def parse_selector(text: str) -> Selector:
    """The selector `text` stands for (an empty text selects everything). Raises `SelectorError`."""
    parser = _Parser(text)
    requirements: list[Requirement] = []
    while parser.peek() is not None:
        requirements.append(parser.requirement())
        token = parser.take()
        if token is None:
            break
        if token != ",":  # noqa: S105
            raise SelectorError(f"found {token!r}, expected: ',' or the end")
        if parser.peek() is None:
            raise SelectorError("found the end, expected: a requirement after ','")
    return Selector(tuple(requirements))
