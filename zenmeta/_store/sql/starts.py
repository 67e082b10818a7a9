"""Started records of remote steps, process records, and judging both on read.

A remote step's started record (``save_step_started``) is a row of
``zenmeta_step_starts``, deleted in the transaction that inserts its finished
step: finished steps stay insert-only (which is what lets PostgreSQL copy
them), and the table holds only steps begun and not finished. On read such a
row is a step ``running``, or ``crashed`` when the process that executes it is
gone (``liveness.process_is_gone``), judged by the clock its heartbeat was
written by: PostgreSQL's own (``clock_timestamp()``) there, so that no host's
clock matters; on SQLite, one machine holds the file and its clock is the
writer's and the reader's, so it is the local clock (other databases, through
SQLAlchemy Core, are judged alike by the hosts' clocks).

Stores of schema version 3 or older are read as they are (readers never
migrate): the columns version 4 added read as NULL there.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple
from uuid import UUID

from sqlalchemy import Connection, Table, exists, func, literal, select, text

from ..._info import utc_from_ns
from ..._records import CRASHED, RUNNING, RecordedStep, StepRecord, TaskSummary, summarize_tasks
from ..liveness import ProcessFacts, process_is_gone
from .schema import processes, runs, step_starts, steps
from .sessions import Shaped, shape_of

__all__ = [
    "IN_ROW_VERSION",
    "LIVENESS_VERSION",
    "Started",
    "add_start_rows",
    "settle_starts",
    "readable_columns",
    "run_ends",
    "task_summaries",
    "Judge",
    "unfinished",
    "unfinished_counts",
]

LIVENESS_VERSION = 4
"""The schema version that added process ids, task keys and started records."""

IN_ROW_VERSION = 6
"""The schema version that keeps a plain step's metadata set in its row."""

_ADDED = {  # by the version that added them
    LIVENESS_VERSION: {
        "zenmeta_runs": frozenset({"process_id"}),
        "zenmeta_steps": frozenset({"process_id", "task_key", "attempt"}),
    },
    IN_ROW_VERSION: {"zenmeta_steps": frozenset({"source", "document", "types"})},
}
_CHUNK = 500


class Started(NamedTuple):
    """A remote step's started record, queued for the writer (a type of its
    own, so the writer's drain tells it from a finished step in one check)."""

    record: StepRecord


def add_start_rows(started: Iterable[StepRecord], shaped: Shaped) -> list[str]:
    """Append ``zenmeta_step_starts`` rows by shape; the ids, as hex."""
    ids = []
    for record in started:
        entity = record.step_run_id.hex
        ids.append(entity)
        parent = record.parent_step_run_id
        shape, values = shape_of(
            (
                entity,
                record.run_id.hex,
                None if parent is None else parent.hex,
                record.name,
                record.step_name,
                record.start_ns,
                record.process_id,
                record.task_key,
                record.attempt,
            )
        )
        shaped.setdefault(shape, []).extend(values)
    return ids


def settle_starts(remote: Sequence[str], starts: Sequence[StepRecord], shaped: Shaped) -> list[str]:
    """For one batch: rows (into ``shaped``) for the started records whose
    steps did not finish in it; the ids of stored started records to delete,
    their steps finished (``remote``: ids of finished steps naming a process).
    A started and a finished record meeting in one batch write neither the
    started row nor its deletion."""
    finished = set(remote)
    add_start_rows((r for r in starts if r.step_run_id.hex not in finished), shaped)
    meeting = {r.step_run_id.hex for r in starts} & finished
    return [entity for entity in remote if entity not in meeting]


def readable_columns(table: Table, version: int) -> list[Any]:
    """``table``'s columns as a store of ``version`` has them: those added
    since read as NULL, so one row shape serves every version."""
    added: set[str] = set()
    for since, columns in _ADDED.items():
        if version < since:
            added |= columns.get(table.name, frozenset())
    if not added:
        return list(table.columns)
    return [literal(None).label(c.name) if c.name in added else c for c in table.columns]


