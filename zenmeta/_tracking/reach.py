"""Whether, and how, this process reaches the store a carrier names.

A carrier holds the store's URL without its password. Here it becomes a
store this process can write: the worker's own configured URL when that
names the same database (it has the password), else the carried URL, for
libpq to complete from ``PGPASSWORD`` or ``.pgpass``. What would silently
split a run is refused instead (SCALE.md §4): a ``memory://`` store of
another process, and a SQLite file carried to another machine or to a
container that does not have it — opening either would create a stray,
empty store that nobody reads. Its own module: the rules of point 5 of
issue 12, apart from the attaching itself.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .._config import settings
from .._process import host_name
from .._store import open_store, store_url, use_store
from .carrier import Carrier, CarrierError, boot_id, without_password

if TYPE_CHECKING:
    from .._records import RecordStore

__all__ = ["Refused", "flush_at_exit", "forget_exit_flush", "store_for", "with_own_credentials"]


class Refused:
    """The store of an adopted run that cannot be reached from this process
    (``memory://`` across a fork): steps run, nothing is kept; said once."""

    def __init__(self, url: str) -> None:
        self.url = url

    def save_run(self, record: object) -> None:
        pass

    def save_step(self, record: object) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def store_for(carrier: Carrier) -> RecordStore:
    """The carrier's store, as this process can reach it, or ``CarrierError``."""
    url = carrier.store
    scheme = url.partition(":")[0].lower()
    if scheme == "memory" and not carrier.same_process():
        raise CarrierError(
            f"run {carrier.run_name!r} records into {url!r}, a store in the memory of process "
            f"{carrier.owner_pid} on {carrier.owner_host!r}; another process cannot reach it. "
            "Use a SQLite file (same machine) or PostgreSQL store for work in other processes"
        )
    if scheme == "sqlite" and not carrier.same_machine():
        raise CarrierError(
            f"run {carrier.run_name!r} records into the SQLite file {url!r} on "
            f"{carrier.owner_host!r} (boot {carrier.owner_boot_id or 'unknown'}); this process "
            f"runs on {host_name()!r} (boot {boot_id() or 'unknown'}), where that file is not the "
            "same file. Use a PostgreSQL store (postgresql+psycopg://…) for work on other machines"
        )
    if scheme == "sqlite" and not carrier.same_process():
        path = url.partition(":///")[2].partition("?")[0]
        if not path or path == ":memory:" or path.startswith("file:"):
            raise CarrierError(
                f"run {carrier.run_name!r} records into {url!r}, which no other process can "
                "open; use a SQLite file or a PostgreSQL store for work in other processes"
            )
        if not os.path.exists(path):  # the owner created it when the run started
            raise CarrierError(
                f"run {carrier.run_name!r} records into the SQLite file {path!r}, which does "
                "not exist here (another container, or another mount of the machine?); "
                "zenmeta will not create a stray store in its place. Use a PostgreSQL store, "
                "or the same file in every worker"
            )
    return use_store(open_store(with_own_credentials(url)))


def with_own_credentials(url: str) -> str:
    """The carrier's password-less URL, or this process's own configured URL
    when that names the same database (it has the password); otherwise the
    URL as carried, and libpq finds a password in ``PGPASSWORD`` or ``.pgpass``."""
    own = settings.store()
    if not isinstance(own, str) or own == url:
        return url
    try:
        own = store_url(own)
    except Exception:
        return url
    return own if _database_of(own) == _database_of(url) else url


def _database_of(url: str) -> str:
    scheme, _, rest = without_password(url).partition("://")
    if scheme.lower().startswith("postgresql"):
        scheme = "postgresql"  # postgresql:// and postgresql+psycopg:// reach one database
    return f"{scheme.lower()}://{rest}"


_exit_flush: list[bool] = []


def flush_at_exit() -> None:
    """Store what this process queued when it leaves through an exit path.

    ``atexit`` is the store's own; multiprocessing children leave through
    ``os._exit`` and run only multiprocessing's finalizers, so one is added.
    No SIGTERM handler: ``Pool.terminate()`` SIGTERMs idle workers, and a
    flush inside a signal handler can wait on a lock the interrupted code
    holds; steps of attached processes are stored as they end instead
    (``carried`` per call, whole-process attachments per outermost step)."""
    if _exit_flush:
        return
    _exit_flush.append(True)
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        from .. import _store

        util.Finalize(None, _store.close_stores, exitpriority=100)


def forget_exit_flush() -> None:
    """After ``fork``: the child registers its own exit flush when it attaches."""
    _exit_flush.clear()
