"""``where`` filters compiled into SQL, for SQLite's and PostgreSQL's JSON functions.

Each metadata term becomes an ``EXISTS`` over the entity's metadata set for
that source, guarded by the stored JSON type, so that ``user.accuracy >= 0.9``
never compares text with a number (SQLite would happily order ``'abc'``
above ``0.9``) and the answer is the one ``_filters.matches`` gives in
memory. Values and JSON paths are always bound parameters.

A run's ``crashed`` status is decided when it is read, not stored, so a term
on ``running`` or ``crashed`` is widened (or, under ``not``, narrowed) to
what the stored status can tell, and the caller checks those candidates
again in Python (``exact`` is then false).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Float,
    Numeric,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from ..._errors import QueryError
from ..._export import encodable_text
from ..._filters import (
    And,
    Compare,
    Field,
    Filter,
    Not,
    Or,
    compare_value,
    kind_of_value,
    like_parts,
)
from ..._records import CRASHED, RUNNING
from .indexes import INDEXED_TEXT, value_index
from .schema import metadata_sets, runs, steps

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement

__all__ = ["compile_filter"]

_SQLITE_KINDS = {"number": ("integer", "real"), "text": ("text",), "null": ("null",)}
_POSTGRES_KINDS = {"number": "number", "text": "string", "bool": "boolean", "null": "null"}
_ORDERING = ("<", "<=", ">", ">=")


def compile_filter(
    node: Filter, *, kind: str, dialect: str, in_row: bool = False
) -> tuple[ColumnElement[bool], bool]:
    """``node`` as a SQL condition on ``zenmeta_runs`` (``kind="run"``) or
    ``zenmeta_steps``, and whether that condition is exact. ``in_row``: the
    store's step rows may hold a metadata set (schema version 6)."""
    compiler = _Compiler(kind, dialect, in_row=in_row and kind == "step")
    return compiler.clause(node, positive=True), compiler.exact


