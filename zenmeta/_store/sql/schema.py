"""The versioned SQL schema, and opening an engine that is safe to share.

Written with SQLAlchemy Core so that PostgreSQL is a different URL, not a
different store. Ids are 32-character hex text (run and step ids are
time-ordered UUIDs, so their indexes grow at the end); times are integer
nanoseconds since the epoch, as the core takes them. Each (entity, source)
metadata set is one row holding one JSON document and its type map, which
SQLite's and PostgreSQL's JSON functions can query:
``SELECT json_extract(document, '$.accuracy') FROM zenmeta_metadata``; on
PostgreSQL the document is ``JSONB``: ``SELECT document->>'accuracy' …``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url

from ..._errors import StoreError, StoreNotFoundError
from ..._redact import masked_url
from .pool import ClosingQueuePool

__all__ = [
    "SCHEMA_VERSION",
    "tables",
    "runs",
    "steps",
    "metadata_sets",
    "schema_info",
    "processes",
    "step_starts",
    "revisions",
    "open_engine",
    "open_read_engine",
    "ensure_schema",
    "file_identity",
    "sqlite_path",
    "is_locked_error",
    "is_connection_error",
    "stored_version",
]

SCHEMA_VERSION = 6
"""Bumped whenever a table changes, with a migration script in ``migrations/``
(Alembic revision ``"%04d" % version``); a store newer than this code is refused."""

BUSY_TIMEOUT_S = 30.0
"""How long SQLite waits for another writer's lock before reporting busy."""

tables = MetaData()

