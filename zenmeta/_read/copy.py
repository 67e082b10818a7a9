"""``copy_store``: capture offline on a laptop or an HPC node, then push the
runs to the team store (or pull them back), from Python or ``zenmeta store copy``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._store import CopyCounts
from .._store import copy_store as _copy_store

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["copy_store", "CopyCounts"]


def copy_store(source: str, target: str, *, since: datetime | None = None) -> CopyCounts:
    """Copy every run from the store at ``source`` to the store at ``target``,
    with its steps and metadata, ids and types kept; only runs that started
    at or after ``since`` (a naive time is UTC) when it is given.

    Either store may be SQLite or PostgreSQL. Copying again is safe and
    cheap: steps already in the target are skipped, so a second copy adds
    nothing, and a run that was still running at the first copy gets its
    later steps and its final status. Returns what was written to ``target``.
    """
    since_ns = None
    if since is not None:
        from datetime import timezone

        if since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        since_ns = min(int(since.timestamp() * 1_000_000) * 1000, 2**63 - 1)  # past 2262: none
    return _copy_store(source, target, since_ns)