class _Compiler:
    def __init__(self, kind: str, dialect: str, *, in_row: bool) -> None:
        self.kind = kind
        self.table: Table = runs if kind == "run" else steps
        self.postgres = dialect == "postgresql"
        self.in_row = in_row
        self.exact = True

    def clause(self, node: Filter, *, positive: bool) -> ColumnElement[bool]:
        if isinstance(node, And):
            return and_(*(self.clause(term, positive=positive) for term in node.terms))
        if isinstance(node, Or):
            return or_(*(self.clause(term, positive=positive) for term in node.terms))
        if isinstance(node, Not):
            return not_(self.clause(node.term, positive=not positive))
        if node.field.path:
            return self.metadata(node)
        if node.field.name == "tag":
            return self.tag(node)
        if node.field.name == "status" and self.kind == "run":
            return self.status(node, positive=positive)
        return self.record_field(node)

    # -- the record's own columns -------------------------------------------
    def record_field(self, node: Compare) -> ColumnElement[bool]:
        table, name = self.table, node.field.name
        if name == "duration":
            ended = table.c.end_ns.isnot(None)
            if node.op in ("exists", "missing"):
                return ended if node.op == "exists" else not_(ended)
            value: Any = cast(table.c.end_ns - table.c.start_ns, Float) / 1e9
            return and_(ended, self.compare(value, "number", node))
        if node.op in ("exists", "missing"):
            return true() if node.op == "exists" else false()
        if name == "start_time":
            return self.compare(table.c.start_ns, "number", node)
        column = {"pipeline": "pipeline_name", "step": "step_name"}.get(name, name)
        return self.compare(table.c[column], "text", node)

    def status(self, node: Compare, *, positive: bool) -> ColumnElement[bool]:
        """Stored ``running`` may read ``crashed``: decide only what the column can."""
        stored = self.record_field(node)
        if node.op in ("exists", "missing") or (
            compare_value(RUNNING, node.op, node.value)
            == compare_value(CRASHED, node.op, node.value)
        ):
            return stored  # a stored running run passes exactly when it would as crashed
        self.exact = False
        if positive:  # a superset: every stored running run is a candidate
            return or_(stored, self.table.c.status == RUNNING)
        return and_(stored, self.table.c.status != RUNNING)  # a subset: only the certain

    def tag(self, node: Compare) -> ColumnElement[bool]:
        if node.op in ("exists", "missing"):
            return true() if node.op == "exists" else false()
        tags = self.table.c.tags
        if self.postgres:
            each = func.jsonb_array_elements_text(cast(tags, JSONB)).table_valued("value")
        else:
            each = func.json_each(tags).table_valued("value")
        return (
            select(literal(1))
            .select_from(each)
            .where(self.compare(each.c.value, "text", node))
            .exists()
        )

    # -- metadata -------------------------------------------------------------
    def metadata(self, node: Compare) -> ColumnElement[bool]:
        field = node.field
        document = metadata_sets.alias("m")
        wanted = _indexable(node, numbers=self.postgres)
        tested = (
            document.c.entity_kind == self.kind,
            document.c.source == field.name,
            self.document_test(document.c.document, node, wanted),
        )
        found: ColumnElement[bool]
        if self.in_row and self.postgres:
            # Both places as one set of ids: PostgreSQL then finds each part
            # through its GIN index and joins once. OR-ed with a test on the
            # step row itself, it read every step row (1M steps: 383 ms for
            # one equality, against 3.6 ms).
            held = steps.alias("s")
            found = self.table.c.id.in_(
                union_all(
                    select(document.c.entity_id).where(*tested),
                    select(held.c.id).where(
                        held.c.source == field.name,
                        self.document_test(held.c.document, node, wanted),
                    ),
                )
            )
        else:
            found = (
                select(literal(1)).where(document.c.entity_id == self.table.c.id, *tested).exists()
            )
            if self.in_row:  # a step row holding its set (schema version 6)
                row = self.table.c
                found = or_(
                    found,
                    and_(row.source == field.name, self.document_test(row.document, node, wanted)),
                )
        if wanted and not self.postgres and len(field.path) == 1:
            found = and_(self.candidates(field, wanted), found)
        return not_(found) if node.op == "missing" else found

    def document_test(
        self, column: Any, node: Compare, wanted: tuple[Any, ...]
    ) -> ColumnElement[bool]:
        """``node``'s test on one stored document (``column``)."""
        field = node.field
        json_type, value, text_value = self.json_path(column, field)
        if node.op in ("exists", "missing"):
            condition: ColumnElement[bool] = json_type.isnot(None)
        else:
            condition = self.typed(json_type, value, text_value, node)
        if wanted and self.postgres and not any(key.isdigit() for key in field.path):
            # Containment, which the GIN index answers; the typed test stays exact.
            condition = and_(or_(*(column.op("@>")(_containing(field, value))
                                   for value in wanted)), condition)  # fmt: skip
        return condition

    def candidates(self, field: Field, wanted: tuple[Any, ...]) -> ColumnElement[bool]:
        """The entities SQLite's value index holds ``field`` = one of ``wanted`` for:
        a superset of the exact answer, found through the index, not a scan."""
        values = value_index.c
        return self.table.c.id.in_(
            select(values.entity_id).where(
                values.entity_kind == self.kind,
                values.source == field.name,
                values.key == field.path[0],
                values.value.in_([bindparam(None, value) for value in wanted])
                if len(wanted) > 1
                else values.value == bindparam(None, wanted[0]),
            )
        )

    def json_path(self, column: Any, field: Field) -> tuple[Any, Any, Any]:
        """The stored JSON type of the value at ``field``'s path, and the value."""
        if self.postgres:
            path = bindparam(None, list(field.path), type_=ARRAY(Text))
            document = cast(column, JSONB)
            return (
                func.jsonb_typeof(document.op("#>")(path)),
                document.op("#>")(path),
                document.op("#>>", return_type=Text)(path),
            )
        for key in field.path:
            if '"' in key:
                raise QueryError(f"a key with a double quote cannot be queried: {key!r}", 0)
        text_path = "$" + "".join(f'."{key}"' for key in field.path)
        return func.json_type(column, text_path), func.json_extract(column, text_path), None

    def typed(self, json_type: Any, value: Any, text_value: Any, node: Compare) -> Any:
        """``value op wanted`` for a stored value whose JSON type fits the wanted kind."""
        wanted, op = node.value, node.op
        if op in ("in", "not in"):
            kind = kind_of_value(wanted[0])
            hits = or_(*(self.typed(json_type, value, text_value, _eq(node, item))
                         for item in wanted))  # fmt: skip
            return hits if op == "in" else and_(self.is_kind(json_type, kind), not_(hits))
        if wanted is None:
            is_null = self.is_kind(json_type, "null")
            return is_null if op == "=" else and_(json_type.isnot(None), not_(is_null))
        kind = kind_of_value(wanted)
        if kind is None:
            return false()
        if kind == "bool":
            if op not in ("=", "!="):
                return false()
            if self.postgres:
                same = text_value == ("true" if wanted else "false")
                return and_(json_type == "boolean", same if op == "=" else not_(same))
            return json_type == ("true" if (wanted if op == "=" else not wanted) else "false")
        if self.postgres:
            stored = cast(text_value, Numeric) if kind == "number" else text_value
            guarded = case((json_type == _POSTGRES_KINDS[kind], stored), else_=None)
            return and_(self.is_kind(json_type, kind), self.compare(guarded, kind, node))
        return and_(self.is_kind(json_type, kind), self.compare(value, kind, node))

    def is_kind(self, json_type: Any, kind: str | None) -> Any:
        if kind is None:
            return false()
        if self.postgres:
            return json_type == _POSTGRES_KINDS[kind]
        if kind == "bool":
            return json_type.in_(("true", "false"))
        return json_type.in_(_SQLITE_KINDS[kind])

    # -- one comparison ---------------------------------------------------------
    def compare(self, column: Any, kind: str, node: Compare) -> ColumnElement[bool]:
        """``column op value`` when the value is of ``kind``; false otherwise."""
        op, wanted = node.op, node.value
        if self.postgres and kind == "text":  # as the store wrote text it cannot hold
            wanted = tuple(map(_pg_text, wanted)) if op in ("in", "not in") else _pg_text(wanted)
        if op in ("in", "not in"):
            if kind_of_value(wanted[0]) != kind:
                return false()
            hits: ColumnElement[bool] = column.in_([bindparam(None, item) for item in wanted])
            return hits if op == "in" else not_(hits)
        if wanted is None:
            return false() if op == "=" else true()
        if kind_of_value(wanted) != kind:
            return false()
        if kind == "text" and self.postgres:
            column = column.collate("C")  # code-point order, as Python compares text
        if op == "like":
            matched: ColumnElement[bool]
            if self.postgres:
                matched = column.like(bindparam(None, _postgres_like(wanted)))
            else:
                matched = column.op("GLOB", is_comparison=True)(bindparam(None, _glob(wanted)))
            return matched
        parameter: Any = bindparam(None, wanted)
        compared: ColumnElement[bool] = {
            "=": column == parameter,
            "!=": column != parameter,
            "<": column < parameter,
            "<=": column <= parameter,
            ">": column > parameter,
            ">=": column >= parameter,
        }[op]
        return compared


