"""Copying runs from one SQL store to another: a laptop's SQLite file to the
team's PostgreSQL, or back.

Row for row, ids kept, so a copy is idempotent and incremental: steps are
insert-only (a step already in the target is skipped, so copying twice adds
nothing), and a run's row and run-level metadata are replaced by the
source's (a run still running at one copy gets its later steps and its
final status at the next). A run the target already holds finished is never
replaced by a source that still says ``running``. Each chunk of runs is one
target transaction, written through the writer's fastest session (``COPY``
on PostgreSQL), so an interrupted copy leaves whole runs and is finished by
running it again. Metadata documents keep their values and types either way:
one read from ``JSONB`` is written back in the codec's exact JSON, in the
recorded key order.

Liveness travels too (``_copy_liveness``): the started records of steps not
finished in the source, and the records of the processes the copied runs and
started steps name, so that the target judges an open run by its owner and a
dead worker's step reads ``crashed`` there as in the source. They are state,
not history: each copy replaces them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, exists, select

from ..._errors import StoreError
from .. import CopyCounts
from .rows import normalized_document
from .schema import metadata_sets, open_engine, processes, runs, step_starts, steps
from .sessions import Shaped, open_session, shape_of

__all__ = ["copy_between"]

RUNS_PER_TRANSACTION = 200
_IN_LIST = 500


def copy_between(source: str, target: str, since_ns: int | None = None) -> CopyCounts:
    """Copy every run (started at or after ``since_ns``, if given) from the
    store at ``source`` to the store at ``target``, with steps and metadata."""
    from_engine = open_engine(source)
    try:
        to_engine = open_engine(target)
        try:
            if _same_database(from_engine, to_engine):
                raise StoreError("the source and the target of a copy are the same store")
            return _copy(from_engine, to_engine, since_ns)
        finally:
            to_engine.dispose()
    finally:
        from_engine.dispose()


def _same_database(left: Engine, right: Engine) -> bool:
    return left.url.render_as_string(hide_password=False) == right.url.render_as_string(
        hide_password=False
    )


def _copy(source: Engine, target: Engine, since_ns: int | None) -> CopyCounts:
    query = select(runs).order_by(runs.c.start_ns, runs.c.id)
    if since_ns is not None:
        query = query.where(runs.c.start_ns >= since_ns)
    totals = [0, 0, 0]
    with source.connect() as reading:
        run_rows = [tuple(row) for row in reading.execute(query)]
        for start in range(0, len(run_rows), RUNS_PER_TRANSACTION):
            chunk = run_rows[start : start + RUNS_PER_TRANSACTION]
            counts = _copy_runs(reading, target, chunk, source.dialect.name == "postgresql")
            totals = [total + count for total, count in zip(totals, counts, strict=True)]
            _copy_liveness(reading, target, chunk)
    return CopyCounts(runs=totals[0], steps=totals[1], metadata_sets=totals[2])


def _copy_runs(
    reading: Connection, target: Engine, run_rows: list[tuple[Any, ...]], from_jsonb: bool
) -> tuple[int, int, int]:
    ids = [row[0] for row in run_rows]
    with target.connect() as looking:
        finished = {
            run_id
            for run_id, end_ns in _in_chunks(
                looking, select(runs.c.id, runs.c.end_ns), runs.c.id, ids
            )
            if end_ns is not None
        }
        existing_steps = {
            row[0] for row in _in_chunks(looking, select(steps.c.id), steps.c.run_id, ids)
        }
    end = list(runs.columns).index(runs.c.end_ns)
    replaced = [row for row in run_rows if row[end] is not None or row[0] not in finished]
    replaced_ids = [row[0] for row in replaced]
    held = list(steps.columns).index(steps.c.document)  # a set in the step's row (version 6)
    new_steps = []
    written = 0
    for row in _in_chunks(reading, select(steps), steps.c.run_id, ids):
        if row[0] in existing_steps:
            continue
        values = list(row)
        if values[held] is not None:
            if from_jsonb:
                values[held] = normalized_document(values[held], values[held + 1])
            written += 1
        new_steps.append(tuple(values))
    new_step_ids = {row[0] for row in new_steps}
    wanted_runs = set(replaced_ids)
    meta: list[Any] = []
    kind = list(metadata_sets.columns).index(metadata_sets.c.entity_kind)
    document = list(metadata_sets.columns).index(metadata_sets.c.document)
    for row in _in_chunks(reading, select(metadata_sets), metadata_sets.c.run_id, ids):
        entity_id, kind_of = row[0], row[kind]
        if (entity_id in new_step_ids) if kind_of == "step" else (entity_id in wanted_runs):
            values = list(row)
            if from_jsonb:
                values[document] = normalized_document(values[document], values[document + 1])
            meta.extend(values)
            written += 1
    session = open_session(target)
    try:
        session.begin()
        try:
            if replaced_ids:
                session.delete_runs(replaced_ids)
                session.insert(runs, _shaped(replaced))
            session.insert(steps, _shaped(new_steps))
            session.insert(metadata_sets, {tuple(range(len(metadata_sets.columns))): meta})
            session.commit()
        except BaseException:
            session.rollback()
            raise
    finally:
        session.close()
    return len(replaced), len(new_steps), written


def _copy_liveness(reading: Connection, target: Engine, run_rows: list[tuple[Any, ...]]) -> None:
    """The source's unfinished started records of these runs, and the process
    records they and the runs name, replacing the target's copies."""
    ids = [row[0] for row in run_rows]
    unfinished = ~exists().where(steps.c.id == step_starts.c.id)
    starts = [
        dict(row._mapping)
        for row in _in_chunks(
            reading, select(step_starts).where(unfinished), step_starts.c.run_id, ids
        )
    ]
    owner = list(runs.columns).index(runs.c.process_id)
    named = sorted(
        {row[owner] for row in run_rows if row[owner]} | {s["process_id"] for s in starts}
    )
    facts = [
        dict(row._mapping) for row in _in_chunks(reading, select(processes), processes.c.id, named)
    ]
    with target.begin() as writing:
        for start in range(0, len(ids), _IN_LIST):
            chunk = ids[start : start + _IN_LIST]
            writing.execute(delete(step_starts).where(step_starts.c.run_id.in_(chunk)))
        for start in range(0, len(named), _IN_LIST):
            writing.execute(
                delete(processes).where(processes.c.id.in_(named[start : start + _IN_LIST]))
            )
        if starts:
            writing.execute(step_starts.insert(), starts)
        if facts:
            writing.execute(processes.insert(), facts)


def _in_chunks(
    connection: Connection, query: Any, column: Any, ids: Sequence[str]
) -> Iterable[Any]:
    """Rows of ``query`` whose ``column`` is one of ``ids``, a bounded IN list at a time."""
    for start in range(0, len(ids), _IN_LIST):
        yield from connection.execute(query.where(column.in_(ids[start : start + _IN_LIST])))


def _shaped(rows: Iterable[Sequence[Any]]) -> Shaped:
    shaped: Shaped = {}
    for row in rows:
        shape, values = shape_of(row)
        shaped.setdefault(shape, []).extend(values)
    return shaped
