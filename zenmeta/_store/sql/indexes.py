"""The indexes that let a metadata equality find its runs and steps without a scan.

``environment.git_commit = 'abc'`` or ``mlflow.mlflow_run_id = 'f3…'`` must
not read every metadata document of a million-step store (measured: 2.5 s on
SQLite, longer on PostgreSQL, for one step). Each database gets the index
that fits it, created with the tables of a new store and by migration 0003
for an existing one:

- PostgreSQL: a GIN index (``jsonb_path_ops``) on the metadata document, which
  answers containment, ``document @> '{"git_commit": "abc"}'``, for any key at
  any depth;
- SQLite has no such index, so a table of every top-level short text of
  every metadata set, one row per (entity, source, key). Every session that
  inserts metadata rows (``sessions.py``: the writer's, a sync's, a copy's)
  fills it for them in the same transaction, with one statement per insert
  (``INDEX_INSERTED``); a trigger on updates keeps it right when a value is
  rewritten (a secret masked after the fact), and deleted runs leave no
  entry once the deletion is done (``forget_runs``). Numbers, booleans,
  nulls, containers and text over ``INDEXED_TEXT`` characters are left
  out: their equalities read the documents, as before.

  Until schema version 5 a trigger on inserts filled it, row by row: that
  cost the writer 3.1 µs of SQLite's time per step with metadata, against
  1.2 µs for one statement over the whole batch, and was a third of what a
  million-step loop waited for (``bench_store.py --million --metadata
  --without text-index``). Older zenmeta refuses a version-5 store, so no
  writer that relies on the trigger is left.

The index only narrows: the query keeps its exact, type-guarded test
(``query.py``), so an answer never depends on whether an index was used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Column, MetaData, String, Table, Text, text

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "INDEXED_TEXT",
    "value_index",
    "create_indexes",
    "drop_indexes",
    "forget_runs",
    "fill_index",
    "INDEX_INSERTED",
    "INSERT_TRIGGER",
    "STEPS_INSERTED",
    "UNGUARDED",
    "STEP_ROW_INDEX",
    "STEP_ROW_TRIGGER",
    "SQLITE",
    "POSTGRES",
]

INDEXED_TEXT = 200
"""Text up to this many characters is in SQLite's value index; longer text scans."""

value_index = Table(  # SQLite only: created by the DDL below, never by create_all
    "zenmeta_metadata_values",
    MetaData(),
    Column("entity_kind", String(8), primary_key=True),
    Column("source", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, primary_key=True),
    Column("entity_id", String(32), primary_key=True),
    Column("run_id", String(32), nullable=False),
)

# What a document puts into the index: its top-level text values up to
# INDEXED_TEXT characters. Numbers stay out: an equality on a number is rare
# (ranges are the common test, and no value index serves them), and each
# entry is paid for by every write. ``{kind}`` and ``{entity}`` differ between
# a ``zenmeta_metadata`` row and a step row holding its set (version 6).
_ENTRIES = f"""
    SELECT {{kind}}, {{row}}.source, j.key, j.value, {{entity}}, {{row}}.run_id
    FROM json_each(CASE WHEN json_valid({{row}}.document) THEN {{row}}.document ELSE '{{{{}}}}' END)
         AS j
    WHERE typeof(j.key) = 'text' AND j.type = 'text' AND length(j.value) <= {INDEXED_TEXT}
"""
_GUARD = "CASE WHEN json_valid({row}.document) THEN {row}.document ELSE '{{}}' END"
_KEY = "(entity_kind, source, key, value, entity_id)"
_COLUMNS = "(entity_kind, source, key, value, entity_id, run_id)"


def _entries(row: str, *, step_row: bool = False) -> str:
    if step_row:
        return _ENTRIES.format(row=row, kind="'step'", entity=f"{row}.id")
    return _ENTRIES.format(row=row, kind=f"{row}.entity_kind", entity=f"{row}.entity_id")


def _add(row: str, *, step_row: bool = False) -> str:
    entries = _entries(row, step_row=step_row)
    return f"INSERT OR IGNORE INTO zenmeta_metadata_values {_COLUMNS} {entries};"


def _remove(row: str, *, step_row: bool = False) -> str:
    return (
        f"DELETE FROM zenmeta_metadata_values WHERE {_COLUMNS} IN "
        f"({_entries(row, step_row=step_row)});"
    )


INSERT_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS zenmeta_metadata_values_insert AFTER INSERT ON "
    f"zenmeta_metadata BEGIN {_add('NEW')} END"
)
"""Schema versions 3 and 4 kept the index with it (migration 0005 drops it)."""

STEP_ROW_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS zenmeta_steps_values_update AFTER UPDATE OF document "
    f"ON zenmeta_steps BEGIN {_remove('OLD', step_row=True)} {_add('NEW', step_row=True)} END"
)
"""Keeps the entries of a set held in its step row right when it is rewritten."""

SQLITE = (
    # Keyed by what is looked up, so that the table is its only B-tree: a
    # lookup is one range of it, a write one insert per entry.
    f"""CREATE TABLE IF NOT EXISTS zenmeta_metadata_values (
        entity_kind VARCHAR(8) NOT NULL,
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        entity_id VARCHAR(32) NOT NULL,
        run_id VARCHAR(32) NOT NULL,
        PRIMARY KEY {_KEY}
    ) WITHOUT ROWID""",
    "CREATE TRIGGER IF NOT EXISTS zenmeta_metadata_values_update AFTER UPDATE OF document "
    f"ON zenmeta_metadata BEGIN {_remove('OLD')} {_add('NEW')} END",
)
"""The value index and the trigger that keeps it for metadata rows (version 3;
a new store also gets ``STEP_ROW_TRIGGER``)."""

