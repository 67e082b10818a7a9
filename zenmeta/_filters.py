"""A parsed ``where`` filter, and how a record in memory is judged by it.

The readers parse ``"user.accuracy >= 0.9 and environment.git_commit = 'abc'"``
into these nodes; the SQL store compiles them into its own query language and
the memory store (and the SQL store, for the few atoms only Python can
decide: a run's ``crashed`` status is judged on read) calls ``matches``. Both
follow one rule, so every store gives the same answer:

- a comparison is true only when the field exists and its value is of the
  compared kind: numbers with numbers (``int`` and ``float`` alike, a
  ``StorageSize`` as its bytes; never ``bool``, NaN or an infinity), text
  with text (a ``Uri``, ``Path`` or ``DType`` is text), booleans with
  ``true``/``false``; ``= null`` matches a stored ``None``, ``!= null`` any
  other value;
- ``like`` matches text, ``%`` any run of characters, ``_`` one, ``\\`` escapes;
  case-sensitive everywhere;
- ``exists``/``missing`` test only presence; ``not`` negates the whole term,
  so ``not user.accuracy >= 0.9`` includes runs that never logged it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from datetime import datetime

    from ._records import RecordedRun, RecordedStep

__all__ = [
    "Field",
    "Compare",
    "And",
    "Or",
    "Not",
    "Filter",
    "RUN_FIELDS",
    "STEP_FIELDS",
    "matches",
    "compare_value",
    "kind_of_value",
    "like_parts",
    "like_regex",
    "ns_of",
]

RUN_FIELDS = ("name", "pipeline", "status", "tag", "host", "start_time", "duration")
STEP_FIELDS = ("name", "step", "status", "start_time", "duration")
TIME_FIELDS = ("start_time",)


class Field(NamedTuple):
    """``status`` (a record's own field) or ``user.config.lr`` (metadata)."""

    name: str
    """A record field's name, or the metadata source."""
    path: tuple[str, ...] = ()
    """The key and any nested keys; empty for a record field."""

    @property
    def is_metadata(self) -> bool:
        return bool(self.path)

    def __str__(self) -> str:
        return ".".join((self.name, *self.path))


class Compare(NamedTuple):
    """One term: ``field op value``; ``value`` is a tuple for ``in``/``not in``."""

    field: Field
    op: str  # = != < <= > >= like in "not in" exists missing
    value: Any = None


class And(NamedTuple):
    terms: tuple[Filter, ...]


class Or(NamedTuple):
    terms: tuple[Filter, ...]


class Not(NamedTuple):
    term: Filter


Filter = Compare | And | Or | Not


def kind_of_value(value: Any) -> str | None:
    """``number``, ``text``, ``bool`` or ``null``: what a value compares as; ``None``
    for a value no comparison matches (containers, NaN and infinities)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "number"
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "text"
    return None


_MISSING = object()


def matches(node: Filter, record: RecordedRun | RecordedStep) -> bool:
    """Whether ``record`` (a run or a step, types restored) passes ``node``."""
    if isinstance(node, And):
        return all(matches(term, record) for term in node.terms)
    if isinstance(node, Or):
        return any(matches(term, record) for term in node.terms)
    if isinstance(node, Not):
        return not matches(node.term, record)
    found = _lookup(node.field, record)
    if node.op == "exists":
        return found is not _MISSING
    if node.op == "missing":
        return found is _MISSING
    if found is _MISSING:
        return False
    if node.field.name == "tag" and not node.field.path:
        return any(compare_value(tag, node.op, node.value) for tag in found)
    return compare_value(found, node.op, node.value)


def _lookup(field: Field, record: Any) -> Any:
    if field.path:
        values: Any = record.metadata.get(field.name, _MISSING)
        for key in field.path:
            if not isinstance(values, Mapping) or key not in values:
                return _MISSING
            values = values[key]
        return values
    name = field.name
    if name == "pipeline":
        return record.pipeline_name
    if name == "step":
        return record.step_name
    if name == "tag":
        return record.tags
    if name == "start_time":
        return ns_of(record.start_time)
    if name == "duration":
        duration = record.duration
        return _MISSING if duration is None else duration
    return getattr(record, name)


def compare_value(found: Any, op: str, wanted: Any) -> bool:
    """One term on one value, by the rule this module's docstring states."""
    if op in ("in", "not in"):
        hit = any(compare_value(found, "=", item) for item in wanted)
        if op == "in":
            return hit
        return not hit and any(kind_of_value(found) == kind_of_value(item) for item in wanted)
    kind = kind_of_value(wanted)
    if wanted is None:  # = null / != null
        return (found is None) if op == "=" else (found is not None)
    if kind_of_value(found) != kind:
        return False
    if op == "like":
        return like_regex(wanted).fullmatch(found) is not None
    if op == "=":
        return bool(found == wanted)
    if op == "!=":
        return bool(found != wanted)
    if kind == "bool":
        return False  # booleans are equal or not; never ordered
    if op == "<":
        return bool(found < wanted)
    if op == "<=":
        return bool(found <= wanted)
    if op == ">":
        return bool(found > wanted)
    return bool(found >= wanted)


def like_parts(pattern: str) -> list[str | None]:
    """A ``like`` pattern read once for every store: ``None`` for ``%`` (any run
    of characters), ``""`` for ``_`` (one), else one literal character
    (``\\`` escapes the next; a trailing one is itself)."""
    parts: list[str | None] = []
    escaped = False
    for char in pattern:
        if escaped:
            parts.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            parts.append(None if char == "%" else "" if char == "_" else char)
    if escaped:
        parts.append("\\")
    return parts


def like_regex(pattern: str) -> re.Pattern[str]:
    """A ``like`` pattern as a regular expression (for the memory store)."""
    spelled = {None: ".*", "": "."}
    return re.compile(
        "".join(spelled.get(part) or re.escape(part or "") for part in like_parts(pattern)),
        re.DOTALL,
    )


def ns_of(moment: datetime) -> int:
    """Nanoseconds since the epoch, as the stores keep times; naive means UTC."""
    if moment.tzinfo is None:
        from datetime import timezone  # not loaded with zenmeta

        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000) * 1000
