"""The versioned SQL schema, and opening an engine that is safe to share.

Written with SQLAlchemy Core so that PostgreSQL is a different URL, not a
different store. Ids are 32-character hex text (run and step ids are
time-ordered UUIDs, so their indexes grow at the end); times are integer
nanoseconds since the epoch, as the core takes them. Each (entity, source)
metadata set is one row holding one JSON document and its type map, which
SQLite's and PostgreSQL's JSON functions can query:
``SELECT json_extract(document, '$.accuracy') FROM zenmeta_metadata``.
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
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ..._errors import StoreError, StoreNotFoundError

__all__ = [
    "SCHEMA_VERSION",
    "tables",
    "runs",
    "steps",
    "metadata_sets",
    "schema_info",
    "open_engine",
    "open_read_engine",
    "ensure_schema",
    "file_identity",
    "shown_url",
    "sqlite_path",
    "is_locked_error",
]

SCHEMA_VERSION = 1
"""Bumped whenever a table changes; a store newer than this code is refused."""

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
    Index("ix_zenmeta_steps_run", "run_id", "start_ns"),
)

metadata_sets = Table(
    "zenmeta_metadata",
    tables,
    Column("entity_id", String(32), primary_key=True),
    Column("source", Text, primary_key=True),
    Column("entity_kind", String(8), nullable=False),  # "run" or "step"
    Column("run_id", String(32), nullable=False),
    Column("position", Integer, nullable=False),  # keeps sources in recorded order
    Column("document", Text, nullable=False),  # {"key": JSON value, ...}
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
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
        )
        _tune_sqlite(engine, synchronous)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def shown_url(url: str) -> str:
    """``url`` as it may be printed: a password becomes ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


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
    shown = shown_url(url)
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
        engine = create_engine(url, creator=_read_only_connector(path))

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")  # one snapshot per read

    else:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except Exception as error:
            raise StoreError(f"cannot open the store {shown}: {_one_line(error)}") from None
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(schema_info.name):
                raise StoreError(f"{shown} is not a zenmeta store: it has no zenmeta tables")
            found = connection.execute(
                select(schema_info.c.value).where(schema_info.c.name == "version")
            ).scalar()
    except StoreError:
        engine.dispose()
        raise
    except Exception as error:
        engine.dispose()
        raise StoreError(f"cannot read the store {shown}: {_one_line(error)}") from None
    _check_version(shown, int(found or 0))
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
    """Create the tables once; refuse a store written by a newer zenmeta."""
    for attempt in range(3):
        try:
            writing = engine.connect().execution_options(zenmeta_writer=True)
            with writing as connection, connection.begin():
                if not inspect(connection).has_table(schema_info.name):
                    tables.create_all(connection)
                    connection.execute(
                        schema_info.insert().values(name="version", value=str(SCHEMA_VERSION))
                    )
                    return
                found = connection.execute(
                    select(schema_info.c.value).where(schema_info.c.name == "version")
                ).scalar()
            break
        except DBAPIError:
            # Two processes creating one PostgreSQL schema at once: the loser retries.
            if attempt == 2:
                raise
    _check_version(repr(engine.url), int(found or 0))


def _check_version(shown: str, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the store {shown} has schema version {version}, newer than this "
            f"zenmeta understands ({SCHEMA_VERSION}); upgrade zenmeta to read it"
        )
    if version < SCHEMA_VERSION:  # pragma: no cover - there is no older version yet
        raise StoreError(f"the store has schema version {version}; no migration is known")
