"""How a batch of rows reaches the database, inside one transaction.

Three ways with one interface. ``CoreSession`` is SQLAlchemy Core and works on
every database SQLAlchemy knows; ``PostgresSession`` (``postgres.py``) copies
rows into PostgreSQL through psycopg 3. ``SQLiteSession`` talks to the ``sqlite3``
driver directly; measured on this project's 2-core benchmark machine
(Python 3.11, SQLite 3.40), each of these mattered:

- SQLAlchemy Core ``executemany`` processed every parameter in Python:
  11-13 µs per step row, against ~3 µs for the whole insert below;
- building and compiling a statement costs SQLAlchemy ~150 µs per execute,
  which made a run's start-and-end write cost ~450 µs;
- ``sqlite3`` releases the interpreter lock for every statement it runs (for
  every row, in ``executemany``), and a busy step loop in another thread
  then holds it for up to the 5 ms switch interval before giving it back:
  280 µs a row. One multi-row ``INSERT`` per block of up to
  ``ROWS_PER_STATEMENT`` rows gives it up once, and the writer asks for it
  back within 1 ms (``turns.py``);
- a row kept as a tuple until its batch is written is a tracked object that
  makes the step loop's garbage collections come sooner, and the block's
  values must then be chained into one list: rows are appended to one flat
  list of values per shape instead, and a block is one slice of it;
- ``sqlite3`` binds ``None`` through its adapter lookup, ~0.3 µs each, so
  rows come grouped by *shape* (the columns they fill) and NULLs are literals;
- it copies every text it binds, holding the interpreter lock: 7.3k
  instructions of a step logging 3 values. The text all rows of a block
  share (a loop's run, step name, status, source and type map) is bound once
  per statement instead (``_shared_text``): 3.1k.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..._records import RUNNING
from .indexes import INDEX_INSERTED, STEPS_INSERTED, UNGUARDED
from .schema import metadata_sets, processes, runs, step_starts, steps

if TYPE_CHECKING:
    from sqlalchemy import Engine, Table

    from ..liveness import ProcessFacts

__all__ = [
    "ROWS_PER_STATEMENT",
    "Row",
    "Shape",
    "Shaped",
    "Session",
    "open_session",
    "shape_of",
]

Row = tuple[Any, ...]
Shape = tuple[int, ...]
"""The indexes, in column order, of the columns a row gives values for."""

Shaped = dict[Shape, list[Any]]
"""Rows by shape, each shape's rows as one flat list: ``len(shape)`` values a row."""

ROWS_PER_STATEMENT = 2048
"""The largest block of rows one statement inserts (fewer if SQLite's limit
on bound values is low: Debian's is 250,000, SQLite's default 32,766); a
power of two, so smaller blocks divide it. The driver keeps each block
size's prepared statement: a million-step loop's peak memory grew by 50 MiB
with blocks of 8,192 rows, 26 MiB with 4,096 and 13-14 MiB with 2,048
(``bench_store.py --million --metadata``), for about the same rate on this
project's noisy 2-core machine (60-70k steps/s in four runs with 8,192,
54-64k in four with 2,048). Before the writer asked for the interpreter
lock back within 1 ms, each block cost a 5 ms wait, and 8,192 was faster."""

_DELETE_BLOCK = 500  # ids per DELETE … IN (…)
_VARIABLE_NUMBER = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", 9)
_statements: dict[tuple[str, Shape, int, Shape], str] = {}

SHARED_FROM = 32
"""A shape's rows, when at least this many, bind the text they share once
(``_shared_text``)."""


def shape_of(row: Sequence[Any]) -> tuple[Shape, Row]:
    """A full row split into its shape and its non-NULL values (a run's row, a
    step's that failed). Lists, not generators: a third of the cost."""
    shape = tuple([index for index, value in enumerate(row) if value is not None])
    return shape, tuple([value for value in row if value is not None])


class Session(Protocol):
    """One writer's connection; every method runs inside ``begin()``/``commit()``."""

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...

    def delete_runs(self, ids: Sequence[str]) -> None:
        """Remove runs and their run-level metadata, to be written anew."""

    def insert(self, table: Table, shaped: Mapping[Shape, list[Any]]) -> None:
        """Insert rows given as flat value lists by shape (see ``Shaped``)."""

    def beat(self, ids: Sequence[str], now_ns: int) -> None:
        """Refresh the heartbeat of those runs that are still running."""

    def beat_process(self, facts: ProcessFacts) -> None:
        """Record this process, or refresh its heartbeat (and clear an exit: it
        writes again). PostgreSQL stamps the heartbeat with its own clock."""

    def end_process(self, process_id: str, exit_ns: int) -> None:
        """Record the clean exit of a process (PostgreSQL: by its own clock)."""

    def delete_starts(self, ids: Sequence[str]) -> None:
        """Remove started records whose finished steps are being inserted."""

    def wait_for_locks(self, seconds: float) -> None:
        """Wait at most this long for a lock per attempt, so that the writer
        can say it is waiting instead of blocking silently inside the driver."""


