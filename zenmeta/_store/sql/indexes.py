"""The indexes that let a metadata equality find its runs and steps without a scan.

``environment.git_commit = 'abc'`` or ``mlflow.mlflow_run_id = 'f3…'`` must
not read every metadata document of a million-step store (measured: 2.5 s on
SQLite, longer on PostgreSQL, for one step). Each database gets the index
that fits it, created with the tables of a new store and by migration 0003
for an existing one:

- PostgreSQL: a GIN index (``jsonb_path_ops``) on the metadata document, which
  answers containment, ``document @> '{"git_commit": "abc"}'``, for any key at
  any depth;
- SQLite has no such index, so a table of every top-level number and short
  text of every metadata set, one row per (entity, source, key), kept by
  triggers on the metadata table: whoever writes the store — the writer, a
  sync, a copy, an older zenmeta on the same file — keeps it whole, and the
  writer's Python path costs nothing more. Booleans, nulls, containers and
  text over ``INDEXED_TEXT`` characters are left out (their equalities scan).

The index only narrows: the query keeps its exact, type-guarded test
(``query.py``), so an answer never depends on whether an index was used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Column, MetaData, String, Table, Text, text

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["INDEXED_TEXT", "value_index", "create_indexes", "drop_indexes", "SQLITE", "POSTGRES"]

INDEXED_TEXT = 200
"""Text up to this many characters is in SQLite's value index; longer text scans."""

value_index = Table(  # SQLite only: created by the DDL below, never by create_all
    "zenmeta_metadata_values",
    MetaData(),
    Column("entity_id", String(32), primary_key=True),
    Column("source", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("entity_kind", String(8), nullable=False),
    Column("value"),  # no affinity: an integer, a real or a text, as json_each gives it
)

_NEW_VALUES = f"""
    INSERT OR IGNORE INTO zenmeta_metadata_values (entity_id, source, key, entity_kind, value)
    SELECT NEW.entity_id, NEW.source, j.key, NEW.entity_kind, j.value
    FROM json_each(CASE WHEN json_valid(NEW.document) THEN NEW.document ELSE '{{}}' END) AS j
    WHERE typeof(j.key) = 'text' AND (j.type IN ('integer', 'real')
                                      OR (j.type = 'text' AND length(j.value) <= {INDEXED_TEXT}));
"""
_OLD_VALUES = """
    DELETE FROM zenmeta_metadata_values
    WHERE entity_id = OLD.entity_id AND source = OLD.source;
"""

SQLITE = (
    """CREATE TABLE IF NOT EXISTS zenmeta_metadata_values (
        entity_id VARCHAR(32) NOT NULL,
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        entity_kind VARCHAR(8) NOT NULL,
        value,
        PRIMARY KEY (entity_id, source, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS ix_zenmeta_metadata_values ON zenmeta_metadata_values "
    "(entity_kind, source, key, value)",
    f"CREATE TRIGGER IF NOT EXISTS zenmeta_metadata_values_insert AFTER INSERT ON zenmeta_metadata "
    f"BEGIN {_NEW_VALUES} END",
    f"CREATE TRIGGER IF NOT EXISTS zenmeta_metadata_values_delete AFTER DELETE ON zenmeta_metadata "
    f"BEGIN {_OLD_VALUES} END",
    f"CREATE TRIGGER IF NOT EXISTS zenmeta_metadata_values_update AFTER UPDATE ON zenmeta_metadata "
    f"BEGIN {_OLD_VALUES} {_NEW_VALUES} END",
)
"""The value index and the triggers that keep it, for a new SQLite store."""

_SQLITE_FILL = _NEW_VALUES.replace("NEW.", "m.").replace(
    "FROM json_each", "FROM zenmeta_metadata AS m, json_each"
)

POSTGRES = (
    "CREATE INDEX IF NOT EXISTS ix_zenmeta_metadata_document ON zenmeta_metadata "
    "USING gin (document jsonb_path_ops)",
)
"""The containment index, for a new PostgreSQL store."""


def create_indexes(connection: Connection, *, existing: bool = False) -> None:
    """Create this database's index; with ``existing``, also fill it from the
    metadata already stored (an upgraded store)."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        for statement in SQLITE:
            connection.execute(text(statement))
        if existing:
            connection.execute(text(_SQLITE_FILL))
    elif dialect == "postgresql":
        for statement in POSTGRES:
            connection.execute(text(statement))


def drop_indexes(connection: Connection) -> None:
    """Remove them again (a downgrade)."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        for name in ("insert", "delete", "update"):
            connection.execute(text(f"DROP TRIGGER IF EXISTS zenmeta_metadata_values_{name}"))
        connection.execute(text("DROP TABLE IF EXISTS zenmeta_metadata_values"))
    elif dialect == "postgresql":
        connection.execute(text("DROP INDEX IF EXISTS ix_zenmeta_metadata_document"))
