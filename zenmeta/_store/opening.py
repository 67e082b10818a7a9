"""A SQL store opened on a thread of its own, so that no run waits for it.

Opening a SQL store costs a fresh process 240-360 ms (measured on this
project's 2-core machine): importing SQLAlchemy is ~170 ms of it, creating or
checking the schema the rest. Paid on the caller's thread, that is the first
``with pipeline_run()`` of every script, and the first run's recorded
duration. ``OpeningStore`` takes the records of a store that is still being
opened into a bounded list, opens the store in a background thread, then
hands the list over in order and steps aside: from then on its
``save_run``/``save_step`` *are* the opened store's bound methods (instance
attributes shadowing its own), so a step pays no extra call for it.

What must not change does not: immediate durability waits for the open
(its promise is a record committed before the step returns), strict mode
too (a store that cannot be opened raises when the run starts), and a
list that is full makes the caller wait, as the writer's queue does. A
store that cannot be opened is reported, naming it, from the opening
thread, as soon as it fails; its records are dropped (the run goes on
unrecorded, as when opening failed on the caller's thread) and the next run
tries again. ``flush()`` waits for the open, so after it the report is made.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._config import settings
from .._errors import StoreError, describe_error
from .._process import start_quiet, wait_for_kernel_thread
from .._project import prepare_working_folder
from .._records import RecordStore, RunRecord, StepRecord
from .._redact import masked_url

__all__ = ["OpeningStore", "PENDING_LIMIT", "check_sqlite_folder"]

PENDING_LIMIT = 8192
"""Records held while the store opens before callers wait for it: the SQL
writer's own queue bound (``sql/writer.py`` ``QUEUE_SIZE``)."""

_opening: weakref.WeakSet[OpeningStore] = weakref.WeakSet()


def check_sqlite_folder(url: str) -> bool:
    """Whether ``url`` names a SQLite file, after making sure its folder can be
    written: what fails most (a wrong path) is still reported as the run
    starts, in microseconds, before the open moves to its own thread."""
    path = url[len("sqlite:///") :].partition("?")[0] if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return False  # no file of its own: the SQL store says what it needs
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise StoreError(f"cannot write to the store folder {folder!r}")
    return True


def _no_plain_steps(*fields: Any) -> bool:
    return False


def _plain_steps_of(store: RecordStore) -> Callable[..., bool]:
    return getattr(store, "save_plain_step", _no_plain_steps)