def open_session(
    engine: Engine, durable: Callable[[], bool] = lambda: True, *, resending: bool = False
) -> Session:
    """The fastest session for the engine's driver; ``durable()`` says, at each
    transaction, whether it must wait for the disk (immediate mode);
    ``resending``: its first transaction may repeat one the server committed
    just before the connection dropped (PostgreSQL then skips what is there)."""
    if engine.dialect.name == "sqlite":
        return SQLiteSession(engine)
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        from .postgres import PostgresSession

        return PostgresSession(engine, durable, resending=resending)
    return CoreSession(engine)


class CoreSession:
    """Any database, through SQLAlchemy Core."""

    def __init__(
        self,
        engine: Engine,
        durable: Callable[[], bool] | None = None,
        *,
        resending: bool = False,  # a resent batch can fail on duplicate ids here
    ) -> None:
        self._connection = engine.connect().execution_options(zenmeta_writer=True)

    def wait_for_locks(self, seconds: float) -> None:
        """Servers report lock waits their own way; nothing to set here."""

    def begin(self) -> None:
        self._connection.begin()

    def commit(self) -> None:
        self._connection.commit()

    def rollback(self) -> None:
        self._connection.rollback()

    def close(self) -> None:
        self._connection.close()

    def delete_runs(self, ids: Sequence[str]) -> None:
        self._connection.execute(runs.delete().where(runs.c.id.in_(ids)))
        self._connection.execute(
            metadata_sets.delete().where(
                metadata_sets.c.entity_id.in_(ids), metadata_sets.c.entity_kind == "run"
            )
        )

    def insert(self, table: Table, shaped: Mapping[Shape, list[Any]]) -> None:
        names = [column.name for column in table.columns]
        inserted = 0
        for shape, values in shaped.items():
            if values:
                blank = dict.fromkeys(names)
                picked = [names[index] for index in shape]
                width = len(picked)
                self._connection.execute(
                    table.insert(),
                    [
                        {**blank, **dict(zip(picked, values[start : start + width], strict=True))}
                        for start in range(0, len(values), width)
                    ],
                )
                inserted += len(values) // width
        if inserted and self._connection.dialect.name == "sqlite":
            fill = _index_fill(table, shaped)
            if fill is not None:
                self._connection.exec_driver_sql(fill, (inserted,))

    def beat(self, ids: Sequence[str], now_ns: int) -> None:
        self._connection.execute(
            runs.update()
            .where(runs.c.id.in_(ids), runs.c.status == RUNNING)
            .values(heartbeat_ns=now_ns)
        )

    def beat_process(self, facts: ProcessFacts) -> None:
        changed = self._connection.execute(
            processes.update()
            .where(processes.c.id == facts.process_id)
            .values(heartbeat_ns=facts.heartbeat_ns, exit_ns=None)
        )
        if not changed.rowcount:
            self._connection.execute(processes.insert().values(_process_values(facts)))

    def end_process(self, process_id: str, exit_ns: int) -> None:
        self._connection.execute(
            processes.update().where(processes.c.id == process_id).values(exit_ns=exit_ns)
        )

    def delete_starts(self, ids: Sequence[str]) -> None:
        self._connection.execute(step_starts.delete().where(step_starts.c.id.in_(ids)))


