"""Creating the schema, and upgrading an older store in place, once.

Every open takes the store's write lock first (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: ``pg_advisory_xact_lock``) and reads the version under it, so
two processes opening an old store at once migrate it once: the second one
finds it upgraded. A new store is created whole from ``schema.tables`` and
stamped with the newest revision, so Alembic (SQLAlchemy's own migration
tool, as MLflow uses) is imported only when a store really is older: its
scripts (``migrations/versions``) then run inside that same locked
transaction, and a SQLite file is first copied, through SQLite's backup
API, to ``<file>.v<old version>.bak``. A store newer than this code is
refused with both versions named, never misread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select, text, update
from sqlalchemy.exc import DBAPIError

from ..._errors import StoreError
from ..._redact import masked_url
from .indexes import create_indexes
from .schema import SCHEMA_VERSION, create_views, revisions, schema_info, sqlite_path, tables

__all__ = ["ensure_schema", "revision_of", "LOCK_KEY"]

LOCK_KEY = 0x7A656E6D  # "zenm": the advisory lock every zenmeta process takes to migrate

_logger = logging.getLogger("zenmeta")


def revision_of(version: int) -> str:
    """The Alembic revision of a schema version: ``2`` → ``"0002"``."""
    return f"{version:04d}"


def ensure_schema(engine: Engine) -> bool:
    """Create the tables, or upgrade them, under the write lock; ``True`` if
    this call migrated an older store. Refuses a store newer than this code."""
    for attempt in range(3):
        try:
            with _locked(engine) as connection:
                found = _stored_version(connection)
                if found is None:
                    tables.create_all(connection)
                    create_indexes(connection)  # dialect-specific: not in ``tables``
                    create_views(connection)
                    connection.execute(
                        schema_info.insert().values(name="version", value=str(SCHEMA_VERSION))
                    )
                    connection.execute(
                        revisions.insert().values(version_num=revision_of(SCHEMA_VERSION))
                    )
                    return False
                if found > SCHEMA_VERSION:
                    raise StoreError(
                        f"the store {masked_url(str(engine.url))!r} has schema version {found}, "
                        f"newer than this zenmeta understands ({SCHEMA_VERSION}); "
                        "upgrade zenmeta to read it"
                    )
                if found == SCHEMA_VERSION:
                    return False
                _upgrade(engine, connection, found)
                return True
        except DBAPIError:
            # Another database than SQLite or PostgreSQL has no lock taken
            # here: two processes creating its schema at once, the loser retries.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    writing = engine.connect().execution_options(zenmeta_writer=True)  # SQLite: BEGIN IMMEDIATE
    with writing as connection, connection.begin():
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        yield connection


def _stored_version(connection: Connection) -> int | None:
    if not inspect(connection).has_table(schema_info.name):
        return None
    found = connection.execute(
        select(schema_info.c.value).where(schema_info.c.name == "version")
    ).scalar()
    return int(found or 0)


def _upgrade(engine: Engine, connection: Connection, found: int) -> None:
    """Run the migration scripts from version ``found`` to this code's."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    url = masked_url(engine.url.render_as_string(hide_password=True))
    if found < 1:
        raise StoreError(f"the store {url!r} has no schema version; it was not written by zenmeta")
    backup = _back_up_sqlite(engine, found)
    if not inspect(connection).has_table(revisions.name):
        # Written before migrations existed: stamp the revision it is at.
        revisions.create(connection)
        connection.execute(revisions.insert().values(version_num=revision_of(found)))
    config = Config()
    config.set_main_option("script_location", os.path.join(os.path.dirname(__file__), "migrations"))
    script = ScriptDirectory.from_config(config)

    def upgrade(revision: Any, _context: Any) -> Any:
        # What ``alembic upgrade`` itself passes as ``fn`` (alembic/command.py);
        # running it here keeps the scripts inside our locked transaction.
        return script._upgrade_revs(revision_of(SCHEMA_VERSION), revision)

    with EnvironmentContext(
        config, script, fn=upgrade, destination_rev=revision_of(SCHEMA_VERSION)
    ) as environment:
        environment.configure(connection=connection, version_table=revisions.name)
        environment.run_migrations()
    connection.execute(
        update(schema_info).where(schema_info.c.name == "version").values(value=str(SCHEMA_VERSION))
    )
    kept = f"; the old file is kept as {backup}" if backup else ""
    _logger.info(
        "zenmeta: upgraded the store %r from schema version %d to %d%s",
        url,
        found,
        SCHEMA_VERSION,
        kept,
    )


def _back_up_sqlite(engine: Engine, found: int) -> str | None:
    """Copy a SQLite file before it is migrated; its path, or ``None`` elsewhere.

    Read through a connection of its own: the migrating one holds the write
    lock, which in WAL mode does not stop a reader."""
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if engine.dialect.name != "sqlite" or path is None:
        return None
    backup = f"{path}.v{found}.bak"
    partial = f"{backup}.partial"
    source = sqlite3.connect(path)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()
    os.replace(partial, backup)
    return backup
