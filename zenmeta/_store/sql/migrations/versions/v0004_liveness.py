"""Schema version 4: liveness across machines (SCALE.md §3).

Runs gain the owner's ``process_id`` and steps the executing process, task
key and attempt (all nullable: rows written before read as local steps);
``zenmeta_step_starts`` holds the started records of remote steps until their
finished records arrive. ``zenmeta_processes`` (version 2) is now written.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("zenmeta_runs", sa.Column("process_id", sa.String(32)))
    op.add_column("zenmeta_steps", sa.Column("process_id", sa.String(32)))
    op.add_column("zenmeta_steps", sa.Column("task_key", sa.Text))
    op.add_column("zenmeta_steps", sa.Column("attempt", sa.Integer))
    op.create_table(
        "zenmeta_step_starts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("parent_step_id", sa.String(32)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("step_name", sa.Text, nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("process_id", sa.String(32), nullable=False),
        sa.Column("task_key", sa.Text),
        sa.Column("attempt", sa.Integer),
    )
    op.create_index("ix_zenmeta_step_starts_run", "zenmeta_step_starts", ["run_id", "start_ns"])


def downgrade() -> None:
    op.drop_index("ix_zenmeta_step_starts_run", "zenmeta_step_starts")
    op.drop_table("zenmeta_step_starts")
    op.drop_column("zenmeta_steps", "attempt")
    op.drop_column("zenmeta_steps", "task_key")
    op.drop_column("zenmeta_steps", "process_id")
    op.drop_column("zenmeta_runs", "process_id")