class SQLiteSession:
    """SQLite through its driver: the same SQL, without the per-call layers."""

    replaces_runs = True
    """A run row is written ``INSERT OR REPLACE``: no ``DELETE`` is needed first."""

    def __init__(self, engine: Engine) -> None:
        self._pooled = engine.raw_connection()  # returned to the pool on close
        driver: Any = self._pooled.driver_connection
        self._driver = driver  # in autocommit mode: BEGIN and COMMIT are said here
        self._cursor = self._driver.cursor()
        try:
            limit = self._driver.getlimit(_VARIABLE_NUMBER)
        except AttributeError:  # Python 3.10 cannot ask; assume SQLite's smallest default
            limit = 999
        self._variables: int = limit
        self._held: tuple[str, Sequence[Any]] | None = None  # see begin()
        self._begun = False

    def wait_for_locks(self, seconds: float) -> None:
        self._driver.execute(f"PRAGMA busy_timeout = {max(1, int(seconds * 1000))}")

    def begin(self) -> None:
        # The first statement is held back: a batch of one statement (a
        # carried task's step row) is then written as SQLite's own implicit
        # transaction, one call instead of three. Each call gives up the
        # interpreter lock, and in a Dask worker the event loop then keeps
        # it for up to the 5 ms switch interval.
        self._held = None
        self._begun = False

    def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        if self._begun:
            self._cursor.execute(sql, parameters)
        elif self._held is None:
            self._held = (sql, parameters)
        else:
            # IMMEDIATE takes the write lock up front, waiting up to the busy
            # timeout; a deferred transaction could fail half-way with "locked".
            self._cursor.execute("BEGIN IMMEDIATE")
            self._begun = True
            held, self._held = self._held, None
            self._cursor.execute(*held)
            self._cursor.execute(sql, parameters)

    def commit(self) -> None:
        held, self._held = self._held, None
        if self._begun:
            self._begun = False
            self._cursor.execute("COMMIT")
        elif held is not None:  # one statement: atomic on its own
            self._cursor.execute(*held)

    def rollback(self) -> None:
        self._held = None
        self._begun = False
        if self._driver.in_transaction:
            self._cursor.execute("ROLLBACK")

    def close(self) -> None:
        self._cursor.close()
        self._pooled.close()

    def delete_runs(self, ids: Sequence[str]) -> None:
        # One statement per block of ids, not two per run: a loop of short
        # runs deleted them at ~5 µs a run.
        size = max(1, min(_DELETE_BLOCK, self._variables))
        for start in range(0, len(ids), size):
            block = ids[start : start + size]
            marks = ", ".join("?" * len(block))
            self._execute(f"DELETE FROM {runs.name} WHERE id IN ({marks})", block)
            self._execute(
                f"DELETE FROM {metadata_sets.name} WHERE entity_kind = 'run' "
                f"AND entity_id IN ({marks})",
                block,
            )

    def insert(self, table: Table, shaped: Mapping[Shape, list[Any]]) -> None:
        execute = self._execute
        inserted = 0
        for shape, values in shaped.items():
            width = len(shape)
            total = len(values) // width
            shared = _shared_text(values, width) if total >= SHARED_FROM else ()
            head: list[Any] = []
            if shared:  # bound once per statement, the rest row by row
                head = [values[position] for position in shared]
                values, width = _own_values(values, width, shared), width - len(shared)
            size = self._block_size(width, len(head))
            done = 0
            while done < total:
                while size > total - done:
                    size //= 2
                block = values[done * width : (done + size) * width]
                execute(_insert_sql(table, shape, size, shared), head + block if head else block)
                done += size
            inserted += total
        if inserted:  # their value index entries (indexes.py)
            fill = _index_fill(table, shaped)
            if fill is not None:
                try:
                    execute(UNGUARDED[fill], (inserted,))
                except sqlite3.OperationalError as error:
                    if "malformed JSON" not in str(error):
                        raise
                    execute(fill, (inserted,))  # a document that is not JSON: see UNGUARDED

    def beat(self, ids: Sequence[str], now_ns: int) -> None:
        for run_id in ids:
            self._execute(
                f"UPDATE {runs.name} SET heartbeat_ns = ? WHERE id = ? AND status = ?",
                (now_ns, run_id, RUNNING),
            )

    def beat_process(self, facts: ProcessFacts) -> None:
        # One machine holds the file: its clock is the writer's and the reader's.
        values = _process_values(facts)
        self._execute(
            f"INSERT INTO {processes.name} ({', '.join(values)}) "
            f"VALUES ({', '.join('?' * len(values))}) ON CONFLICT (id) DO UPDATE "
            "SET heartbeat_ns = excluded.heartbeat_ns, exit_ns = NULL",
            tuple(values.values()),
        )

    def end_process(self, process_id: str, exit_ns: int) -> None:
        self._execute(
            f"UPDATE {processes.name} SET exit_ns = ? WHERE id = ?", (exit_ns, process_id)
        )

    def delete_starts(self, ids: Sequence[str]) -> None:
        for step_id in ids:
            self._execute(f"DELETE FROM {step_starts.name} WHERE id = ?", (step_id,))

    def _block_size(self, width: int, extra: int = 0) -> int:
        """The largest power-of-two block of rows one statement may bind,
        ``width`` values a row and ``extra`` once."""
        size = ROWS_PER_STATEMENT
        while size > 1 and size * max(width, 1) + extra > self._variables:
            size //= 2
        return size


