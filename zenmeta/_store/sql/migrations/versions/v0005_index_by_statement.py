"""Schema version 5: SQLite's value index is filled by the sessions that
insert metadata, one statement per insert, instead of a trigger per row
(``indexes.py`` says what that saves). Nothing changes on PostgreSQL; the
version moves there too, so that a version-4 zenmeta, which relies on the
trigger, never writes a store that no longer has it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

from zenmeta._store.sql.indexes import INSERT_TRIGGER, fill_index

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS zenmeta_metadata_values_insert")


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "sqlite":
        op.execute(INSERT_TRIGGER)
        fill_index(connection)  # rows a session wrote have their entries; any other, now