class Judge:
    """Process records and the clock to judge them by, read once per read."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._facts: dict[str, ProcessFacts | None] = {}
        self._now_ns: int | None = None

    @property
    def now_ns(self) -> int:
        """The database's clock, read at the first judgement that needs it."""
        if self._now_ns is None:
            self._now_ns = _database_now_ns(self._connection)
        return self._now_ns

    def facts(self, process_ids: Iterable[str | None]) -> dict[str, ProcessFacts]:
        """The records of these processes (those the store has)."""
        wanted = sorted({pid for pid in process_ids if pid and pid not in self._facts})
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            for pid in chunk:
                self._facts[pid] = None
            for row in self._connection.execute(select(processes).where(processes.c.id.in_(chunk))):
                self._facts[row.id] = ProcessFacts(
                    row.id,
                    row.host,
                    row.boot_id,
                    row.pid_namespace,
                    row.pid,
                    row.process_start,
                    row.start_ns,
                    row.heartbeat_ns,
                    row.exit_ns,
                )
        return {pid: facts for pid, facts in self._facts.items() if facts is not None}

    def gone(self, process_id: str | None) -> bool:
        """Whether that process has certainly stopped; unknown ones are not judged."""
        if process_id is None:
            return False
        facts = self.facts([process_id]).get(process_id)
        return facts is not None and process_is_gone(facts, self.now_ns)


def _database_now_ns(connection: Connection) -> int:
    if connection.dialect.name == "postgresql":
        from .postgres import SERVER_NOW_NS

        return int(connection.execute(text(f"SELECT {SERVER_NOW_NS}")).scalar_one())
    return time.time_ns()


def _not_finished() -> Any:
    return ~exists().where(steps.c.id == step_starts.c.id)


def unfinished(
    connection: Connection,
    judge: Judge,
    *,
    run_ids: Sequence[str] | None = None,
    step_id: str | None = None,
) -> list[tuple[int, RecordedStep]]:
    """Started steps with no finished record (of these runs, or this step, or
    all), each ``running`` or ``crashed``, in start order, with their start
    times in nanoseconds (to merge them with finished steps exactly)."""
    statement = select(step_starts).where(_not_finished()).order_by(step_starts.c.start_ns)
    if step_id is not None:
        statement = statement.where(step_starts.c.id == step_id)
    if run_ids is not None:
        statement = statement.where(step_starts.c.run_id.in_(list(run_ids)))
    rows = connection.execute(statement).all()
    judge.facts(row.process_id for row in rows)
    found = []
    for row in rows:
        start = utc_from_ns(row.start_ns)
        parent = None if row.parent_step_id is None else UUID(hex=row.parent_step_id)
        found.append(
            (
                row.start_ns,
                RecordedStep(
                    id=UUID(hex=row.id),
                    run_id=UUID(hex=row.run_id),
                    parent_step_run_id=parent,
                    name=row.name,
                    step_name=row.step_name,
                    status=CRASHED if judge.gone(row.process_id) else RUNNING,
                    start_time=start,
                    end_time=start,
                    error_type=None,
                    error_message=None,
                    metadata={},
                    faults=(),
                    dropped=(),
                    process_id=row.process_id,
                    task_key=row.task_key,
                    attempt=row.attempt,
                ),
            )
        )
    return found


def unfinished_counts(connection: Connection, run_ids: Sequence[str]) -> dict[str, int]:
    """How many started, unfinished steps each of these runs has."""
    counts: dict[str, int] = {}
    for start in range(0, len(run_ids), _CHUNK):
        chunk = list(run_ids[start : start + _CHUNK])
        for run_id, count in connection.execute(
            select(step_starts.c.run_id, func.count())
            .where(step_starts.c.run_id.in_(chunk), _not_finished())
            .group_by(step_starts.c.run_id)
        ):
            counts[run_id] = int(count)
    return counts


def task_summaries(
    connection: Connection, run_hex: str, started: Sequence[RecordedStep]
) -> list[TaskSummary]:
    """A run's executions by task key: finished ones counted by status in the
    database, ``started`` (unfinished, judged) added, in order of first execution."""
    statement = (
        select(steps.c.task_key, steps.c.step_name, steps.c.status, func.count())
        .where(steps.c.run_id == run_hex, steps.c.task_key.is_not(None))
        .group_by(steps.c.task_key, steps.c.step_name, steps.c.status)
        .order_by(func.min(steps.c.start_ns))
    )
    rows = connection.execute(statement).all()
    counted = [(key, name, status) for key, name, status, n in rows for _ in range(n)]
    counted += [(step.task_key, step.step_name, step.status) for step in started]
    return summarize_tasks(counted)


def run_ends(connection: Connection, run_ids: Iterable[str]) -> dict[str, int]:
    """The end times of those runs that have ended: a step ending later is late."""
    ends: dict[str, int] = {}
    for chunk in _id_chunks(sorted(run_ids)):
        query = select(runs.c.id, runs.c.end_ns).where(runs.c.id.in_(chunk))
        ends.update((run_id, end) for run_id, end in connection.execute(query) if end is not None)
    return ends


def _id_chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
