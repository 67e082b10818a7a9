"""Schema version 3: the indexes that find a metadata equality without a scan.

PostgreSQL gets a GIN index (``jsonb_path_ops``) on the metadata document;
SQLite a table of every top-level number and short text, kept by triggers
on the metadata table and filled here from the metadata already stored
(``indexes.py`` says why each). Nothing else changes: older readers ignore
them, and queries stay exact without them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from zenmeta._store.sql.indexes import create_indexes, drop_indexes

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_indexes(op.get_bind(), existing=True, step_rows=False)  # version 6 adds them


def downgrade() -> None:
    drop_indexes(op.get_bind())
