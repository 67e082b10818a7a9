"""``SQLStore``: the embedded SQLite store (and, by URL, any SQL database).

Writing goes through ``SQLWriter`` (batched in the background, or
immediate); reading (``reading.py``) rebuilds exactly what
``InMemoryStore`` returns, and a ``running`` run whose writer died reads
``crashed``. The default store is
``sqlite:///<cwd>/.zenmeta/zenmeta.db``; ``ZENMETA_STORE`` or
``zenmeta.configure(store=...)`` choose another.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import select

from ..._codec import MetadataSet, join_documents
from ..._config import Durability, settings
from ..._errors import ConfigurationError, StoreError
from ..._log import warn
from ..._process import start_quiet, wait_for_kernel_thread
from ..._records import COMPLETED, MessageRewrite, MetadataRewrite, RunRecord, StepRecord
from ..._redact import masked_url
from ..opening import register_fork_hooks
from . import batches, retention
from .plain import is_plain
from .reading import StoreReading
from .rows import encoded_sets
from .schema import (
    SCHEMA_VERSION,
    metadata_sets,
    open_engine,
    open_read_engine,
    runs,
    steps,
    stored_version,
)
from .writer import INTERVAL_S, QUEUE_SIZE, SQLWriter

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .rows import TypeCache

__all__ = ["SQLStore", "SQLReader"]


class SQLStore(StoreReading):
    """Runs, steps and metadata in a SQL database, written without slowing steps.

    ``durability`` is ``"batched"`` (a background thread writes at least every
    quarter second; a killed process loses at most that much) or
    ``"immediate"`` (each record is committed before the step returns, so it
    survives the process being killed; SQLite's WAL mode with
    ``synchronous=NORMAL`` does not wait for the disk itself, which is what
    would also survive a power cut, at ~0.3 ms per step). ``None`` follows
    ``zenmeta.configure(durability=...)``, read again as each run starts.
    """

    def __init__(
        self,
        url: str,
        *,
        durability: Durability | str | None = None,
        queue_size: int = QUEUE_SIZE,
        interval_s: float = INTERVAL_S,
    ) -> None:
        if durability not in (None, "batched", "immediate"):
            raise ConfigurationError(
                f"durability must be 'batched' or 'immediate', not {durability!r}"
            )
        self.url = masked_url(url)  # what is shown; the real URL stays in the engine
        self._follow_settings = durability is None
        self.durability: str = durability or settings.durability()
        # Opening takes the write lock once (to create or check the schema):
        # waiting for another process's lock there is said, naming the store.
        waiting = threading.Timer(
            batches.LOCK_WARN_S,
            warn,
            ("zenmeta: waiting for another process's lock to open %r", url),
        )
        waiting.daemon = True
        timed = start_quiet(waiting)  # not at the interpreter's exit: no warning then
        try:
            self.engine = open_engine(url)
        finally:
            waiting.cancel()
            if timed:
                waiting.join()  # gone at once: no thread of ours left for a fork to copy
                wait_for_kernel_thread(waiting.native_id)
        self._dialect = self.engine.dialect.name
        self._version = SCHEMA_VERSION  # opening migrated it
        self._last_run: list[Any] = [None, ""]  # see save_plain_step
        self._last_types: TypeCache = {}
        self._writer = SQLWriter(
            self.engine,
            self.url,
            immediate=self.durability == "immediate",
            queue_size=queue_size,
            interval_s=interval_s,
        )
        _open_stores.add(self)

    def __repr__(self) -> str:
        return f"<SQLStore {self.url!r} {self.durability}>"

    # -- writing (RecordStore) ---------------------------------------------
    def save_run(self, record: RunRecord) -> None:
        if self._follow_settings and record.end_ns is None:
            self._use(settings.durability())
        writer = self._writer
        if writer.immediate:
            writer.write_now(record)
        elif record.end_ns is None:
            writer.put(record, urgent=writer.announce(record))
        else:  # a run's end is not waited for (flush_after_run): write it soon
            writer.announce(record)
            writer.put(record)
            writer.wake()

    def save_step(self, record: StepRecord) -> None:
        writer = self._writer
        if writer.immediate:
            writer.write_now(record)
            return
        if not is_plain(record) or not self.save_plain_step(  # queued untracked (plain.py)
            record.step_run_id,
            record.run_id,
            record.name,
            record.step_name,
            record.start_ns,
            record.end_ns,
            record.metadata,
        ):
            writer.put(record)

    def save_plain_step(
        self,
        step_run_id: UUID,
        run_id: UUID,
        name: str,
        step_name: str,
        start_ns: int,
        end_ns: int,
        sets: Mapping[str, MetadataSet],
    ) -> bool:
        """Queue a plain step (completed, nothing dropped, no fault, no parent,
        this process's own run) as its row (``plain.py``), with no
        ``StepRecord`` built first: the step loop's most common record, a
        fifth less of its cost. ``False`` when the caller is to build the
        record (immediate mode, or a value no encoder takes), which
        ``save_step`` then queues as any other, for the writer to drop it
        alone and visibly. The row is built here, with no helper's call:
        each call a step makes costs ~600 of its ~50k instructions."""
        writer = self._writer
        if writer.immediate:
            return False
        last_run = self._last_run  # consecutive steps share their run; its hex costs a call
        if run_id is not last_run[0]:
            last_run[0] = run_id
            last_run[1] = run_id.hex
        documents: Sequence[str] = ()
        if sets:
            try:
                documents = encoded_sets(sets, self._last_types)
            except Exception:
                return False
        row = (
            step_run_id.int.to_bytes(16, "big").hex(),
            last_run[1],
            name,
            step_name,
            COMPLETED,
            start_ns,
            end_ns,
            *documents,
        )
        writer.put(row)
        return True

    def save_step_started(self, record: StepRecord) -> None:
        """Queue a remote step's started record ahead of the rest, waking the
        writer: it is stored within milliseconds, before the step is likely
        to die, and superseded by the step's finished record."""
        self._writer.put_started(record)

    def flush(self) -> None:
        """Block until every accepted record is stored; strict mode raises
        ``StoreError`` if some could not be."""
        self._writer.flush()

    def has_queued(self) -> bool:
        """Whether records of this process are queued or being written."""
        return self._writer.busy()

    def close(self) -> None:
        self._writer.close()
        self.engine.dispose()
        _open_stores.discard(self)

    def release(self) -> None:
        """Give back the writer thread and connections while nobody uses the
        store; the next write takes them again. A store with a run of this
        process still open keeps them (its heartbeat needs the thread)."""
        if self._writer.release():
            self.engine.dispose()

    def _use(self, durability: str) -> None:
        if durability != self.durability:
            self._writer.flush()  # records keep their order across the switch
            self.durability = durability
            self._writer.immediate = durability == "immediate"

    # -- rewriting (MetadataRewriter) --------------------------------------
    def rewrite_metadata(
        self, run_id: UUID, rewrites: Sequence[MetadataRewrite | MessageRewrite]
    ) -> None:
        """Replace stored metadata sets (adding their notes) and messages of
        one run and its steps, in one transaction (``zenmeta store scan --fix``).

        Queued records are written first, so a rewrite never races the
        writer with an older copy of the same set.
        """
        self._writer.flush()
        sqlite = self.engine.dialect.name == "sqlite"
        writing = self.engine.connect().execution_options(zenmeta_writer=True)
        with writing as connection:
            if sqlite:  # the old text must not survive in freed space or the WAL
                _driver(connection).execute("PRAGMA secure_delete=ON")
            try:
                with connection.begin():
                    for change in rewrites:
                        _rewrite(connection, run_id, change)
            finally:
                if sqlite:
                    _driver(connection).execute("PRAGMA secure_delete=OFF")
        if sqlite:
            with self.engine.connect() as connection:
                _driver(connection).execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- pruning (RunDeleter) ----------------------------------------------
    def delete_runs(self, run_ids: Sequence[UUID]) -> int:
        """Delete runs with their steps, metadata and child runs, in one transaction,
        and the records of processes nothing names any more once they are gone."""
        self._writer.flush()  # nothing queued for them may land after they are gone
        return len(retention.delete_runs(self.engine, run_ids))

    def vacuum(self) -> None:
        retention.vacuum(self.engine)


def _driver(connection: Connection) -> Any:
    """The sqlite3 connection itself: it runs a PRAGMA outside any transaction."""
    return connection.connection.driver_connection


def _rewrite(
    connection: Connection, run_id: UUID, change: MetadataRewrite | MessageRewrite
) -> None:
    entity = change.entity_id.hex
    if isinstance(change, MessageRewrite):
        table = runs if change.kind == "run" else steps
        faults = [[f.component, f.hook, f.error_type, f.message] for f in change.faults]
        connection.execute(
            table.update()
            .where(table.c.id == entity)
            .values(
                error_message=change.error_message, faults=json.dumps(faults) if faults else None
            )
        )
        return
    document, types = join_documents(change.metadata)
    where = (metadata_sets.c.source == change.source, metadata_sets.c.run_id == run_id.hex)
    changed = connection.execute(
        metadata_sets.update()
        .where(metadata_sets.c.entity_id == entity, *where)
        .values(document=document, types=types)
    )
    if not changed.rowcount and change.kind == "step":  # the set its row holds (version 6)
        held = (steps.c.id == entity, steps.c.source == change.source, steps.c.run_id == run_id.hex)
        connection.execute(steps.update().where(*held).values(document=document, types=types))
    if not change.notes:
        return
    table = runs if change.kind == "run" else steps
    stored = connection.execute(select(table.c.dropped).where(table.c.id == entity)).scalar()
    dropped = json.loads(stored) if stored else []
    for note in change.notes:
        if list(note) not in dropped:
            dropped.append(list(note))
    connection.execute(
        table.update().where(table.c.id == entity).values(dropped=json.dumps(dropped))
    )


class SQLReader(SQLStore):
    """A SQL store opened only to read it (``Client``, the CLI, the dashboard).

    It never creates a file, a table or a row, and opens SQLite files
    read-only, so it reads a store in a read-only folder or mount.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._follow_settings = False
        self.durability = "read-only"
        self.engine = open_read_engine(url)
        self._dialect = self.engine.dialect.name
        self._version = stored_version(self.engine)

    def __repr__(self) -> str:
        return f"<SQLReader {masked_url(self.url)!r}>"

    def save_run(self, record: RunRecord) -> None:
        raise StoreError(f"{masked_url(self.url)} was opened to read; it takes no runs")

    def save_step(self, record: StepRecord) -> None:
        raise StoreError(f"{masked_url(self.url)} was opened to read; it takes no steps")

    def save_step_started(self, record: StepRecord) -> None:
        raise StoreError(f"{masked_url(self.url)} was opened to read; it takes no steps")

    def flush(self) -> None:
        pass

    def has_queued(self) -> bool:
        return False  # a reader queues nothing; flush_for_reading asks the writer too

    def close(self) -> None:
        self.engine.dispose()

    def release(self) -> None:
        self.engine.dispose()

    def delete_runs(self, run_ids: Sequence[UUID]) -> int:
        return self.writable().delete_runs(run_ids)

    def rewrite_metadata(
        self, run_id: UUID, rewrites: Sequence[MetadataRewrite | MessageRewrite]
    ) -> None:
        self.writable().rewrite_metadata(run_id, rewrites)

    def vacuum(self) -> None:
        self.writable().vacuum()

    def writable(self) -> SQLStore:
        """The same store opened to write, for the one reader that prunes (``gc``)."""
        from .. import open_store

        store = open_store(self.url)
        opened = getattr(store, "opened", None)  # one still opening (opening.py): wait
        if callable(opened):
            store = opened()
        assert isinstance(store, SQLStore)
        return store


_open_stores: weakref.WeakSet[SQLStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child starts with no writer thread and must not share the
    parent's connections: it gets its own, and the parent's queue is not its."""
    for store in list(_open_stores):
        store.engine.dispose(close=False)
        store._writer.forget_after_fork()


_paused: list[SQLWriter] = []


def pause_for_fork() -> None:
    """No writer thread lives across a ``fork()``, and no fork happens
    mid-transaction: SQLite's per-file lock bookkeeping would be copied into
    the child as held by a connection it does not have, and every write of
    the child would then wait for a lock nobody will release. Each writer's
    thread is stopped between batches and its lock held (``pause_for_fork``).
    Called by the store front's one fork hook (``opening.register_fork_hooks``),
    after any store still being opened has finished opening."""
    for store in list(_open_stores):
        writer = store._writer
        writer.pause_for_fork()
        _paused.append(writer)


def resume_after_fork() -> None:
    while _paused:
        _paused.pop().resume_after_fork()


def reset_in_child() -> None:
    _paused.clear()  # the child's writers get new locks, and no thread until used
    _after_fork_in_child()


register_fork_hooks()
