"""Schema version 2: ``zenmeta_processes``, one row per writing process.

For the coming worker-liveness work (SCALE.md §3 rule 1): a process id
minted at start (not the pid), host, boot id, pid namespace, pid, start
time, heartbeat and clean-exit time. Nothing writes it yet.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zenmeta_processes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("boot_id", sa.Text),
        sa.Column("pid_namespace", sa.BigInteger),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("process_start", sa.Float),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("heartbeat_ns", sa.BigInteger),
        sa.Column("exit_ns", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("zenmeta_processes")
