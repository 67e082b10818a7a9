"""``SQLStore``: the embedded SQLite store (and, by URL, any SQL database).

Writing goes through ``SQLWriter`` (batched in the background, or
immediate); reading rebuilds exactly what ``InMemoryStore`` returns, and a
``running`` run whose writer died reads ``crashed``. The default store is
``sqlite:///<cwd>/.zenmeta/zenmeta.db``; ``ZENMETA_STORE`` or
``zenmeta.configure(store=...)`` choose another.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from string import hexdigits
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Connection, Select, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from ..._codec import MetadataSet, join_documents
from ..._config import Durability, settings
from ..._errors import ConfigurationError, StoreError
from ..._filters import Filter, matches
from ..._log import warn
from ..._process import start_quiet, wait_for_kernel_thread
from ..._records import (
    ALL_RUNS,
    COMPLETED,
    CRASHED,
    RUNNING,
    MessageRewrite,
    MetadataRewrite,
    RecordedRun,
    RecordedStep,
    RunQuery,
    RunRecord,
    StepRecord,
    StepSummary,
    TaskSummary,
)
from ..._redact import masked_url
from ..opening import register_fork_hooks
from . import batches, retention
from .plain import plain_row, plain_values
from .query import compile_filter
from .rows import Grouped, TypeCache, Undecodable, group_metadata, recorded_run, recorded_step
from .schema import (
    SCHEMA_VERSION,
    metadata_sets,
    open_engine,
    open_read_engine,
    runs,
    schema_info,
    sqlite_path,
    steps,
    stored_version,
)
from .starts import (
    IN_ROW_VERSION,
    LIVENESS_VERSION,
    Judge,
    readable_columns,
    run_ends,
    task_summaries,
    unfinished,
    unfinished_counts,
)
from .writer import INTERVAL_S, QUEUE_SIZE, SQLWriter

if TYPE_CHECKING:
    from ..._info import StepRunInfo

__all__ = ["SQLStore", "SQLReader"]

_CHUNK = 500  # ids per IN (...) list: far below every database's parameter limit
_HEX = frozenset(hexdigits.lower())


class SQLStore:
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
        self._last_run: list[Any] = [None, ""]  # see plain_row
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
        row = plain_row(record, self._last_run, self._last_types)  # queued untracked (plain.py)
        writer.put(record if row is None else row)

    def save_plain_step(
        self, info: StepRunInfo, end_ns: int, sets: Mapping[str, MetadataSet]
    ) -> bool:
        """Queue a plain step (completed, nothing dropped, no fault, no parent,
        this process's own run) as its row, with no ``StepRecord`` built first:
        the step loop's most common record, a fifth less of its cost. ``False``
        when the caller is to build the record (immediate mode, or a value no
        encoder takes), which ``save_step`` then handles as any other."""
        writer = self._writer
        if writer.immediate:
            return False
        step_run_id, run_id, _, name, config, _, _, start_ns = info  # one unpacking
        row = plain_values(
            step_run_id,
            run_id,
            name,
            config.name,
            COMPLETED,
            start_ns,
            end_ns,
            sets,
            self._last_run,
            self._last_types,
        )
        if row is None:
            return False
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

    # -- reading (RecordReader) --------------------------------------------
    def list_runs(self, query: RunQuery = ALL_RUNS) -> list[RecordedRun]:
        statement, exact = self._selection(query)
        status, limit, offset = query.status, query.limit, query.offset
        ordered = statement.order_by(runs.c.start_ns.desc(), runs.c.id.desc())
        if exact:
            ordered = ordered.offset(offset) if offset else ordered
            ordered = ordered.limit(limit) if limit is not None else ordered
        with self._reading() as connection:
            found = self._runs(connection, ordered, with_metadata=query.with_metadata)
        if not exact:  # check the candidates as the memory store would
            where = query.where
            found = [
                run
                for run in found
                if (status is None or run.status == status)
                and (where is None or matches(where, run))
            ]
            found = found[offset : None if limit is None else offset + limit]
        return found

    def count_runs(self, query: RunQuery = ALL_RUNS) -> int:
        """How many runs ``list_runs(query)`` gives without its limit: a COUNT in
        the database, unless a status only Python can judge is asked for."""
        statement, exact = self._selection(query)
        if not exact:
            return len(self.list_runs(query._replace(limit=None, offset=0, with_metadata=False)))
        counting = select(func.count()).select_from(statement.subquery())
        with self._reading() as connection:
            return int(connection.execute(counting).scalar_one())

    def _selection(self, query: RunQuery) -> tuple[Select[Any], bool]:
        """The runs ``query`` selects, unordered, and whether SQL decides exactly."""
        statement = select(*readable_columns(runs, self._version))
        if query.pipeline is not None:
            statement = statement.where(runs.c.pipeline_name == query.pipeline)
        if query.since is not None:
            statement = statement.where(runs.c.start_ns >= _ns(query.since))
        exact = query.status not in (RUNNING, CRASHED)  # those are decided on read
        if not exact:
            statement = statement.where(runs.c.status == RUNNING)
        elif query.status is not None:
            statement = statement.where(runs.c.status == query.status)
        if query.where is not None:
            clause, exact_where = compile_filter(query.where, kind="run", dialect=self._dialect)
            statement = statement.where(clause)
            exact = exact and exact_where
        return statement, exact

    def find_runs(self, ref: str) -> list[RecordedRun]:
        condition = runs.c.name == ref
        with contextlib.suppress(ValueError):  # not an id: a name or a prefix
            condition = condition | (runs.c.id == UUID(ref).hex)
        ordered = select(*readable_columns(runs, self._version)).order_by(runs.c.start_ns.desc())
        with self._reading() as connection:
            found = self._runs(connection, ordered.where(condition))
            prefix = ref.lower().replace("-", "")
            if not found and prefix and set(prefix) <= _HEX:
                found = self._runs(connection, ordered.where(runs.c.id.like(prefix + "%")))
        return found

    def list_steps(
        self,
        run_id: UUID,
        *,
        limit: int | None = None,
        offset: int = 0,
        where: Filter | None = None,
    ) -> list[RecordedStep]:
        statement = select(*readable_columns(steps, self._version))
        statement = statement.where(steps.c.run_id == run_id.hex)
        ordered = statement.order_by(steps.c.start_ns, steps.c.id)
        return self._steps(ordered, limit, offset, where, run_ids=[run_id.hex])

    def summarize_steps(self, run_id: UUID) -> list[StepSummary]:
        """A run's steps counted by name and status in the database, not in Python:
        ``runs show`` of a 20,000-step run reads a few rows."""
        statement = (
            select(
                steps.c.step_name,
                steps.c.status,
                func.count(),
                func.sum(steps.c.end_ns - steps.c.start_ns),
            )
            .where(steps.c.run_id == run_id.hex)
            .group_by(steps.c.step_name, steps.c.status)
            .order_by(func.min(steps.c.start_ns))
        )
        with self._reading() as connection:
            rows = connection.execute(statement).all()
            started = self._unfinished(connection, run_ids=[run_id.hex])
        found = [
            StepSummary(name, status, count, int(ns or 0) / 1e9) for name, status, count, ns in rows
        ]
        for _, step in started:  # begun remotely, not finished: running or crashed
            for index, line in enumerate(found):
                if (line.step_name, line.status) == (step.step_name, step.status):
                    found[index] = line._replace(executions=line.executions + 1)
                    break
            else:
                found.append(StepSummary(step.step_name, step.status, 1, 0.0))
        return found

    def summarize_tasks(self, run_id: UUID) -> list[TaskSummary]:
        """A run's executions grouped by task key (remote steps only), counted
        by status in the database, in order of first execution."""
        if self._version < LIVENESS_VERSION:
            return []
        with self._reading() as connection:
            started = self._unfinished(connection, run_ids=[run_id.hex])
            return task_summaries(connection, run_id.hex, [step for _, step in started])

    def find_steps(
        self, where: Filter | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[RecordedStep]:
        statement = select(*readable_columns(steps, self._version))
        ordered = statement.order_by(steps.c.start_ns.desc(), steps.c.id.desc())
        return self._steps(ordered, limit, offset, where, run_ids=None)

    def _steps(
        self,
        statement: Select[Any],
        limit: int | None,
        offset: int,
        where: Filter | None,
        *,
        run_ids: list[str] | None,
    ) -> list[RecordedStep]:
        """Finished steps (``statement``'s order) and, merged in by start time,
        remote steps begun and not finished: ``running``, or ``crashed``."""
        if where is not None:  # a step's own status is stored as read: always exact
            statement = statement.where(
                compile_filter(
                    where,
                    kind="step",
                    dialect=self._dialect,
                    in_row=self._version >= IN_ROW_VERSION,
                )[0]
            )
        with self._reading() as connection:
            started = self._unfinished(connection, run_ids=run_ids)
            if where is not None:
                started = [(ns, step) for ns, step in started if matches(where, step)]
            if started:  # merged in Python: read the finished ones up to the page's end
                statement = statement.limit(None if limit is None else offset + limit)
            else:
                statement = statement.offset(offset or None).limit(limit)
            rows = connection.execute(statement).all()
            bad: Undecodable = {}
            grouped = _step_metadata(connection, rows, bad)
            ends = run_ends(connection, {row.run_id for row in rows})
        found = [
            recorded_step(row, grouped.get(row.id, {}), bad.get(row.id, ()), ends.get(row.run_id))
            for row in rows
        ]
        if not started:
            return found
        keyed = [((row.start_ns, row.id), step) for row, step in zip(rows, found, strict=True)]
        keyed += [((ns, step.id.hex), step) for ns, step in started]
        keyed.sort(key=lambda pair: pair[0], reverse=run_ids is None)  # find_steps: newest first
        return [step for _, step in keyed][offset : None if limit is None else offset + limit]

    def _unfinished(
        self, connection: Connection, *, run_ids: list[str] | None, step_id: str | None = None
    ) -> list[tuple[int, RecordedStep]]:
        if self._version < LIVENESS_VERSION:
            return []
        return unfinished(connection, Judge(connection), run_ids=run_ids, step_id=step_id)

    def get_step(self, step_run_id: UUID) -> RecordedStep | None:
        key = step_run_id.hex
        with self._reading() as connection:
            statement = select(*readable_columns(steps, self._version))
            row = connection.execute(statement.where(steps.c.id == key)).first()
            if row is None:
                started = self._unfinished(connection, run_ids=None, step_id=key)
                return started[0][1] if started else None
            bad: Undecodable = {}
            grouped = _step_metadata(connection, [row], bad)
            ends = run_ends(connection, {row.run_id})
        return recorded_step(row, grouped.get(key, {}), bad.get(key, ()), ends.get(row.run_id))

    # -- pruning (RunDeleter) ----------------------------------------------
    def delete_runs(self, run_ids: Sequence[UUID]) -> int:
        """Delete runs with their steps, metadata and child runs, in one transaction,
        and the records of processes nothing names any more once they are gone."""
        self._writer.flush()  # nothing queued for them may land after they are gone
        return len(retention.delete_runs(self.engine, run_ids))

    def vacuum(self) -> None:
        retention.vacuum(self.engine)

    def describe(self) -> dict[str, Any]:
        """Where the store is and what it holds, for ``zenmeta store info``."""
        path = sqlite_path(self.engine.url.render_as_string(hide_password=False))
        with self._reading() as connection:
            version = connection.execute(
                select(schema_info.c.value).where(schema_info.c.name == "version")
            ).scalar()
            counts = {
                name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in (
                    ("runs", runs),
                    ("steps", steps),
                    ("metadata_sets", metadata_sets),
                )
            }
            if self._version >= IN_ROW_VERSION:  # one pass: the steps and the sets they hold
                counts["steps"], held = connection.execute(
                    select(func.count(), func.count(steps.c.document))
                ).one()
                counts["metadata_sets"] += held
            by_status: dict[str, int] = dict(
                connection.execute(
                    select(runs.c.status, func.count()).group_by(runs.c.status)
                ).all()
            )
        return {
            "url": self.url,
            "backend": self.engine.dialect.name,
            "path": path,
            "size_bytes": _file_size(path),
            "schema_version": int(version or 0),
            "code_schema_version": SCHEMA_VERSION,
            "durability": self.durability,
            **counts,
            "runs_by_stored_status": by_status,
        }

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for one read, after this store's own queued records are
        written (a run's end does not wait for them); a database failure is one
        ``StoreError`` line."""
        writer = getattr(self, "_writer", None)  # a SQLReader has none
        if writer is not None and writer.busy():
            writer.flush(keep_fault=True)  # a write fault stays for flush() to raise
        try:
            with self.engine.connect() as connection:
                yield connection
        except SQLAlchemyError as error:
            cause = getattr(error, "orig", None) or error
            first = (str(cause).strip().splitlines() or [""])[0]
            raise StoreError(
                f"cannot read the store {masked_url(self.url)}: {type(cause).__name__}: {first}"
            ) from None

    def _runs(
        self, connection: Connection, query: Select[Any], *, with_metadata: bool = True
    ) -> list[RecordedRun]:
        rows = connection.execute(query).all()
        ids = [row.id for row in rows]
        bad: Undecodable = {}
        grouped = _metadata(connection, "run", ids, bad) if with_metadata else {}
        counts: dict[str, tuple[int, int]] = {}
        failed = func.sum(case((steps.c.status == "failed", 1), else_=0))
        for chunk in _chunks(ids):
            for run_id, count, failures in connection.execute(
                select(steps.c.run_id, func.count(), failed)
                .where(steps.c.run_id.in_(chunk))
                .group_by(steps.c.run_id)
            ):
                counts[run_id] = (int(count), int(failures or 0))
        now = time.time_ns()
        judge = Judge(connection)
        owners = {}
        started: dict[str, int] = {}
        if self._version >= LIVENESS_VERSION:
            owners = judge.facts(row.process_id for row in rows if row.status == RUNNING)
            started = unfinished_counts(connection, ids)
        found = []
        for row in rows:
            count, failures = counts.get(row.id, (0, 0))
            owner = owners.get(row.process_id) if row.process_id else None
            found.append(
                recorded_run(
                    row,
                    grouped.get(row.id, {}),
                    count + started.get(row.id, 0),
                    now,
                    failed_step_count=failures,
                    undecodable=bad.get(row.id, ()),
                    owner=owner,
                    server_now_ns=None if owner is None else judge.now_ns,
                )
            )
        return found


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


def _metadata(
    connection: Connection, kind: str, ids: Sequence[str], undecodable: Undecodable
) -> Grouped:
    grouped: Grouped = {}
    columns = (
        metadata_sets.c.entity_id,
        metadata_sets.c.source,
        metadata_sets.c.document,
        metadata_sets.c.types,
    )
    for chunk in _chunks(ids):
        rows = connection.execute(
            select(*columns)
            .where(metadata_sets.c.entity_kind == kind, metadata_sets.c.entity_id.in_(chunk))
            .order_by(metadata_sets.c.entity_id, metadata_sets.c.position)
        )
        grouped.update(group_metadata(rows, undecodable))
    return grouped


def _step_metadata(
    connection: Connection, rows: Sequence[Any], undecodable: Undecodable
) -> Grouped:
    """The sets of these step rows: the one a row holds (schema version 6),
    else the step's ``zenmeta_metadata`` rows. A step has one or the other:
    the writer keeps a set in the row only for a step whose one set it is."""
    held = [
        (row.id, row.source, row.document, row.types) for row in rows if row.document is not None
    ]
    grouped = group_metadata(held, undecodable)
    others = [row.id for row in rows if row.document is None]
    grouped.update(_metadata(connection, "step", others, undecodable))
    return grouped


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _ns(moment: datetime) -> int:
    """A naive datetime is taken as UTC, the zone every stored time is in."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000) * 1000


def _file_size(path: str | None) -> int | None:
    if path is None:
        return None
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(path + suffix)
    return total


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
