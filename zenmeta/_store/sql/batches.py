"""The writer's second half: a batch of queued records into one transaction.

``SQLWriter`` (``writer.py``) owns the queue, the thread and the waits of
flush, fork and close; this half turns what it pops into rows and stores
them. A transaction waits out another process's lock and reconnects to a
server that went away, for up to ``LOCKED_RETRY_S``; a batch the database
refuses for its content is written again one record at a time, so that
only the record at fault is dropped, with a warning; anything else is
reported once per cause and remembered for ``flush()`` in strict mode.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ..._errors import describe_error
from ..._log import warn, warn_throttled
from ..._records import RUNNING, RunRecord, StepRecord
from ..liveness import HEARTBEAT_S, own_facts
from .plain import PlainRow
from .rows import (
    FULL_METADATA,
    RUN_SHAPE,
    Unbuildable,
    add_plain_rows,
    add_step_rows,
    latest_runs,
    metadata_rows,
    refused_content,
    run_row,
    unbuildable,
)
from .schema import (
    ensure_schema,
    file_identity,
    is_connection_error,
    is_locked_error,
    metadata_sets,
    runs,
    step_starts,
    steps,
)
from .sessions import Session, Shaped, open_session
from .starts import Started, settle_starts
from .turns import prompt_turns

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["BatchWrites", "LOCK_WARN_S", "LOCKED_RETRY_S", "Record"]

LOCKED_RETRY_S = 120.0
"""How long a batch keeps retrying a locked database, or reconnecting to a
server that went away, before it is reported."""

LOCK_WARN_S = 3.0
"""Waiting this long for another process's lock is said in a warning naming
the store; the wait itself goes on (up to ``LOCKED_RETRY_S``)."""


Record = RunRecord | StepRecord | Started | PlainRow
_Single = tuple[list[StepRecord], list[RunRecord], list[StepRecord], list[PlainRow]]


class BatchWrites:
    """Storing batches, for ``SQLWriter``: the state it reads and writes is
    the writer's own, set in ``SQLWriter.__init__``."""

    engine: Engine
    url: str
    immediate: bool
    _thread: threading.Thread | None
    _session: Session | None
    _live: set[str]
    _open_starts: set[UUID]
    _beat_ns: int
    _beat_pending: int
    _recorded_ns: int
    _fault: str | None
    _warned: set[str]
    _path: str | None
    _identity: Any

    def _beat(self, session: Session, now: int) -> None:
        """Record this process, or refresh its heartbeat: per process, not per
        run or step, so its cost does not grow with the task rate."""
        if not self._recorded_ns:
            self._recorded_ns = now
        session.beat_process(own_facts(self._recorded_ns, now))
        if self._live:  # kept for copies and older readers, which judge the run row
            session.beat(sorted(self._live), now)
        self._beat_pending = now

    # -- writing -------------------------------------------------------------
    def _write(self, batch: list[Record], *, report: bool) -> None:
        """Sort records into steps and runs, and store them."""
        step_records: list[StepRecord] = []
        run_records: list[RunRecord] = []
        starts: list[StepRecord] = []
        plains: list[PlainRow] = []
        for record in batch:
            if type(record) is StepRecord:
                step_records.append(record)
            elif type(record) is tuple:
                plains.append(record)
            elif type(record) is Started:
                starts.append(record.record)
            else:
                run_records.append(record)  # type: ignore[arg-type]
        self._store(step_records, run_records, report=report, starts=starts, plains=plains)

    def _store(
        self,
        step_records: list[StepRecord],
        run_records: list[RunRecord],
        *,
        report: bool,
        starts: list[StepRecord] | None = None,
        plains: list[PlainRow] | None = None,
    ) -> None:
        """Write steps and runs (drained in one pass) in one transaction; a
        record that cannot be written is dropped alone (see ``_one_by_one``)."""
        starts = starts or []
        plains = plains or []
        try:
            work, count = self._rows(step_records, run_records, starts, plains)
        except Exception:  # a record that cannot become rows: find it
            self._one_by_one(step_records, run_records, report=report, starts=starts, plains=plains)
            return
        try:
            self._transaction(work, report=False, count=count)
        except Exception as error:
            if count > 1 and refused_content(error):
                self._one_by_one(
                    step_records, run_records, report=report, starts=starts, plains=plains
                )
                return
            if not report:
                raise
            self._report_batch(count, error)

    def _one_by_one(
        self,
        step_records: list[StepRecord],
        run_records: list[RunRecord],
        *,
        report: bool,
        starts: list[StepRecord] | None = None,
        plains: list[PlainRow] | None = None,
    ) -> None:
        """Write each record alone; drop, with a warning, those that fail for
        what they hold. Only ever reached after a batch failed that way."""
        singles: list[_Single] = [([], [], [record], []) for record in starts or ()]
        singles += [([], [], [], [row]) for row in plains or ()]
        singles += [([record], [], [], []) for record in step_records]
        singles += [([], [record], [], []) for record in latest_runs(run_records)]
        for steps_alone, runs_alone, starts_alone, plain_alone in singles:
            try:
                work, count = self._rows(steps_alone, runs_alone, starts_alone, plain_alone)
                self._transaction(work, report=False, count=count)
            except Exception as error:
                if not report:
                    raise
                if not refused_content(error) and not unbuildable(error):
                    self._report_batch(1, error)
                    continue
                if plain_alone:
                    what, run_id = "step", UUID(hex=plain_alone[0][1])
                else:
                    record = (steps_alone or runs_alone or starts_alone)[0]
                    what = "step" if steps_alone else "run" if runs_alone else "started step"
                    run_id = record.run_id
                cause = ": ".join(describe_error(error))
                self._report(
                    f"dropped a {what} record of run {run_id} that {self.url!r} "
                    f"cannot store ({cause}); the rest of its batch was written",
                    f"record: {cause}",
                )

    def _rows(
        self,
        step_records: list[StepRecord],
        run_records: list[RunRecord],
        starts: list[StepRecord] | None = None,
        plains: list[PlainRow] | None = None,
    ) -> tuple[Callable[[Session], None], int]:
        """Turn records into rows (here, in the writer, not in the step)."""
        newest = latest_runs(run_records)
        step_rows: Shaped = {}
        meta_rows: list[Any] = []
        start_rows: Shaped = {}
        finished_starts: list[str] = []
        try:
            remote: list[str] = []
            if plains:
                add_plain_rows(plains, step_rows, meta_rows)
            add_step_rows(step_records, step_rows, meta_rows, {}, remote)
            if starts or remote:
                finished_starts = settle_starts(remote, starts or [], start_rows)
                for finished in step_records:  # the heartbeat no longer waits for them
                    if finished.process_id is not None:
                        self._open_starts.discard(finished.step_run_id)
            now = time.time_ns()
            run_rows: list[Any] = []  # every column, NULLs bound: one statement shape
            run_ids = []
            with_metadata = []  # runs whose stored metadata sets this snapshot replaces
            live: list[tuple[str, bool]] = []
            pid = os.getpid()
            for record in newest:
                key = record.run_id.hex
                run_ids.append(key)
                run_rows += run_row(record, now)
                for row in metadata_rows("run", key, key, record.metadata):
                    meta_rows.extend(row)
                if record.metadata:
                    with_metadata.append(key)
                live.append((key, record.status == RUNNING and record.pid == pid))
        except BaseException as error:
            # In the writer thread even a SystemExit from a hostile value is
            # that record's fault; in the caller's thread an interrupt is theirs.
            if not isinstance(error, Exception) and threading.current_thread() is not self._thread:
                raise
            raise Unbuildable(*describe_error(error)) from error
        for key, running in live:
            if running:
                self._live.add(key)
            else:
                self._live.discard(key)

        def store(session: Session) -> None:
            if now - self._beat_ns >= HEARTBEAT_S * 1e9:
                self._beat(session, now)  # first: a run or started step names this process
            if run_ids:  # a run's record is a full snapshot: replace it
                # SQLite replaces a run's row as it inserts it, so only runs with
                # metadata need deleting first: a run's sets only ever grow, so a
                # snapshot without any replaces a run that never had one stored.
                replacing = getattr(session, "replaces_runs", False)
                doomed = with_metadata if replacing else run_ids
                if doomed:
                    session.delete_runs(doomed)
                session.insert(runs, {RUN_SHAPE: run_rows})
            if start_rows:
                session.insert(step_starts, start_rows)
            if finished_starts:
                session.delete_starts(finished_starts)
            session.insert(steps, step_rows)
            session.insert(metadata_sets, {FULL_METADATA: meta_rows})

        return store, len(step_records) + len(plains or ()) + len(newest) + len(starts or ())

    def _report_batch(self, count: int, error: BaseException) -> None:
        error_type, detail = describe_error(getattr(error, "orig", None) or error)
        cause = f"{error_type}: {detail}"
        self._report(
            f"cannot write {count} records to {self.url!r}: {cause}; they are lost, "
            "the steps went on",
            cause,
        )

    def _transaction(
        self, work: Callable[[Session], None], *, report: bool, count: int = 0
    ) -> None:
        """Run ``work`` in one write transaction; wait out locks, report the rest."""
        started = time.monotonic()
        give_up = started + LOCKED_RETRY_S
        delay = 0.05
        resending = False
        warned = False
        while True:
            try:
                if self._path is not None:
                    self._follow_file(self._path)
                session = self._session
                if session is None:
                    session = self._session = open_session(
                        self.engine, self._durable, resending=resending
                    )
                    session.wait_for_locks(LOCK_WARN_S)
                with prompt_turns():  # the lock back within 1 ms of each statement (turns.py)
                    session.begin()
                    try:
                        work(session)
                        session.commit()
                    except BaseException:
                        self._beat_pending = 0
                        session.rollback()
                        raise
                if self._beat_pending:  # the heartbeat is stored: not due again yet
                    self._beat_ns, self._beat_pending = self._beat_pending, 0
                return
            except Exception as error:
                if is_locked_error(error) and time.monotonic() < give_up:
                    waited = time.monotonic() - started
                    if not warned and waited >= LOCK_WARN_S:
                        warned = True
                        warn(
                            "zenmeta: waiting for another process's lock on %r "
                            "(%.1f s so far; giving up after %.0f s)",
                            self.url,
                            waited,
                            LOCKED_RETRY_S,
                        )
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if is_connection_error(error) and time.monotonic() < give_up:
                    self._discard_session()  # reconnect: the batch is kept
                    resending = True  # its commit may have reached the server
                    self._warn_once(f"lost the connection to {self.url!r}; reconnecting")
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                self._discard_session()
                if not report:
                    raise
                self._report_batch(count, error)
                return

    def _follow_file(self, path: str) -> None:
        """Notice the store file deleted or replaced under us; write to the path again."""
        found = file_identity(path)
        if found == self._identity and found is not None:
            return
        warn(
            "zenmeta: the store %s was deleted or replaced while this process recorded; "
            "records from now on go to a new store at that path",
            path,
        )
        self._discard_session()
        self.engine.dispose()  # the last connection to the old file lets it go
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        ensure_schema(self.engine)
        self._identity = file_identity(path)

    def _durable(self) -> bool:
        return self.immediate

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warn("zenmeta: %s", message)

    def _discard_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):  # a broken one may fail to close
                session.close()

    def _report(self, message: str, cause: str) -> None:
        """Warn once per cause and interval (a full disk fails every batch),
        remember for flush."""
        self._fault = f"zenmeta: {message}"
        warn_throttled(f"{self.url} {cause}", "zenmeta: %s", message)
