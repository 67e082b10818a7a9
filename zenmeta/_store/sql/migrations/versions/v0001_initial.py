"""Schema version 1: runs, steps, metadata sets and the schema's version.

Created by ``tables.create_all`` in zenmeta releases before migrations
existed; a version-1 store is stamped with this revision, never rebuilt.

Revision ID: 0001
"""

from __future__ import annotations

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to do: version 1 is where every store starts."""


def downgrade() -> None:
    """Nothing below version 1."""
