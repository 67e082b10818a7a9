"""The write path: a bounded write-behind queue and the thread that drains it.

A step's only cost here is appending its record to a deque. A background
thread wakes at least every ``INTERVAL_S`` (or at once for a flush or a full
queue), turns what it finds into rows, and writes them in one transaction
(that half, with its retries and drops, is ``batches.py``). A full queue
makes the caller wait: records are never dropped to keep up.
In immediate mode the caller writes its own record before returning, and
the thread only refreshes the heartbeat of this process's open runs.

A batch that cannot be written (unwritable file, disk full, a lock held
for minutes) is reported as a warning on the ``zenmeta`` logger, once per
cause and interval, and remembered, so that ``flush()`` in strict mode
raises ``StoreError``. A record that cannot be turned into rows, or that the
database refuses for its content, is dropped alone, with a warning: the rest
of its batch (other runs' steps among it) is written. A run's first record
jumps the queue and wakes the writer at once, so that a process killed
moments after starting a run still leaves the run on disk.

A lost connection (a server restarting, a failover) keeps the batch: the
writer reconnects with backoff for as long as it waits out a locked file,
while the bounded queue makes steps wait.

Each process records itself once per store (``zenmeta_processes``) in the
transaction of its first records, and beats every ``HEARTBEAT_S`` while it
has a run open or a remote step started (``sql/starts.py``); closing the
store records its clean exit. A remote step's started record is queued
first with an urgent wake, and deleted in the transaction that inserts its
finished step (or never written, when both meet in one batch).

A thread idle for ``IDLE_S`` with no run of this process open (and no
remote step started) exits and closes its connection; the next record
starts it again. Before each batch the SQLite file's identity is compared
with the one opened (one ``stat``), so a store deleted while the process
records is noticed, reported and created again at its path instead of
being written into an unlinked file.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING
from uuid import UUID

from ... import _process
from ..._config import settings
from ..._errors import StoreError, describe_error
from ..._process import os_threads, start_quiet, wait_for_os_thread_exit
from ..._records import RunRecord, StepRecord
from ..liveness import HEARTBEAT_S
from .batches import BatchWrites, Record
from .schema import file_identity, sqlite_path
from .sessions import ROWS_PER_STATEMENT, Session
from .starts import Started

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from .plain import PlainRow

__all__ = ["SQLWriter", "INTERVAL_S", "QUEUE_SIZE"]

INTERVAL_S = 0.25
"""The longest a batched record waits in memory; a kill -9 loses at most this
much (plus the time to write it)."""

QUEUE_SIZE = 8192
"""Records held before callers wait; bounds memory whatever the step rate.
Kept small on purpose: queued records outlive the garbage collector's young
generations, and every one of them makes its full collections longer."""

BATCH_SIZE = 2 * ROWS_PER_STATEMENT
"""Records per transaction: large enough to amortize the commit. Two blocks,
4,096 records since blocks became 2,048 rows (16,384 before); the million-step
rates in ``sessions.ROWS_PER_STATEMENT`` were measured with it so."""

WAKE_AT = 2048
"""Queued records that wake the writer before its interval is up, so that it
writes alongside a fast step loop instead of in one long pause after it."""

STARTED_GATHER_S = 0.002
"""How long the writer, woken by a remote step's started record, waits for
more before writing: one transaction per moment rather than per step (a
tight loop of remote steps otherwise commits at every step, halving its
rate on SQLite), and a step shorter than this writes no started row at all.
A worker killed within this much of a step's start leaves no trace of it."""

STARTED_POLL_S = 0.02
"""While started records keep coming (one in the last ``INTERVAL_S``), the
writer looks for them this often instead of being woken for each: a wake per
task cost a Dask worker more than the task's own write (the woken thread
competes with the task and the worker's event loop for the interpreter),
and 2 ms polling cost the same. Within a burst, a worker killed this soon
after a step started may leave no trace of it; Dask's rerun is recorded."""

IDLE_S = 5.0
"""A writer with nothing to write for this long, and no open run of this
process to keep alive, gives back its thread and connection."""

COALESCE_S = 0.002
"""A run's start or end wakes the writer at once, unless it wrote less than
this long ago: then it waits out the rest, so that a loop of short runs is
written a few dozen runs per transaction instead of one (a transaction per
run cost ~3 OpenTelemetry spans of writer time). A flush never waits."""


