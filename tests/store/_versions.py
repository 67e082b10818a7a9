"""Take a current store back to schema version 2 by hand, for upgrade tests.

What version-2 code left behind: no value index (version 3), no started
records or process columns (version 4), no metadata sets in step rows
(version 6). Shared by the migration tests and the index tests so each new
version is undone in one place.
"""

from __future__ import annotations

import sqlalchemy

from zenmeta._store.sql.indexes import drop_indexes

_VERSION_4_COLUMNS = [
    ("zenmeta_runs", "process_id"),
    ("zenmeta_steps", "process_id"),
    ("zenmeta_steps", "task_key"),
    ("zenmeta_steps", "attempt"),
]


def to_version_5(url: str) -> None:
    """What version-5 code left behind: every step's sets in zenmeta_metadata
    (migration 0006's own downgrade), and the version saying 5."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    from zenmeta._store.sql.migrations.versions import v0006_metadata_in_step_rows as v0006

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            with Operations.context(MigrationContext.configure(connection)):
                v0006.downgrade()
            connection.exec_driver_sql(
                "UPDATE zenmeta_schema SET value = '5' WHERE name = 'version'"
            )
            connection.exec_driver_sql("UPDATE zenmeta_alembic_version SET version_num = '0005'")
    finally:
        engine.dispose()


def to_version_2(url: str) -> None:
    to_version_5(url)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE zenmeta_step_starts")
            for table, column in _VERSION_4_COLUMNS:
                connection.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
            drop_indexes(connection)
            connection.exec_driver_sql(
                "UPDATE zenmeta_schema SET value = '2' WHERE name = 'version'"
            )
            connection.exec_driver_sql("UPDATE zenmeta_alembic_version SET version_num = '0002'")
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def to_version_4(url: str) -> None:
    """What version-4 code left behind on SQLite: the value index kept by an insert trigger."""
    from zenmeta._store.sql.indexes import INSERT_TRIGGER

    to_version_5(url)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(INSERT_TRIGGER)
            connection.exec_driver_sql(
                "UPDATE zenmeta_schema SET value = '4' WHERE name = 'version'"
            )
            connection.exec_driver_sql("UPDATE zenmeta_alembic_version SET version_num = '0004'")
    finally:
        engine.dispose()
