"""``ClosingQueuePool``: the pool every store engine uses, so that giving the
store's connections back never leaves one for the garbage collector.

``Engine.dispose()`` (an idle writer retiring, a store released or closed)
closes the idle connections of the engine's pool and starts a new pool. A
connection checked out at that moment — a read on the caller's thread while
the writer thread retires — is later given back to the old pool, and
SQLAlchemy's ``QueuePool`` keeps it there, open: only the garbage collector
closes it, and psycopg then warns (``ResourceWarning``) in whatever code the
collection happens to interrupt. Once disposed, this pool closes each
connection given back to it instead.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy.pool import QueuePool

if TYPE_CHECKING:
    from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["ClosingQueuePool"]


class ClosingQueuePool(QueuePool):
    """A ``QueuePool`` whose connections given back after ``dispose()`` are closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A return that checked the flag before dispose() set it would put the
        # connection into a queue dispose() has already emptied. Reentrant, as
        # SQLAlchemy's own queue is: a connection the garbage collector finds
        # unclosed is given back from inside whatever this thread was doing.
        self._disposal = threading.RLock()
        self._disposed = False

    def dispose(self) -> None:
        with self._disposal:
            self._disposed = True
            super().dispose()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        with self._disposal:
            if not self._disposed:
                super()._do_return_conn(record)
                return
        record.close()