class SQLWriter(BatchWrites):
    """Writes records to one database through one connection."""

    def __init__(
        self,
        engine: Engine,
        url: str,
        *,
        immediate: bool,
        queue_size: int = QUEUE_SIZE,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.engine = engine
        self.url = url
        self.immediate = immediate
        self.limit = max(1, queue_size)
        self.nudge_at = min(self.limit, WAKE_AT)
        self._interval = interval_s
        self.pending: deque[Record | threading.Event] = deque()
        self._lock = threading.RLock()  # one user of the connection, and of the queue's head
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._urgent = False  # a flush waits: write everything, not whole blocks
        self._starting = False  # a started record waits: write it within milliseconds
        self._polling = False  # started records keep coming: the writer wakes itself
        self._started_at = 0.0  # when the writer last saw a started record
        self._waited_for = False  # a caller is waiting (flush, full queue): no coalescing
        self._wrote_at = 0.0
        self._session: Session | None = None
        self._live: set[str] = set()  # this process's running runs, for the heartbeat
        self._open_starts: set[UUID] = set()  # remote steps started here, not finished
        self._beat_ns = 0  # this process's last committed heartbeat here; 0: not recorded
        self._beat_pending = 0  # a heartbeat in the transaction under way
        self._recorded_ns = 0  # when this process first recorded itself here
        self._fault: str | None = None
        self._warned: set[str] = set()
        self._path = sqlite_path(url) if engine.dialect.name == "sqlite" else None
        self._identity = None if self._path is None else file_identity(self._path)
        self._writing = False  # records popped from the queue, not yet committed
        self._announced: set[UUID] = set()  # runs whose first record was queued
        self._resume = False  # a thread was stopped for a fork: restart it after

    # -- the caller's side -------------------------------------------------
    def put(self, record: Record, *, urgent: bool = False) -> None:
        """Queue a record; wait only when the queue is full. An urgent one (a
        run's first record) goes first and wakes the writer at once."""
        pending = self.pending
        if urgent:
            pending.appendleft(record)
            self._urgent = True
            if self._thread is None:
                self.start()
            if not self._wake.is_set():  # set() takes a lock and notifies: ~1 µs
                self._wake.set()
            return
        pending.append(record)
        if len(pending) >= self.nudge_at:
            self.nudge()
        elif self._thread is None:  # never started (a worker may write only steps), or retired
            self.start()

    def put_started(self, record: StepRecord) -> None:
        """Queue a remote step's started record first, waking the writer at
        once: microseconds here, written within milliseconds (the writer
        gathers ``STARTED_GATHER_S`` of them per transaction). In immediate
        mode it is committed before returning, as every record is there."""
        self._open_starts.add(record.step_run_id)
        if self.immediate:
            self.write_now(Started(record))
            return
        self.pending.appendleft(Started(record))
        self._starting = True
        if self._thread is None:
            self.start()
        if not self._polling:  # else it looks within STARTED_POLL_S anyway
            self._wake.set()

    def wake(self) -> None:
        """Write everything queued now, without waiting for it (a run's end)."""
        self._urgent = True
        if self._thread is None:
            self.start()
        if not self._wake.is_set():
            self._wake.set()

    def nudge(self) -> None:
        """The queue is long: wake the writer; if it is full, wait for room."""
        if len(self.pending) >= self.limit:
            self.wait_for_room()
        elif not self._wake.is_set():
            if self._thread is None:
                self.start()
            self._wake.set()

    def announce(self, record: RunRecord) -> bool:
        """Whether this is the first record of its run seen here (then urgent)."""
        if record.run_id in self._announced:
            if record.end_ns is not None:
                self._announced.discard(record.run_id)
            return False
        if record.end_ns is None:
            self._announced.add(record.run_id)
        return True

    def busy(self) -> bool:
        """Whether records are queued or being written."""
        return bool(self.pending) or self._writing

    def write_now(self, record: Record) -> None:
        """Write one record before returning (immediate mode); errors propagate."""
        if self._thread is None:
            self.start()
        with self._lock:
            self._write([record], report=False)

    def flush(self, *, keep_fault: bool = False) -> None:
        """Return once every record queued before the call is written; strict
        mode raises a fault remembered since the last flush, unless a reader
        only waits here (``keep_fault``)."""
        thread = self._thread
        if (
            thread is not None
            and threading.current_thread() is not threading.main_thread()
            and thread.is_alive()
            and self._lock.acquire(blocking=False)
        ):
            # The writer is between batches: write here rather than wake it and
            # wait, two thread switches that on a busy machine (a Dask worker
            # beside its scheduler) each wait for a core. Never on the main
            # thread, where a Ctrl-C would land mid-batch and lose it.
            try:
                self._drain()
            except BaseException as error:  # contained as the writer thread does
                self._report_failure(error)
            finally:
                self._lock.release()
        elif thread is not None and thread.is_alive():
            done = threading.Event()
            self.pending.append(done)
            self._urgent = self._waited_for = True
            self._wake.set()
            while not done.wait(0.5):
                thread = self._thread  # a retired thread hands over to a new one
                if thread is None or not thread.is_alive():
                    break
        if thread is not None and not thread.is_alive() and not self._stopping:
            self._thread = None  # the next record starts a new one
            self._report(f"the writer thread for {self.url!r} is gone; writing here", "gone")
        if self.pending:  # no thread (never started, or stopped): write here
            self._drain()
        if keep_fault:
            return
        fault, self._fault = self._fault, None
        if fault is not None and settings.strict():
            raise StoreError(fault)

    def close(self) -> None:
        """Write what is queued, stop the thread, record this process's clean
        exit (where it recorded itself), release the connection."""
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join()
            self._thread = None
        self._drain()
        with self._lock:
            if self._beat_ns:
                exit_ns = time.time_ns()
                own = _process.PROCESS_ID
                self._transaction(lambda session: session.end_process(own, exit_ns), report=True)
                self._beat_ns = 0
            self._discard_session()

    def pause_for_fork(self) -> None:
        """Before ``fork()``: stop the thread and hold the connection's lock.

        A process forked while a thread runs inherits that thread's locks
        with nobody to release them, and Python 3.12 warns about it on every
        later fork (``DeprecationWarning: This process is multi-threaded``).
        The thread leaves between two batches; what is queued stays queued
        and ``resume_after_fork`` starts a new thread in the parent."""
        thread = self._thread
        self._resume = False
        if thread is not None and thread is not threading.current_thread():
            before = os_threads()
            self._stopping = True
            self._wake.set()
            thread.join()
            wait_for_os_thread_exit(before)
            with self._room:
                if self._thread is thread:
                    self._thread = None
                self._stopping = False
            self._resume = True
        self._lock.acquire()

    def resume_after_fork(self) -> None:
        """In the parent, after ``fork()``: release the lock, restart the thread."""
        self._lock.release()
        if self._resume and (self.pending or self._live or self._open_starts):
            self.start()
        self._resume = False

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's queue, thread and connection.

        The inherited connection is not closed, since closing a SQLite handle
        the parent still uses can disturb the parent's locks; it is left alone.
        """
        _inherited.append(self._session)
        self.pending = deque()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._thread = None
        self._stopping = False
        self._resume = False
        self._polling = False
        self._session = None
        self._live = set()
        self._open_starts = set()
        self._beat_ns = self._beat_pending = self._recorded_ns = 0  # the child is another process

    def release(self) -> bool:
        """Write what is queued, stop the thread and close the connection,
        unless a run of this process is open here; the next record starts
        again. Returns whether it was released."""
        if self._live or self._open_starts:
            return False
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join()
            with self._room:
                if self._thread is thread:
                    self._thread = None
                self._stopping = False
        self._drain()
        with self._lock:
            self._discard_session()
        return True

    def start(self) -> None:
        with self._room:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"zenmeta-writer {self.url}", daemon=True
                )
                if not start_quiet(self._thread):  # exiting: flush() writes here
                    self._thread = None

    def wait_for_room(self) -> None:
        """Called by a producer that found the queue full: wait, never drop."""
        if self._thread is None:
            self.start()
        with self._room:
            while len(self.pending) >= self.limit:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    break
                self._waited_for = True
                self._wake.set()
                self._room.wait(0.1)
        if len(self.pending) >= self.limit:  # the thread is gone: write here
            self._drain()

    # -- the writer thread -------------------------------------------------
    def _run(self) -> None:
        busy_at = time.monotonic()
        while not self._stopping:
            polling = self._polling
            woken = self._wake.wait(STARTED_POLL_S if polling else self._interval)
            if woken and not self._waited_for:
                pause = self._wrote_at + COALESCE_S - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            self._wake.clear()
            urgent, self._urgent = self._urgent, False
            if self._starting:
                self._starting = False
                self._started_at = time.monotonic()
                if woken and not polling and not urgent and not self._stopping:
                    # Started records of the next moment join this transaction
                    # (and short steps' finished records, which cancel theirs).
                    time.sleep(STARTED_GATHER_S)
                urgent = True
            self._poll_while_starting()
            self._waited_for = False
            if woken or self.pending or self._live or self._open_starts:
                busy_at = time.monotonic()
            elif time.monotonic() - busy_at >= IDLE_S and self._retire():
                return
            try:
                # Woken early by a long queue, write whole blocks only: a block
                # is one statement and one wait for the interpreter lock, while
                # a remainder is cut into many. The interval writes the rest.
                self._drain(whole_blocks=woken and not urgent and not self._stopping)
                self._heartbeat_if_due()
            except BaseException as error:  # the thread must outlive any fault
                self._report_failure(error)

    def _report_failure(self, error: BaseException) -> None:
        """A drain that raised, on the writer thread or a flushing caller's."""
        cause = ": ".join(describe_error(error))
        self._report(f"the writer for {self.url!r} failed: {cause}", cause)

    def _poll_while_starting(self) -> None:
        """Wake every ``STARTED_POLL_S`` while remote steps start here, and for
        ``INTERVAL_S`` after the last."""
        recent = time.monotonic() - self._started_at < self._interval
        self._polling = recent
        if not recent and self._starting:  # ``put_started`` sets it before it reads ours
            self._polling = True

    def _retire(self) -> bool:
        """Leave the thread after a long idle; a record queued meanwhile
        starts a new one (``put`` sees no thread, or this sees the record)."""
        with self._room:
            if self._thread is not threading.current_thread():
                return False
            self._thread = None
        with self._lock:
            self._discard_session()
        self.engine.dispose()  # the pooled connections' file descriptors too
        if self.pending:
            self.start()
        return True

    def _drain(self, *, whole_blocks: bool = False) -> None:
        """Write what is queued, a batch per transaction; then wake waiters."""
        pending = self.pending
        left = len(pending)
        if whole_blocks and left >= WAKE_AT:
            left = 1 << (min(left, ROWS_PER_STATEMENT).bit_length() - 1)
        while pending and left > 0:
            take = min(left, BATCH_SIZE)
            left -= take
            with self._lock:  # popped and stored under one hold: batches keep their order
                self._write_batch(take)

    def _write_batch(self, take: int) -> None:
        """Pop up to ``take`` queued items and store them in one transaction."""
        step_records: list[StepRecord] = []
        run_records: list[RunRecord] = []
        starts: list[StepRecord] = []
        plains: list[PlainRow] = []
        done: list[threading.Event] = []
        pop = self.pending.popleft
        keep = plains.append
        try:
            for _ in range(take):
                item = pop()
                kind = type(item)
                if kind is tuple:
                    keep(item)  # type: ignore[arg-type]
                elif kind is StepRecord:
                    step_records.append(item)  # type: ignore[arg-type]
                elif kind is threading.Event:
                    done.append(item)  # type: ignore[arg-type]
                elif kind is Started:
                    starts.append(item.record)  # type: ignore[union-attr]
                else:
                    run_records.append(item)  # type: ignore[arg-type]
        except IndexError:
            pass
        with self._room:
            self._room.notify_all()
        try:
            if plains or step_records or run_records or starts:
                self._writing = True
                self._store(step_records, run_records, report=True, starts=starts, plains=plains)
        finally:  # a waiter is never left waiting, whatever happened
            self._writing = False
            self._wrote_at = time.monotonic()
            for event in done:
                event.set()

    def _heartbeat_if_due(self) -> None:
        now = time.time_ns()
        if not (self._live or self._open_starts) or now - self._beat_ns < HEARTBEAT_S * 1e9:
            return
        with self._lock:
            self._transaction(lambda session: self._beat(session, now), report=True)


_inherited: list[object] = []