def _indexable(node: Compare, *, numbers: bool) -> tuple[Any, ...]:
    """The values an ``=`` or ``in`` term asks for, when an index holds every
    stored value equal to them (``indexes.py``): short text, and on PostgreSQL
    finite numbers within a double's exact range too; empty when no index can
    answer (the term then reads the documents)."""
    if node.op == "=":
        wanted: tuple[Any, ...] = (node.value,)
    elif node.op == "in":
        wanted = tuple(node.value)
    else:
        return ()
    for value in wanted:
        kind = kind_of_value(value)
        if kind == "number" and numbers and abs(value) < 2**53:
            continue
        if kind == "text" and len(value) <= INDEXED_TEXT and "\x00" not in value:
            continue
        return ()
    return wanted


def _containing(field: Field, value: Any) -> Any:
    """``{"key": {"nested": value}}`` as JSONB, for ``document @> …``."""
    nested: Any = _pg_text(value)
    for key in reversed(field.path):
        nested = {key: nested}
    return cast(bindparam(None, json.dumps(nested), type_=Text), JSONB)


def _eq(node: Compare, value: Any) -> Compare:
    return Compare(node.field, "=", value)


def _glob(pattern: str) -> str:
    """A ``like`` pattern as SQLite's GLOB, which is case-sensitive as LIKE is not."""
    spelled = {None: "*", "": "?", "*": "[*]", "?": "[?]", "[": "[[]"}
    return "".join(spelled.get(part, part) or "" for part in like_parts(pattern))


def _pg_text(value: Any) -> Any:
    """Text as PostgreSQL holds it: a NUL or a lone surrogate as its visible escape."""
    if not isinstance(value, str):
        return value
    return encodable_text(value.replace("\x00", "\\u0000"))


def _postgres_like(pattern: str) -> str:
    """PostgreSQL refuses a pattern that ends in its escape character: double it."""
    trailing = len(pattern) - len(pattern.rstrip("\\"))
    return pattern + "\\" if trailing % 2 else pattern
