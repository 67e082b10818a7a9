"""Schema version 6: a step written on the plain path keeps its one metadata
set in its own row (``source``, ``document``, ``types``) instead of a row of
``zenmeta_metadata``: one table, two B-trees and one statement fewer for the
writer per batch of such steps (``rows.add_plain_rows``). Steps stored before
keep their sets where they are; readers look in both places. SQLite's value
index gets the trigger that keeps a rewritten step-row set right; PostgreSQL
the containment index on it; both the view ``zenmeta_all_metadata``, every
set in one place for SQL written by hand.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from zenmeta._store.sql.indexes import STEP_ROW_INDEX, STEP_ROW_TRIGGER
from zenmeta._store.sql.schema import create_views

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("zenmeta_steps", sa.Column("source", sa.Text))
    op.add_column(
        "zenmeta_steps", sa.Column("document", sa.Text().with_variant(JSONB(), "postgresql"))
    )
    op.add_column("zenmeta_steps", sa.Column("types", sa.Text))
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(STEP_ROW_TRIGGER)
    elif dialect == "postgresql":
        op.execute(STEP_ROW_INDEX)
    create_views(op.get_bind())


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW IF EXISTS zenmeta_all_metadata")
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS zenmeta_steps_values_update")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_zenmeta_steps_document")
    # Sets held in step rows move to zenmeta_metadata, where version 5 reads them.
    op.execute(
        "INSERT INTO zenmeta_metadata (entity_id, source, entity_kind, run_id, position, "
        "document, types) SELECT id, source, 'step', run_id, 0, document, types "
        "FROM zenmeta_steps WHERE document IS NOT NULL"
    )
    op.drop_column("zenmeta_steps", "types")
    op.drop_column("zenmeta_steps", "document")
    op.drop_column("zenmeta_steps", "source")
