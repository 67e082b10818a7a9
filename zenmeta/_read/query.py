"""The ``where`` language: ``"user.accuracy >= 0.9 and not status = 'failed'"``.

One small recursive-descent parser, the same for ``Client``, the CLI and the
dashboard. Grammar (keywords in any case)::

    filter  = term { "or" term }
    term    = factor { "and" factor }
    factor  = "not" factor | "(" filter ")" | test
    test    = field ( OP value | ["not"] "in" "(" value {"," value} ")"
                    | "like" text | "exists" | "missing" )
    field   = NAME { "." (NAME | `quoted key`) }     a dot means metadata: source.key…
    value   = number | 'text' | "text" | true | false | null

A field without a dot is one of the record's own (``name``, ``pipeline``,
``status``, ``tag``, ``host``, ``start_time``, ``duration`` for runs; ``name``,
``step``, ``status``, ``start_time``, ``duration`` for steps); ``start_time``
takes an ISO time. Every value stays a value: the stores bind them as
parameters, never as SQL text.
"""

from __future__ import annotations

import re
from typing import Any

from .._errors import QueryError
from .._filters import (
    RUN_FIELDS,
    STEP_FIELDS,
    TIME_FIELDS,
    And,
    Compare,
    Field,
    Filter,
    Not,
    Or,
    kind_of_value,
    ns_of,
)

__all__ = ["parse_field", "parse_filter"]

_MAX_LENGTH = 10_000
_MAX_DEPTH = 50
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
    | (?P<text>'(?:[^']|'')*'|"(?:[^"]|"")*")
    | (?P<quoted>`(?:[^`]|``)*`)
    | (?P<op><=|>=|!=|==|=|<|>)
    | (?P<punct>[(),.])
    | (?P<word>[A-Za-z_][A-Za-z0-9_\-]*|[0-9][A-Za-z0-9_\-]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "like", "exists", "missing", "true", "false", "null"}
_CONSTANTS = {"true": True, "false": False, "null": None}


class _Token:
    __slots__ = ("kind", "position", "text", "value")

    def __init__(self, kind: str, text: str, value: Any, position: int) -> None:
        self.kind, self.text, self.value, self.position = kind, text, value, position


def _tokens(source: str) -> list[_Token]:
    found: list[_Token] = []
    position = 0
    while True:
        while position < len(source) and source[position].isspace():
            position += 1
        if position == len(source):
            found.append(_Token("end", "", None, position))
            return found
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise QueryError(f"unexpected character {source[position]!r}", position)
        kind = match.lastgroup or ""
        text = match.group(kind)
        start = match.start(kind)
        value: Any = text
        if kind == "number":
            value = float(text) if any(c in text for c in ".eE") else int(text)
        elif kind == "text":
            value = text[1:-1].replace(text[0] * 2, text[0])
        elif kind == "quoted":
            value = text[1:-1].replace("``", "`")
        elif kind == "word" and text.lower() in _KEYWORDS:
            kind, value = "keyword", text.lower()
        found.append(_Token(kind, text, value, start))
        position = match.end()