_SQLITE_FILL = f"INSERT OR IGNORE INTO zenmeta_metadata_values {_COLUMNS} " + _entries("m").replace(
    "FROM json_each", "FROM zenmeta_metadata AS m, json_each"
)

_STEPS_FILL = (
    f"INSERT OR IGNORE INTO zenmeta_metadata_values {_COLUMNS} "
    + _entries("m", step_row=True).replace("FROM json_each", "FROM zenmeta_steps AS m, json_each")
    + " AND m.document IS NOT NULL"
)

INDEX_INSERTED = _SQLITE_FILL + " AND m.rowid > last_insert_rowid() - ?"
"""The entries of the last ``?`` rows inserted into ``zenmeta_metadata`` by
this connection, run right after they are: a row without an explicit rowid
gets the table's largest plus one, so those rows are the last ``?`` rowids
up to ``last_insert_rowid()`` (which an insert into the index, a table
without rowids, leaves as it was)."""

STEPS_INSERTED = _STEPS_FILL + " AND m.rowid > last_insert_rowid() - ?"
"""The same for the last ``?`` rows inserted into ``zenmeta_steps``: the sets
their rows hold (a step row without one has no entries)."""

UNGUARDED = {
    fill: fill.replace(_GUARD.format(row="m"), "m.document")
    for fill in (INDEX_INSERTED, STEPS_INSERTED)
}
"""Each fill without its ``json_valid`` guard, which parses every document a
second time: a third of SQLite's work for a step logging 3 values (17k of
its 26k instructions a step go to the fill, 4.8k of them to the guard;
valgrind, ``count_instructions.py --drain``). The writer's own documents
are JSON always; a copied one may not be, and then ``json_each`` raises
"malformed JSON", the entries written so far stay (a failing statement is
not undone inside a transaction), and the guarded fill runs after it: ``OR
IGNORE`` skips what is there, so the entries come out the same."""

STEP_ROW_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_zenmeta_steps_document ON zenmeta_steps "
    "USING gin (document jsonb_path_ops)"
)
"""Containment on the sets step rows hold (version 6), for PostgreSQL."""

POSTGRES = (
    "CREATE INDEX IF NOT EXISTS ix_zenmeta_metadata_document ON zenmeta_metadata "
    "USING gin (document jsonb_path_ops)",
)
"""The containment index on metadata rows (version 3; a new store also gets
``STEP_ROW_INDEX``)."""


def create_indexes(
    connection: Connection, *, existing: bool = False, step_rows: bool = True
) -> None:
    """Create this database's index; with ``existing``, also fill it from the
    metadata already stored (an upgraded store). ``step_rows``: the steps
    table holds sets too (version 6; migration 0003 runs before it does)."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        for statement in (*SQLITE, STEP_ROW_TRIGGER) if step_rows else SQLITE:
            connection.execute(text(statement))
        if existing:
            fill_index(connection)
    elif dialect == "postgresql":
        for statement in (*POSTGRES, STEP_ROW_INDEX) if step_rows else POSTGRES:
            connection.execute(text(statement))


def fill_index(connection: Connection) -> None:
    """Index every metadata set stored (what is indexed already is kept)."""
    connection.execute(text(_SQLITE_FILL))
    if "document" in _columns(connection, "zenmeta_steps"):
        connection.execute(text(_STEPS_FILL))


def _columns(connection: Connection, table: str) -> set[str]:
    return {row[1] for row in connection.execute(text(f"PRAGMA table_info({table})"))}


def forget_runs(connection: Connection, run_ids: Sequence[str]) -> None:
    """Remove the index entries of deleted runs, in one pass over the index.

    Deleting a document does not remove its entries (no delete trigger): its
    values are random all over the index, and removing them row by row, batch
    by batch, made ``gc`` of 50,000 runs take 86 s instead of 17 s. A stale
    entry is harmless meanwhile — the index only proposes candidates, which
    the query then tests against the stored documents — and the retention
    code calls this once it has deleted runs, so nothing of them stays."""
    if connection.dialect.name != "sqlite" or not run_ids:
        return
    connection.execute(text("CREATE TEMP TABLE IF NOT EXISTS zenmeta_gone (id TEXT PRIMARY KEY)"))
    connection.execute(text("DELETE FROM temp.zenmeta_gone"))
    connection.execute(
        text("INSERT OR IGNORE INTO temp.zenmeta_gone (id) VALUES (:id)"),
        [{"id": run_id} for run_id in run_ids],
    )
    connection.execute(
        text(
            "DELETE FROM zenmeta_metadata_values WHERE run_id IN (SELECT id FROM temp.zenmeta_gone)"
        )
    )
    connection.execute(text("DELETE FROM temp.zenmeta_gone"))


def drop_indexes(connection: Connection) -> None:
    """Remove them again (a downgrade)."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        for name in ("insert", "delete", "update"):
            connection.execute(text(f"DROP TRIGGER IF EXISTS zenmeta_metadata_values_{name}"))
        connection.execute(text("DROP TRIGGER IF EXISTS zenmeta_steps_values_update"))
        connection.execute(text("DROP TABLE IF EXISTS zenmeta_metadata_values"))
    elif dialect == "postgresql":
        connection.execute(text("DROP INDEX IF EXISTS ix_zenmeta_metadata_document"))
        connection.execute(text("DROP INDEX IF EXISTS ix_zenmeta_steps_document"))