_IN_ROW = list(steps.columns).index(steps.c.document)
"""A shape holding it inserts steps whose rows hold a metadata set."""


def _index_fill(table: Table, shaped: Mapping[Shape, list[Any]]) -> str | None:
    """The statement that indexes the rows just inserted into ``table`` in
    SQLite's value index: metadata rows, and step rows holding a set (a shape
    with ``document``); ``None`` when they hold none."""
    if table is metadata_sets:
        return INDEX_INSERTED
    if table is steps and any(_IN_ROW in shape and values for shape, values in shaped.items()):
        return STEPS_INSERTED
    return None


def _process_values(facts: ProcessFacts) -> dict[str, Any]:
    """A ``zenmeta_processes`` row by column name."""
    return {
        "id": facts.process_id,
        "host": facts.host,
        "boot_id": facts.boot_id,
        "pid_namespace": facts.pid_namespace,
        "pid": facts.pid,
        "process_start": facts.process_start,
        "start_ns": facts.start_ns,
        "heartbeat_ns": facts.heartbeat_ns,
    }


def _shared_text(values: list[Any], width: int) -> Shape:
    """The positions, in a row, of the text every row of ``values`` holds
    alike (the run's id, the step's name, the status, the set's source and
    type map, in a loop's batch). Text only: it is what costs to bind (the
    driver copies each), and ``1 == 1.0 == True`` would change a number's
    type. ``()`` when every column is shared, which no key allows."""
    found = []
    for position in range(width):
        first = values[position]
        if type(first) is str and values[position - width] == first:
            column = values[position::width]
            if column.count(first) == len(column):
                found.append(position)
    return tuple(found) if len(found) < width else ()


def _own_values(values: list[Any], width: int, shared: Shape) -> list[Any]:
    """``values`` without the ``shared`` positions of each row: one slice per
    column, copied in C, where a loop over the rows costs the writer more
    than the binds it saves."""
    own = [position for position in range(width) if position not in shared]
    left: list[Any] = [None] * (len(values) // width * len(own))
    for slot, position in enumerate(own):
        left[slot :: len(own)] = values[position::width]
    return left


def _insert_sql(table: Table, shape: Shape, rows: int, shared: Shape = ()) -> str:
    """``rows`` rows of ``shape``. With ``shared``, those positions are the
    statement's first parameters, bound once in a one-row ``WITH`` that every
    row is joined to. Every parameter is a plain ``?``: numbered ones (``?1``
    in each row, as 3f53898 had it) cost SQLite a scan of the statement's
    numbered parameters for each one it compiles (0.7 s to prepare 2,048
    rows), and the driver of Python 3.12 and later looks up every
    parameter's name at each execute: the same 0.7 s again on 3.13, and a
    ``DeprecationWarning`` for each on 3.12.1."""
    key = (table.name, shape, rows, shared)
    sql = _statements.get(key)
    if sql is None:
        names = ", ".join(column.name for column in table.columns)
        verb = "INSERT OR REPLACE" if table is runs else "INSERT"  # see replaces_runs
        into = f"{verb} INTO {table.name} ({names})"
        picks = _picks(len(table.columns), shape, shared)
        own = len(shape) - len(shared)
        row = f"({', '.join(['?'] * own)})" if shared else f"({', '.join(picks)})"
        values = ", ".join([row] * rows)
        if shared:
            alike = ", ".join(f"s{n}" for n in range(len(shared)))
            sql = (
                f"WITH shared({alike}) AS (SELECT {', '.join(['?'] * len(shared))}) "
                f"{into} SELECT {', '.join(picks)} FROM shared, (VALUES {values}) AS v"
            )
        else:
            sql = f"{into} VALUES {values}"
        _statements[key] = sql
    return sql


def _picks(columns: int, shape: Shape, shared: Shape) -> list[str]:
    """What each column takes: ``NULL`` outside ``shape`` (the driver binds
    ``None`` slowly); else ``?``, or with ``shared`` the shared value
    (``s0``…) or the row's own, in order (``v.column1``…, SQLite's names
    for the columns of ``VALUES``)."""
    at = {column: position for position, column in enumerate(shape)}
    picks = []
    own = 0
    for column in range(columns):
        position = at.get(column)
        if position is None:
            picks.append("NULL")
        elif not shared:
            picks.append("?")
        elif position in shared:
            picks.append(f"s{shared.index(position)}")
        else:
            own += 1
            picks.append(f"v.column{own}")
    return picks