class _Parser:
    def __init__(self, source: str, fields: tuple[str, ...]) -> None:
        self.tokens = _tokens(source)
        self.index = 0
        self.fields = fields
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def keyword(self, *words: str) -> bool:
        token = self.token
        if token.kind == "keyword" and token.value in words:
            self.index += 1
            return True
        return False

    def expect(self, text: str, what: str) -> None:
        token = self.take()
        if token.text != text:
            raise QueryError(f"expected {what}, found {_shown(token)}", token.position)

    def parse(self) -> Filter:
        node = self.any_of()
        if self.token.kind != "end":
            raise QueryError(
                f"expected 'and', 'or' or the end, found {_shown(self.token)}", self.token.position
            )
        return node

    def any_of(self) -> Filter:
        terms = [self.all_of()]
        while self.keyword("or"):
            terms.append(self.all_of())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def all_of(self) -> Filter:
        terms = [self.factor()]
        while self.keyword("and"):
            terms.append(self.factor())
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def factor(self) -> Filter:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise QueryError(f"nested deeper than {_MAX_DEPTH} levels", self.token.position)
        try:
            if self.keyword("not"):
                return Not(self.factor())
            if self.token.text == "(":
                self.take()
                node = self.any_of()
                self.expect(")", "')'")
                return node
            return self.test()
        finally:
            self.depth -= 1

    def test(self) -> Compare:
        field, position = self.field()
        token = self.take()
        if token.kind == "op":
            op = "=" if token.text == "==" else token.text
            return Compare(field, op, self.value(field, position, op))
        if token.kind == "keyword" and token.value in ("exists", "missing"):
            return Compare(field, token.value)
        if token.kind == "keyword" and token.value == "like":
            where = self.token.position
            pattern = self.value(field, position, "like")
            if not isinstance(pattern, str):
                raise QueryError("like takes a text pattern, such as 'exp-%'", where)
            return Compare(field, "like", pattern)
        negated = token.kind == "keyword" and token.value == "not"
        if negated:
            token = self.take()
        if token.kind == "keyword" and token.value == "in":
            return Compare(field, "not in" if negated else "in", self.values(field, position))
        raise QueryError(
            f"expected an operator (= != < <= > >= in like exists missing) after {str(field)!r}, "
            f"found {_shown(token)}",
            token.position,
        )

    def field(self) -> tuple[Field, int]:
        token = self.take()
        if token.kind != "word":
            raise QueryError(f"expected a field such as user.accuracy, found {_shown(token)}",
                             token.position)  # fmt: skip
        parts = [token.text]
        while self.token.text == ".":
            self.take()
            part = self.take()
            if part.kind not in ("word", "quoted", "keyword", "number"):
                raise QueryError(f"expected a key after '.', found {_shown(part)}", part.position)
            parts.append(str(part.value) if part.kind != "number" else part.text)
        if len(parts) == 1 and parts[0] not in self.fields:
            known = ", ".join(self.fields)
            raise QueryError(
                f"unknown field {parts[0]!r}: use one of {known}, or source.key for metadata",
                token.position,
            )
        return Field(parts[0], tuple(parts[1:])), token.position

    def values(self, field: Field, position: int) -> tuple[Any, ...]:
        self.expect("(", "'(' after in")
        items = [self.value(field, position, "in")]
        while self.token.text == ",":
            self.take()
            items.append(self.value(field, position, "in"))
        self.expect(")", "')' or ','")
        if len({kind_of_value(item) for item in items}) > 1:
            raise QueryError("the values of one in (...) list must be of one kind", position)
        return tuple(items)

    def value(self, field: Field, position: int, op: str) -> Any:
        token = self.take()
        if token.kind in ("number", "text") or (
            token.kind == "keyword" and token.value in _CONSTANTS
        ):
            value = _CONSTANTS[token.value] if token.kind == "keyword" else token.value
        else:
            raise QueryError(f"expected a value, found {_shown(token)}", token.position)
        if value is None and op not in ("=", "!="):
            raise QueryError("null is compared with = or != only", token.position)
        if not field.path and field.name in TIME_FIELDS and isinstance(value, str):
            return _time(value, token.position)
        return value


def _time(text: str, position: int) -> int:
    from datetime import datetime, timezone  # not loaded with zenmeta

    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise QueryError(f"{text!r} is not an ISO time such as '2026-12-01T09:30'",
                         position) from None  # fmt: skip
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    # Times are stored as 64-bit nanoseconds (up to the year 2262): clamp, so a
    # far date compares as "later than everything" instead of overflowing.
    return max(-(2**63), min(ns_of(moment), 2**63 - 1))


def _shown(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


def parse_filter(source: str, *, steps: bool = False) -> Filter:
    """Parse a ``where`` text for runs (or, with ``steps``, for steps)."""
    if not isinstance(source, str):
        raise TypeError(f"where takes a text filter, not {type(source).__name__}")
    if len(source) > _MAX_LENGTH:
        raise QueryError(f"a filter is at most {_MAX_LENGTH} characters", _MAX_LENGTH)
    if not source.strip():
        raise QueryError("the filter is empty", 0)
    return _Parser(source, STEP_FIELDS if steps else RUN_FIELDS).parse()


def parse_field(source: str) -> Field:
    """Parse one metadata field, ``source.key`` with dots into nested keys, as the
    filter language addresses it (the dashboard's chosen columns and chart)."""
    if not source.strip():
        raise QueryError("the field is empty", 0)
    if len(source) > _MAX_LENGTH:
        raise QueryError(f"a field is at most {_MAX_LENGTH} characters", _MAX_LENGTH)
    parser = _Parser(source, ())
    first = parser.token
    if first.kind == "word" and parser.tokens[1].kind == "end":
        raise QueryError(
            f"{first.text!r} is not metadata: name a source and a key, such as user.accuracy",
            first.position,
        )
    field, _ = parser.field()
    if parser.token.kind != "end":
        raise QueryError(f"expected the end of the field, found {_shown(parser.token)}",
                         parser.token.position)  # fmt: skip
    return field