class OpeningStore:
    """Stands for the SQL store at ``url`` while a thread opens it; then forwards."""

    def __init__(
        self,
        url: str,
        opener: Callable[[str], RecordStore],
        on_failure: Callable[[OpeningStore, BaseException], None],
    ) -> None:
        self.url = masked_url(url)
        self._real_url = url
        self._opener = opener
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._pending: list[RunRecord | StepRecord] = []
        self._target: RecordStore | None = None
        self._failure: BaseException | None = None
        self.opening = True
        """Until the open ended (either way); read as each run starts."""
        _opening.add(self)
        register_fork_hooks()
        self._start()

    def __repr__(self) -> str:
        state = "open" if self._target else "failed" if self._failure else "opening"
        return f"<OpeningStore {self.url!r} {state}>"

    def _start(self) -> None:
        thread = threading.Thread(target=self._open, name=f"zenmeta-open {self.url}", daemon=True)
        self._thread = thread
        if not start_quiet(thread):  # the interpreter is exiting: open here
            self._open()

    def _open(self) -> None:
        try:
            target = self._opener(self._real_url)
        except BaseException as error:  # the thread must report, whatever it was
            with self._lock:
                self._failure = error
                self._pending = []  # unrecorded, as a failed open always left them
            try:
                self._on_failure(self, error)  # forgotten, then reported, before anyone waits
            finally:
                self.opening = False
                self._ready.set()
            return
        prepare_working_folder()  # what the next run start asks for: loaded here, not there
        with self._lock:
            try:
                for record in self._pending:  # in the order they were saved
                    if type(record) is StepRecord:
                        target.save_step(record)
                    else:
                        target.save_run(record)  # type: ignore[arg-type]
            finally:
                self._pending = []
                self._target = target
                # From now on a save is the opened store's own bound method.
                self.save_step = target.save_step  # type: ignore[method-assign]
                self.save_run = target.save_run  # type: ignore[method-assign]
                self.save_plain_step = _plain_steps_of(target)  # type: ignore[method-assign]
                self.opening = False
                self._ready.set()

    def opened(self) -> RecordStore:
        """Wait for the open; the opened store, or the error that stopped it."""
        self._ready.wait()
        target = self._target
        if target is None:
            raise self._failure or StoreError(f"cannot open store {self.url!r}")
        return target

    # -- RecordStore ----------------------------------------------------
    def save_run(self, record: RunRecord) -> None:
        if not self._hold(record):
            self.opened().save_run(record)

    def save_step(self, record: StepRecord) -> None:
        if not self._hold(record):
            self.opened().save_step(record)

    def save_plain_step(self, *fields: Any) -> bool:
        """``SQLStore.save_plain_step`` once open; until then ``False``, and the
        step's record waits here with the rest."""
        target = self._target
        if target is None:
            return False
        return _plain_steps_of(target)(*fields)

    def _hold(self, record: RunRecord | StepRecord) -> bool:
        """Keep ``record`` until the store is open; ``False`` when it must go
        to the store itself now (open already, immediate mode, or full)."""
        if self._target is not None or settings.durability() == "immediate":
            return False
        with self._lock:
            if self._target is not None:
                return False
            if self._failure is not None:
                return True  # reported once by the opening thread; not recorded
            if len(self._pending) < PENDING_LIMIT:
                self._pending.append(record)
                return True
        self._ready.wait()  # backpressure: never drop to keep up
        return self._target is None

    def flush(self) -> None:
        """Wait for the open, then for every record to be stored; strict mode
        raises ``StoreError`` when the store could not be opened."""
        self._ready.wait()
        target = self._target
        if target is not None:
            target.flush()
        elif settings.strict():
            self.opened()

    def has_queued(self) -> bool:
        target = self._target
        if target is None:
            return bool(self._pending) or not self._ready.is_set()
        has_queued = getattr(target, "has_queued", None)
        return bool(has_queued()) if callable(has_queued) else False

    def close(self) -> None:
        self._ready.wait()
        if self._target is not None:
            self._target.close()

    def release(self) -> None:
        self._ready.wait()
        release = getattr(self._target, "release", None)
        if callable(release):
            release()

    def opened_for_reading(self) -> RecordStore:
        """``opened()``, its failure said in one ``StoreError`` line naming
        the store: what a reader asking is given."""
        try:
            return self.opened()
        except StoreError:
            raise
        except Exception as error:
            error_type, detail = describe_error(error)
            raise StoreError(f"cannot open store {self.url!r}: {error_type}: {detail}") from error

    def __getattr__(self, name: str) -> Any:
        """Everything else (reading, pruning, ``durability``) is the opened store's."""
        if name.startswith("__") or name in _OWN:
            raise AttributeError(name)
        return getattr(self.opened_for_reading(), name)

    def _after_fork_in_child(self) -> None:
        """A child forked mid-open has no opening thread: it opens again, and
        the parent's held records are not its to write."""
        self._lock = threading.Lock()
        if not self._ready.is_set():
            self._ready = threading.Event()
            self._pending = []
            self._start()


_OWN = frozenset(
    (
        "_real_url",
        "_opener",
        "_on_failure",
        "_lock",
        "_ready",
        "_pending",
        "_target",
        "_thread",
        "_failure",
        "opening",
    )
)


FORK_WAIT_S = 30.0
"""How long a fork waits for a store being opened (see ``_before_fork``)."""


def wait_for_opening() -> None:
    """Wait for every store being opened; the SQL store's own fork hook calls
    this first, so it never pauses a store halfway through its opening."""
    for store in list(_opening):
        store._ready.wait(FORK_WAIT_S)
        thread = store._thread
        if thread.ident is not None and thread is not threading.current_thread():
            thread.join(FORK_WAIT_S)  # no thread of ours alive across the fork
            wait_for_kernel_thread(thread.native_id)


def _before_fork() -> None:
    """Never fork mid-open: the opening thread may hold an import lock, a
    connection pool's lock or SQLite's file lock, and in the child no thread
    would ever release them (a forked pool worker hung on exactly that). A
    fork waits for the open instead, then pauses the SQL stores' writers (the
    SQL module may have been imported during that wait: one hook does both)."""
    wait_for_opening()
    sql = sys.modules.get("zenmeta._store.sql")
    if sql is not None and hasattr(sql, "pause_for_fork"):
        sql.pause_for_fork()
        _sql_paused.append(sql)


def _after_fork_in_parent() -> None:
    while _sql_paused:
        _sql_paused.pop().resume_after_fork()


def _after_fork_in_child() -> None:
    while _sql_paused:
        _sql_paused.pop().reset_in_child()
    for store in list(_opening):
        store._after_fork_in_child()


_sql_paused: list[Any] = []
_hooked: list[bool] = []


def register_fork_hooks() -> None:
    """Once, as the first store starts opening (or the SQL module is
    imported), after importing logging.

    Fork hooks run newest first. The opening thread imports SQLAlchemy, which
    takes logging's lock, and logging's own hook holds that lock across a
    fork: registered before ours, it is taken only after our wait, never
    during it (a deadlock). Imported on the opening thread during that wait,
    logging would register mid-fork and release a lock it never took. So:
    logging first (~5 ms, once per process), then our hook."""
    if _hooked or not hasattr(os, "register_at_fork"):
        return
    _hooked.append(True)
    import logging  # noqa: F401

    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
