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
import time
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from string import hexdigits
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Select, func, select

from ..._codec import join_documents
from ..._config import Durability, settings
from ..._errors import ConfigurationError
from ..._records import (
    CRASHED,
    RUNNING,
    MessageRewrite,
    MetadataRewrite,
    RecordedRun,
    RecordedStep,
    RunRecord,
    StepRecord,
)
from .rows import Grouped, group_metadata, recorded_run, recorded_step
from .schema import (
    SCHEMA_VERSION,
    metadata_sets,
    open_engine,
    runs,
    schema_info,
    sqlite_path,
    steps,
)
from .writer import INTERVAL_S, QUEUE_SIZE, SQLWriter

__all__ = ["SQLStore"]

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
        self.url = url
        self._follow_settings = durability is None
        self.durability: str = durability or settings.durability()
        self.engine = open_engine(url)
        self._writer = SQLWriter(
            self.engine,
            url,
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
        if self._writer.immediate:
            self._writer.write_now(record)
        else:
            self._writer.put(record)

    def save_step(self, record: StepRecord) -> None:
        writer = self._writer
        if writer.immediate:
            writer.write_now(record)
            return
        pending = writer.pending  # the writer's put(), inlined: this is per step
        pending.append(record)
        if len(pending) >= writer.nudge_at:
            writer.nudge()

    def flush(self) -> None:
        """Block until every accepted record is stored; strict mode raises
        ``StoreError`` if some could not be."""
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
        self.engine.dispose()
        _open_stores.discard(self)

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
    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RecordedRun]:
        query = select(runs).order_by(runs.c.start_ns.desc(), runs.c.id.desc())
        if pipeline is not None:
            query = query.where(runs.c.pipeline_name == pipeline)
        if since is not None:
            query = query.where(runs.c.start_ns >= _ns(since))
        computed = status in (RUNNING, CRASHED)  # decided on read, not stored
        if computed:
            query = query.where(runs.c.status == RUNNING)
        elif status is not None:
            query = query.where(runs.c.status == status)
        if not computed:
            query = query.offset(offset) if offset else query
            query = query.limit(limit) if limit is not None else query
        with self._reading() as connection:
            found = self._runs(connection, query)
        if computed:
            end = None if limit is None else offset + limit
            found = [run for run in found if run.status == status][offset:end]
        return found

    def find_runs(self, ref: str) -> list[RecordedRun]:
        condition = runs.c.name == ref
        with contextlib.suppress(ValueError):  # not an id: a name or a prefix
            condition = condition | (runs.c.id == UUID(ref).hex)
        ordered = select(runs).order_by(runs.c.start_ns.desc())
        with self._reading() as connection:
            found = self._runs(connection, ordered.where(condition))
            prefix = ref.lower().replace("-", "")
            if not found and prefix and set(prefix) <= _HEX:
                found = self._runs(connection, ordered.where(runs.c.id.like(prefix + "%")))
        return found

    def list_steps(
        self, run_id: UUID, *, limit: int | None = None, offset: int = 0
    ) -> list[RecordedStep]:
        query = (
            select(steps)
            .where(steps.c.run_id == run_id.hex)
            .order_by(steps.c.start_ns, steps.c.id)
            .offset(offset or None)
            .limit(limit)
        )
        with self._reading() as connection:
            rows = connection.execute(query).all()
            grouped = _metadata(connection, "step", [row.id for row in rows])
        return [recorded_step(row, grouped.get(row.id, {})) for row in rows]

    def get_step(self, step_run_id: UUID) -> RecordedStep | None:
        key = step_run_id.hex
        with self._reading() as connection:
            row = connection.execute(select(steps).where(steps.c.id == key)).first()
            if row is None:
                return None
            grouped = _metadata(connection, "step", [key])
        return recorded_step(row, grouped.get(key, {}))

    def describe(self) -> dict[str, Any]:
        """Where the store is and what it holds, for ``zenmeta store info``."""
        path = sqlite_path(self.url)
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

    def _reading(self) -> Connection:
        return self.engine.connect()

    def _runs(self, connection: Connection, query: Select[Any]) -> list[RecordedRun]:
        rows = connection.execute(query).all()
        ids = [row.id for row in rows]
        grouped = _metadata(connection, "run", ids)
        counts: dict[str, int] = {}
        for chunk in _chunks(ids):
            counts.update(
                connection.execute(
                    select(steps.c.run_id, func.count())
                    .where(steps.c.run_id.in_(chunk))
                    .group_by(steps.c.run_id)
                ).all()
            )
        now = time.time_ns()
        return [
            recorded_run(row, grouped.get(row.id, {}), counts.get(row.id, 0), now) for row in rows
        ]


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
    connection.execute(
        metadata_sets.update()
        .where(
            metadata_sets.c.entity_id == entity,
            metadata_sets.c.source == change.source,
            metadata_sets.c.run_id == run_id.hex,
        )
        .values(document=document, types=types)
    )
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


def _metadata(connection: Connection, kind: str, ids: Sequence[str]) -> Grouped:
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
        grouped.update(group_metadata(rows))
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


_open_stores: weakref.WeakSet[SQLStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child starts with no writer thread and must not share the
    parent's connections: it gets its own, and the parent's queue is not its."""
    for store in list(_open_stores):
        store.engine.dispose(close=False)
        store._writer.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
