"""Reading a SQL store: runs and steps rebuilt as ``InMemoryStore`` has them.

``SQLStore`` (``__init__.py``) writes, rewrites and prunes; this half reads.
Every read first writes what this process still has queued for the store
(a run's end does not wait for its writer), so that a script reads back
what it just recorded, and a database failure is one ``StoreError`` line.
A ``running`` run whose process is gone reads ``crashed``
(``starts.Judge``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from string import hexdigits
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Connection, Select, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from ..._errors import StoreError
from ..._filters import Filter, matches
from ..._records import (
    ALL_RUNS,
    CRASHED,
    RUNNING,
    RecordedRun,
    RecordedStep,
    RunQuery,
    StepSummary,
    TaskSummary,
)
from ..._redact import masked_url
from .query import compile_filter
from .rows import Grouped, Undecodable, group_metadata, recorded_run, recorded_step
from .schema import (
    SCHEMA_VERSION,
    metadata_sets,
    runs,
    schema_info,
    sqlite_path,
    steps,
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

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["StoreReading"]

_CHUNK = 500  # ids per IN (...) list: far below every database's parameter limit
_HEX = frozenset(hexdigits.lower())


class StoreReading:
    """The reading methods of ``SQLStore`` and ``SQLReader``; the state they
    read is the store's own, set in ``SQLStore.__init__``."""

    engine: Engine
    url: str
    durability: str
    _version: int
    _dialect: str

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
