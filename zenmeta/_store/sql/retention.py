"""Deleting runs: each with its steps (started ones too), metadata and child
runs, in one transaction.

A reader never sees half a run: the run row, its steps, every metadata set
and the runs nested under it go together or not at all. Metadata is reached
through the steps' and runs' ids (the metadata table's primary key), not by
scanning it for a run id. The records of processes the deletion left unnamed
go too, once those processes are gone (``forget_processes``): a live one's
record stays, whatever names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, select

from .indexes import forget_runs
from .schema import metadata_sets, processes, runs, step_starts, steps
from .starts import Judge

if TYPE_CHECKING:
    from uuid import UUID

    from sqlalchemy import ColumnElement, Connection, Engine

__all__ = ["RUNS_PER_TRANSACTION", "delete_runs", "forget_processes", "vacuum"]

RUNS_PER_TRANSACTION = 500
"""Runs deleted per transaction: how long a gc holds the write lock at a time."""

_CHUNK = 500  # ids per IN (...) list, far below every database's parameter limit


def delete_runs(engine: Engine, run_ids: Sequence[UUID]) -> list[str]:
    """Delete the runs and everything under them; the ids (hex) of all runs removed.

    Each ``RUNS_PER_TRANSACTION`` runs (with their child runs) go in one
    transaction, so a writer waiting for the lock waits for one batch, not
    for all of them; the last one also removes every deleted run's entries
    from SQLite's value index (``indexes.forget_runs``), in one pass, and the
    records of processes nothing names any more (``forget_processes``)."""
    removed: dict[str, None] = {}
    asked = [run_id.hex for run_id in run_ids]
    for start in range(0, max(len(asked), 1), RUNS_PER_TRANSACTION):
        last = start + RUNS_PER_TRANSACTION >= len(asked)
        writing = engine.connect().execution_options(zenmeta_writer=True)
        with writing as connection, connection.begin():
            doomed = _with_children(connection, asked[start : start + RUNS_PER_TRANSACTION])
            for chunk in _chunks(doomed):
                step_ids = select(steps.c.id).where(steps.c.run_id.in_(chunk)).scalar_subquery()
                connection.execute(
                    delete(metadata_sets).where(metadata_sets.c.entity_id.in_(step_ids))
                )
                connection.execute(
                    delete(metadata_sets).where(metadata_sets.c.entity_id.in_(chunk))
                )
                connection.execute(delete(steps).where(steps.c.run_id.in_(chunk)))
                connection.execute(delete(step_starts).where(step_starts.c.run_id.in_(chunk)))
                connection.execute(delete(runs).where(runs.c.id.in_(chunk)))
            removed.update(dict.fromkeys(doomed))  # a child may be asked for twice
            if last:
                forget_runs(connection, list(removed))
                forget_processes(connection)
    return list(removed)


def forget_processes(connection: Connection) -> list[str]:
    """Delete the records of processes that no run, step or started step names
    and that are gone; their ids.

    Gone is the liveness rule's own judgement (``starts.Judge``): a clean exit
    recorded, the pid gone or reused on this machine, or a heartbeat older
    than ``liveness.STALE_AFTER_S`` by the database's clock. A process that
    never beat is not judged, so its record stays. The delete checks again
    that nothing names them: a run written meanwhile keeps its owner's record."""
    unnamed = _named_by_nothing()
    candidates = list(connection.execute(select(processes.c.id).where(unnamed)).scalars())
    judge = Judge(connection)
    judge.facts(candidates)
    gone = [process_id for process_id in candidates if judge.gone(process_id)]
    for chunk in _chunks(gone):
        connection.execute(delete(processes).where(processes.c.id.in_(chunk), unnamed))
    return gone


def _named_by_nothing() -> ColumnElement[bool]:
    """A process record no run, step or started step names. ``NOT IN`` an
    uncorrelated subquery: each table is read once, not once per process
    (``process_id`` has no index; NULLs are left out, or ``NOT IN`` is never true)."""
    return and_(
        *(
            processes.c.id.not_in(select(table.c.process_id).where(table.c.process_id.is_not(None)))
            for table in (runs, steps, step_starts)
        )
    )


def _with_children(connection: Connection, ids: list[str]) -> list[str]:
    """``ids`` and every run nested under them, at any depth."""
    found = dict.fromkeys(ids)
    level = list(found)
    while level:
        children: list[str] = []
        for chunk in _chunks(level):
            children += connection.execute(
                select(runs.c.id).where(runs.c.parent_run_id.in_(chunk))
            ).scalars()
        level = [child for child in children if child not in found]
        found.update(dict.fromkeys(level))
    return list(found)


def vacuum(engine: Engine) -> None:
    """Give the freed pages back to the file system (SQLite) or the server.

    VACUUM refuses to run inside a transaction, and the engine opens one for
    every statement, so it goes through the driver's own connection."""
    pooled = engine.raw_connection()
    driver: Any = pooled.driver_connection
    postgres = engine.dialect.name == "postgresql"
    try:
        if postgres:
            driver.rollback()
            driver.autocommit = True
        cursor = driver.cursor()
        try:
            cursor.execute("VACUUM")
            if not postgres:  # in WAL mode the compacted pages sit in the log until then
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            cursor.close()
    finally:
        if postgres:
            driver.autocommit = False
        pooled.close()


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
