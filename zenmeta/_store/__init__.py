"""Which store a run writes to, and flushing every open store.

The store is resolved when each run starts, so changing ``ZENMETA_STORE``
between runs takes effect; an open store for the same URL is reused. Store
modules are imported only here and only when used, which keeps
``import zenmeta`` free of SQLAlchemy.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from .._config import settings
from .._errors import StoreError
from .._log import warn
from .._records import RecordStore, RunRecord, StepRecord

__all__ = ["resolve_store", "open_store", "flush", "close_stores", "report_store_fault"]

_open: dict[str, RecordStore] = {}
_used: list[RecordStore] = []
_lock = threading.Lock()


def open_store(url: str) -> RecordStore:
    """The open store for ``url``, creating it on first use."""
    store = _open.get(url)
    if store is not None:
        return store
    with _lock:
        store = _open.get(url)
        if store is None:
            store = _create(url)
            _open[url] = store
        return store


def _create(url: str) -> RecordStore:
    if url.startswith("memory:"):
        from .memory import InMemoryStore

        return InMemoryStore(url)
    if url.startswith(("sqlite:", "postgresql:", "postgresql+")):
        try:
            from .sql import SQLStore
        except ImportError as error:  # pragma: no cover - the store issue adds it
            raise StoreError(f"no SQL store available for {url!r}: {error}") from error

        return SQLStore(url)  # follows configure(durability=...) run by run
    raise StoreError(f"unknown store URL {url!r}; use sqlite:///PATH, postgresql://… or memory://")


class _UnavailableStore:
    """Stands in for a store that could not be opened; the fault was reported."""

    def __init__(self, url: str) -> None:
        self.url = url

    def save_run(self, record: RunRecord) -> None:
        pass

    def save_step(self, record: StepRecord) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def resolve_store() -> RecordStore:
    """The store for a run that starts now; never raises outside strict mode."""
    chosen = settings.store()
    if not isinstance(chosen, str):
        store = chosen
    else:
        try:
            store = open_store(chosen)
        except Exception as error:
            report_store_fault(f"cannot open store {chosen!r}", error)
            return _UnavailableStore(chosen)
    if store not in _used:
        with _lock:
            if store not in _used:
                _used.append(store)
    return store


_reported: set[str] = set()


def report_store_fault(what: str, error: BaseException) -> None:
    """Warn (once per message) that records were not stored; raise if strict."""
    message = f"zenmeta: {what}: {type(error).__name__}: {error}; the run goes on unrecorded"
    rules = settings.redaction()  # store URLs and driver errors name passwords
    if rules.enabled:
        message = rules.mask_text(message)[0]
    if settings.strict():
        raise StoreError(message) from error
    if message not in _reported:
        _reported.add(message)
        warn(message)


def flush() -> None:
    """Block until every record queued by this process is stored."""
    with _lock:
        stores = list(_used)
    for store in stores:
        try:
            store.flush()
        except StoreError:
            raise
        except Exception as error:
            report_store_fault(f"cannot flush {store.url!r}", error)


def close_stores() -> None:
    """Flush and close every store this process opened; runs at exit."""
    with _lock:
        stores = list(_open.values())
        _open.clear()
        _used.clear()
    for store in stores:
        try:
            store.close()
        except Exception as error:  # at exit there is nobody left to raise to
            warn("zenmeta: closing %r failed: %s", store.url, error)


atexit.register(close_stores)


class _ForkedWorkerExit:
    """Key of zenmeta's entry in multiprocessing's after-fork registry."""

    registered = False


def _flush_when_worker_exits(_: object) -> None:
    # multiprocessing ends a forked worker with os._exit(), which skips
    # atexit; its own exit finalizers still run, so flush from one of them.
    import multiprocessing.util

    multiprocessing.util.Finalize(None, close_stores, exitpriority=100)


def _before_fork() -> None:
    """Only when multiprocessing is in use: it clears finalizers registered
    earlier, so ours is added by its after-fork hook, in the child."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None and not _ForkedWorkerExit.registered:
        util.register_after_fork(_ForkedWorkerExit, _flush_when_worker_exits)
        _ForkedWorkerExit.registered = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork)