schema_info = Table(
    "zenmeta_schema",
    tables,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "zenmeta_runs",
    tables,
    Column("id", String(32), primary_key=True),
    Column("name", Text, nullable=False),
    Column("pipeline_name", Text, nullable=False),
    Column("parent_run_id", String(32)),
    Column("tags", Text, nullable=False),  # a JSON array
    Column("status", String(16), nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("process_start", Float),
    Column("heartbeat_ns", BigInteger),
    Column("error_type", Text),
    Column("error_message", Text),
    Column("faults", Text),  # JSON arrays, NULL when empty
    Column("dropped", Text),
    Column("process_id", String(32)),  # version 4: the owner, in zenmeta_processes
    Index("ix_zenmeta_runs_start", "start_ns"),
    Index("ix_zenmeta_runs_pipeline", "pipeline_name", "start_ns"),
    Index("ix_zenmeta_runs_name", "name"),
)

steps = Table(
    "zenmeta_steps",
    tables,
    Column("id", String(32), primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("parent_step_id", String(32)),
    Column("name", Text, nullable=False),
    Column("step_name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("end_ns", BigInteger, nullable=False),
    Column("error_type", Text),
    Column("error_message", Text),
    Column("faults", Text),
    Column("dropped", Text),
    Column("process_id", String(32)),  # version 4, for remote steps: who executed it
    Column("task_key", Text),  # the engine's task; executions of one task share it
    Column("attempt", Integer),
    # Version 6: a step written on the plain path keeps its one metadata set
    # here, not as a zenmeta_metadata row (rows.add_plain_rows says why).
    Column("source", Text),
    Column("document", Text().with_variant(JSONB(), "postgresql")),
    Column("types", Text),
    Index("ix_zenmeta_steps_run", "run_id", "start_ns"),
)

step_starts = Table(  # version 4: remote steps begun and not finished yet
    # A row of its own, deleted in the transaction that inserts the finished
    # step: finished steps stay insert-only (PostgreSQL copies them), and what
    # is left here after its process died is a step that reads ``crashed``.
    "zenmeta_step_starts",
    tables,
    Column("id", String(32), primary_key=True),
    Column("run_id", String(32), nullable=False),
    Column("parent_step_id", String(32)),
    Column("name", Text, nullable=False),
    Column("step_name", Text, nullable=False),
    Column("start_ns", BigInteger, nullable=False),
    Column("process_id", String(32), nullable=False),
    Column("task_key", Text),
    Column("attempt", Integer),
    Index("ix_zenmeta_step_starts_run", "run_id", "start_ns"),
)

processes = Table(  # version 2; written since version 4 (``sql/liveness.py``)
    "zenmeta_processes",
    tables,
    Column("id", String(32), primary_key=True),  # minted at process start, not the pid
    Column("host", Text, nullable=False),
    Column("boot_id", Text),  # /proc/sys/kernel/random/boot_id
    Column("pid_namespace", BigInteger),  # inode of /proc/self/ns/pid
    Column("pid", Integer, nullable=False),
    Column("process_start", Float),
    Column("start_ns", BigInteger, nullable=False),
    Column("heartbeat_ns", BigInteger),  # by the database's clock on PostgreSQL
    Column("exit_ns", BigInteger),  # a clean exit
)

revisions = Table(  # Alembic's version table, under zenmeta's prefix
    "zenmeta_alembic_version",
    tables,
    Column("version_num", String(32), primary_key=True),
)

metadata_sets = Table(
    "zenmeta_metadata",
    tables,
    Column("entity_id", String(32), primary_key=True),
    Column("source", Text, primary_key=True),
    Column("entity_kind", String(8), nullable=False),  # "run" or "step"
    Column("run_id", String(32), nullable=False),
    Column("position", Integer, nullable=False),  # keeps sources in recorded order
    # {"key": JSON value, ...}; JSONB on PostgreSQL, so that document->>'key' works
    Column("document", Text().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("types", Text, nullable=False),  # {"key": "type name", ...}
)


def sqlite_path(url: str) -> str | None:
    """The database file of a SQLite URL; ``None`` for other databases and memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return database


def is_locked_error(error: BaseException) -> bool:
    """SQLite's 'database is locked' / 'busy': worth waiting and retrying."""
    text = str(getattr(error, "orig", error)).lower()
    return "locked" in text or "busy" in text


def is_connection_error(error: BaseException) -> bool:
    """The server went away (restart, failover, network): worth reconnecting.

    Only a server's driver counts: SQLite's ``OperationalError`` also means
    a broken file, which no retry mends."""
    if getattr(error, "connection_invalidated", False):
        return True
    cause = getattr(error, "orig", None) or error
    if not type(cause).__module__.startswith(("psycopg", "psycopg2", "asyncpg", "pg8000")):
        return False
    names = {kind.__name__ for kind in type(cause).__mro__}
    return bool(names & {"OperationalError", "InterfaceError"})


def open_engine(url: str, *, synchronous: str = "NORMAL") -> Engine:
    """An engine for ``url`` with the schema in place, checked against this code.

    For SQLite: the folder is created, the database runs in WAL mode (readers
    never block the writer), every connection waits up to 30 s for a lock,
    and a write transaction takes the lock up front (``BEGIN IMMEDIATE``)
    so that it can never fail half-way with "database is locked".
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is None:
            raise StoreError(f"{url!r} names no database file; use memory:// for a store in memory")
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise StoreError(f"cannot write to the store folder {folder!r}")
        engine = create_engine(
            url,
            poolclass=ClosingQueuePool,
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
        )
        _tune_sqlite(engine, synchronous)
    else:
        # Documents are JSON text already, and readers decode them with their
        # types: the driver passes JSONB through as text, both ways.
        engine = create_engine(
            url,
            poolclass=ClosingQueuePool,
            pool_pre_ping=True,
            json_serializer=_json_text,
            json_deserializer=_json_text,
        )
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def file_identity(path: str) -> tuple[int, int] | None:
    """The (device, inode) of ``path``, or ``None`` once it is gone."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def open_read_engine(url: str) -> Engine:
    """An engine that only reads ``url``: it never creates a file, a table or a row.

    SQLite files are opened with ``mode=ro``; in a folder where even SQLite's
    shared-memory file cannot be created (a read-only mount), with
    ``immutable=1`` as well, which is safe there because nobody can write
    to it either. Every failure is one ``StoreError`` line naming the store.
    """
    parsed = make_url(url)
    shown = masked_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is None:
            raise StoreError(f"{url!r} names no database file to read")
        try:
            facts = os.stat(path)  # through a symlink: a dangling one is a missing store
        except FileNotFoundError:
            raise StoreNotFoundError(f"no store at {path}") from None
        except OSError as error:
            raise StoreError(f"cannot read the store {path}: {error.strerror}") from None
        if stat.S_ISDIR(facts.st_mode):
            raise StoreError(f"{path} is a folder, not a zenmeta store")
        if facts.st_size == 0:
            raise StoreError(f"{path} is an empty file, not a zenmeta store")
        engine = create_engine(url, poolclass=ClosingQueuePool, creator=_read_only_connector(path))

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")  # one snapshot per read

    else:
        try:
            engine = create_engine(url, poolclass=ClosingQueuePool, pool_pre_ping=True)
        except Exception as error:
            raise StoreError(f"cannot open the store {shown}: {_one_line(error)}") from None
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(schema_info.name):
                raise StoreError(f"{shown} is not a zenmeta store: it has no zenmeta tables")
            found = connection.execute(
                select(schema_info.c.value).where(schema_info.c.name == "version")
            ).scalar()
        _check_version(shown, int(found or 0))
    except StoreError:
        engine.dispose()  # a refused store keeps no connection either
        raise
    except Exception as error:
        engine.dispose()
        raise StoreError(f"cannot read the store {shown}: {_one_line(error)}") from None
    return engine


def _read_only_connector(path: str) -> Any:
    target = "file:" + quote(os.path.abspath(path))

    def connect() -> sqlite3.Connection:
        options = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False, "uri": True}
        connection = sqlite3.connect(target + "?mode=ro", **options)  # type: ignore[call-overload]
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as error:
            connection.close()
            if "unable to open" not in str(error) and "readonly" not in str(error):
                raise
            # WAL needs a -shm file beside the store; in a read-only folder
            # nobody can be writing, so reading it as immutable is exact.
            connection = sqlite3.connect(target + "?mode=ro&immutable=1", **options)  # type: ignore[call-overload]
        return connection  # type: ignore[no-any-return]

    return connect


def _one_line(error: BaseException) -> str:
    """The driver's own message, first line only (SQLAlchemy adds the SQL and a link)."""
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")


def _json_text(value: Any) -> Any:
    return value


def _tune_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            _retry_locked(lambda: cursor.execute("PRAGMA journal_mode=WAL"))
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        writing = connection.get_execution_options().get("zenmeta_writer", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def _retry_locked(action: Any, deadline_s: float = BUSY_TIMEOUT_S) -> Any:
    """Switching to WAL needs a moment alone with the file; wait for it."""
    give_up = time.monotonic() + deadline_s
    delay = 0.01
    while True:
        try:
            return action()
        except Exception as error:
            if not is_locked_error(error) or time.monotonic() > give_up:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def ensure_schema(engine: Engine) -> None:
    """Create the tables, or migrate an older store, under the write lock."""
    from .migrate import ensure_schema as create_or_migrate  # Alembic only to migrate

    create_or_migrate(engine)


_ALL_METADATA = (
    "zenmeta_all_metadata AS "
    "SELECT entity_id, source, entity_kind, run_id, position, document, types "
    "FROM zenmeta_metadata UNION ALL "
    "SELECT id, source, 'step', run_id, 0, document, types "
    "FROM zenmeta_steps WHERE document IS NOT NULL"
)


def create_views(connection: Connection) -> None:
    """``zenmeta_all_metadata``: every metadata set in one place for SQL written
    by hand, wherever it is kept (version 6 keeps a plain step's in its row)."""
    sqlite = connection.dialect.name == "sqlite"
    create = "CREATE VIEW IF NOT EXISTS" if sqlite else "CREATE OR REPLACE VIEW"
    connection.execute(text(f"{create} {_ALL_METADATA}"))


def stored_version(engine: Engine) -> int:
    """The schema version a store says it has (0 if it says none)."""
    with engine.connect() as connection:
        found = connection.execute(
            select(schema_info.c.value).where(schema_info.c.name == "version")
        ).scalar()
    return int(found or 0)


def _check_version(shown: str, version: int) -> None:
    """What a reader accepts: any version up to this code's. Readers never
    migrate (they write nothing); an older store reads as it is: the columns
    later versions added read as NULL there (``starts.readable_columns``)."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store {shown} has schema version {version}, newer than this "
            f"zenmeta understands ({SCHEMA_VERSION}); upgrade zenmeta to read it"
        )
