"""A SQLite file opened directly, past zenmeta, and closed again. Shared by
the tests that read or damage a store's file by hand (not part of zenmeta).

``with sqlite3.connect(path) as db`` commits but does not close: the
connection is left to the garbage collector, which Python 3.13 reports as a
``ResourceWarning`` in whichever test happens to be running then.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager

__all__ = ["sqlite_file"]


@contextmanager
def sqlite_file(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A connection to ``path``: committed if the block succeeds, closed either way."""
    with closing(sqlite3.connect(path)) as connection, connection:
        yield connection
