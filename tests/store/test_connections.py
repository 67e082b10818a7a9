"""Every database connection a store opens is closed by the store, never left to
the garbage collector (where psycopg's ResourceWarning then fails whichever test
the collection happens to interrupt)."""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path as FilePath

import pytest
from _postgres import PostgresServer
from conftest import fresh_store_url

import zenmeta
from zenmeta import pipeline_run, track_step
from zenmeta._store.sql import SQLStore
from zenmeta._store.sql import writer as sql_writer
from zenmeta._store.sql.schema import open_engine


@track_step
def step(i: int) -> int:
    zenmeta.log_metadata({"i": i})
    return i


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zenmeta-writer")]


def _open_connections(server: PostgresServer, url: str) -> int:
    """Connections to the database ``url`` names, counted by the server, once
    the backends of connections just closed have gone (a second or so)."""
    database = url.rsplit("/", 1)[1]
    query = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"
    deadline = time.monotonic() + 10
    while (count := int(server.psql(query))) and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


@pytest.fixture(autouse=True)
def _no_collection() -> Iterator[None]:
    """Only the store may close its connections here, never a collection by chance."""
    gc.collect()  # whatever earlier tests left is not these tests' finding
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _open_files(path: str) -> int:
    """This process's descriptors of the SQLite file ``path`` and its -wal and -shm."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        found += target.startswith(path)
    return found


def _resource_warnings_of_a_collection() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_read_under_way_when_the_idle_writer_lets_go_closes_its_connection(
    request: pytest.FixtureRequest,
    tmp_path: FilePath,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    """The writer retires after IDLE_S and gives the store's connections back
    (``engine.dispose()``) while the caller's thread is reading: the connection
    of that read is closed when the read ends, not dropped for the GC to find."""
    monkeypatch.setattr(sql_writer, "IDLE_S", 0.3)
    url = fresh_store_url(request, backend, tmp_path)
    zenmeta.configure(store=url)
    with pipeline_run("p", run_name="r"):
        step(1)
    zenmeta.flush()
    store = zenmeta.Client(url).reader
    opened = getattr(store, "opened", None)  # a SQLite store opens on a thread of its own
    store = opened() if callable(opened) else store
    assert isinstance(store, SQLStore)
    with store._reading() as connection:
        connection.exec_driver_sql("SELECT 1").scalar_one()
        deadline = time.monotonic() + 10
        while _writer_threads():
            assert time.monotonic() < deadline, "the idle writer never retired"
            time.sleep(0.05)
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        assert _open_connections(server, url) == 0, "a connection outlived its read"
    else:
        assert _open_files(url.removeprefix("sqlite:///")) == 0, "a connection outlived its read"
    assert _resource_warnings_of_a_collection() == []
    assert [run.name for run in zenmeta.Client(url).list_runs()] == ["r"]


def test_a_reader_refusing_a_newer_store_keeps_no_connection(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    """``Client`` on a store of a newer zenmeta raises, and its engine goes with it."""
    postgres_server.empty_database(postgres_database)
    SQLStore(postgres_database).close()
    database = postgres_database.rsplit("/", 1)[1]
    postgres_server.psql("UPDATE zenmeta_schema SET value = '99' WHERE name = 'version'", database)
    with pytest.raises(zenmeta.StoreError, match="newer than this zenmeta understands"):
        zenmeta.Client(postgres_database)
    assert _open_connections(postgres_server, postgres_database) == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_connection_given_back_after_the_engine_let_go_is_closed(
    request: pytest.FixtureRequest, tmp_path: FilePath, backend: str
) -> None:
    """Whoever disposes the engine (the idle writer, a store released for another,
    a close) while a connection is out — a read, or a writer thread that started
    again just then — that connection is closed when it is given back."""
    url = fresh_store_url(request, backend, tmp_path)
    engine = open_engine(url)
    try:
        connection = engine.connect()
        connection.exec_driver_sql("SELECT 1").scalar_one()
        engine.dispose()
        connection.close()
        if backend == "postgresql":
            server: PostgresServer = request.getfixturevalue("postgres_server")
            assert _open_connections(server, url) == 0
        else:
            assert _open_files(url.removeprefix("sqlite:///")) == 0
        with engine.connect() as again:  # the engine's new pool still works
            assert again.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        engine.dispose()
    assert _resource_warnings_of_a_collection() == []


def test_a_connection_the_collector_finds_open_is_given_back_from_inside_the_pool(
    tmp_path: FilePath,
) -> None:
    """A collection can run while this thread is inside the pool (giving a
    connection back), and then gives back one a caller dropped unclosed: the
    pool's lock lets the same thread in again, as SQLAlchemy's own queue does."""
    engine = open_engine(f"sqlite:///{tmp_path}/store.db")
    returned = threading.Event()

    def drop_one_inside_the_pool() -> None:
        connection = engine.connect()
        connection.exec_driver_sql("SELECT 1").scalar_one()
        with engine.pool._disposal:  # type: ignore[attr-defined]  # as inside _do_return_conn
            del connection
            gc.collect()
        returned.set()

    try:
        worker = threading.Thread(target=drop_one_inside_the_pool, daemon=True)
        worker.start()
        assert returned.wait(30), "the collector's give-back waited for its own thread"
        assert engine.pool.checkedout() == 0
    finally:
        engine.dispose()
