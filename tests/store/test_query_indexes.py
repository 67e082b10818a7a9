"""The metadata equality indexes: used by the queries, kept whole by every write, migrated in."""

from __future__ import annotations

import uuid
from pathlib import Path as FilePath
from typing import Any

import pytest
import sqlalchemy
from _versions import tables as _tables
from _versions import to_version_2

import zenmeta
from zenmeta import StorageSize, log_metadata, pipeline_run, track_step
from zenmeta._read.query import parse_filter
from zenmeta._store import close_stores
from zenmeta._store.sql import SQLStore
from zenmeta._store.sql.indexes import INDEXED_TEXT
from zenmeta._store.sql.query import compile_filter
from zenmeta._store.sql.schema import SCHEMA_VERSION, runs, steps


def _rows(url: str, statement: str, **parameters: Any) -> list[Any]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sqlalchemy.text(statement), parameters)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def _indexed(url: str) -> set[tuple[str, str, Any]]:
    """(source, key, value) of every entry of SQLite's value index."""
    found = _rows(url, "SELECT source, key, value FROM zenmeta_metadata_values")
    return {tuple(row) for row in found}  # type: ignore[misc]


@track_step
def train(loss: float) -> None:
    log_metadata({"loss": loss, "split": "train", "ok": True, "blob": "x" * (INDEXED_TEXT + 1)})


def _record(url: str) -> None:
    zenmeta.configure(store=url)
    with pipeline_run("p", run_name="first"):
        log_metadata({"commit": "abc", "size": StorageSize(2048), "config": {"lr": 0.1}})
        train(0.5)
    zenmeta.flush()


_FILLER = """
INSERT INTO zenmeta_runs (id, name, pipeline_name, tags, status, start_ns, host, pid)
SELECT md5(i::text), 'filler', 'p', '[]', 'completed', i, 'h', 1 FROM generate_series(1, 5000) i;
INSERT INTO zenmeta_steps (id, run_id, name, step_name, status, start_ns, end_ns)
SELECT md5('s' || i), md5(i::text), 'train', 'train', 'completed', i, i
FROM generate_series(1, 5000) i;
INSERT INTO zenmeta_metadata
SELECT md5(i::text), 'user', 'run', md5(i::text), 0,
       jsonb_build_object('commit', 'c' || i, 'size', i), '{"commit":"str","size":"int"}'
FROM generate_series(1, 5000) i;
INSERT INTO zenmeta_metadata
SELECT md5('s' || i), 'user', 'step', md5(i::text), 0,
       jsonb_build_object('split', 's' || i, 'loss', i), '{"split":"str","loss":"int"}'
FROM generate_series(1, 5000) i;
ANALYZE;
"""


_INDEX = {
    "sqlite": "zenmeta_metadata_values USING PRIMARY KEY (entity_kind=? AND source=? AND key=? "
    "AND value=?)",
    "postgresql": "Bitmap Index Scan on ix_zenmeta_metadata_document",
}
"""How each database's plan says it searched the index."""


def _filled(url: str) -> None:
    """On PostgreSQL, 5,000 other runs and steps: on a handful of rows a scan is the
    planner's right choice, and would prove nothing about the index."""
    if url.startswith("postgresql"):
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(_FILLER)
        finally:
            engine.dispose()


def _plan(url: str, where: str, kind: str) -> str:
    """The database's plan for a ``where`` filter, every value bound."""
    table = runs if kind == "run" else steps
    clause, _ = compile_filter(parse_filter(where, steps=kind == "step"), kind=kind,
                               dialect=url.split(":")[0].split("+")[0])  # fmt: skip
    engine = sqlalchemy.create_engine(url)
    try:
        statement = sqlalchemy.select(table.c.id).where(clause)
        compiled = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                lines = connection.exec_driver_sql("EXPLAIN " + compiled).scalars()
            else:
                lines = (row[3] for row in connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + compiled))  # fmt: skip
            return "\n".join(lines)
    finally:
        engine.dispose()


def test_sqlite_indexes_top_level_short_text_as_it_is_written(tmp_path: FilePath) -> None:
    """Every short text of every set, from the tracked path itself; not numbers,
    booleans, containers or long text."""
    url = f"sqlite:///{tmp_path}/store.db"
    _record(url)
    assert _indexed(url) == {("user", "commit", "abc"), ("user", "split", "train")}


def test_sqlite_value_index_follows_rewrites_and_deletes(tmp_path: FilePath) -> None:
    """A rewritten document (a secret masked after the fact) leaves no copy of the old
    value in the index; a deleted run takes its entries along."""
    url = f"sqlite:///{tmp_path}/store.db"
    _record(url)
    run = zenmeta.Client(url).get_run("first")
    _rows(url, "UPDATE zenmeta_metadata SET document = :d WHERE entity_id = :e AND source = 'user'",
          d='{"commit":"def"}', e=run.id.hex)  # fmt: skip
    assert ("user", "commit", "def") in _indexed(url)
    assert ("user", "commit", "abc") not in _indexed(url)
    zenmeta.Client(url).delete_runs("first")
    assert _indexed(url) == set()


def test_a_document_that_is_not_json_is_still_stored(tmp_path: FilePath) -> None:
    """The index trigger skips what it cannot read instead of refusing the write."""
    url = f"sqlite:///{tmp_path}/store.db"
    SQLStore(url).close()
    close_stores()
    entity = uuid.uuid4().hex
    _rows(url, "INSERT INTO zenmeta_metadata VALUES (:e, 'user', 'run', :e, 0, 'not json', '{}')",
          e=entity)  # fmt: skip
    assert _rows(url, "SELECT count(*) FROM zenmeta_metadata") == [(1,)]
    assert _indexed(url) == set()


@pytest.mark.parametrize(
    ("where", "kind"),
    [
        ("user.commit = 'abc' and user.size >= 1", "run"),
        ("user.split in ('train', 'test')", "step"),
        ("user.split = 'train' and user.loss = 0.5", "step"),
    ],
)
def test_an_equality_is_answered_through_the_index(store_url: str, where: str, kind: str) -> None:
    """SQLite searches its value index, PostgreSQL its GIN index, instead of reading
    every document; the answers are the exact ones."""
    _record(store_url)
    _filled(store_url)
    plan = _plan(store_url, where, kind)
    assert _INDEX[store_url.split(":")[0].split("+")[0]] in plan, plan
    client = zenmeta.Client(store_url)
    found = client.list_runs(where=where) if kind == "run" else client.find_steps(where)
    assert len(found) == 1


def test_equalities_the_index_cannot_answer_still_answer_exactly(store_url: str) -> None:
    """Booleans, long text, nested keys, inequalities (and on SQLite numbers) fall
    back to reading documents, with the same answers."""
    _record(store_url)
    client = zenmeta.Client(store_url)
    assert len(client.find_steps("user.ok = true")) == 1
    assert len(client.find_steps(f"user.blob = '{'x' * (INDEXED_TEXT + 1)}'")) == 1
    assert len(client.list_runs(where="user.config.lr = 0.1")) == 1
    assert len(client.find_steps("user.loss = 0.5")) == 1
    assert len(client.list_runs(where="user.size in (2048, 7)")) == 1
    assert len(client.list_runs(where="user.commit != 'zzz'")) == 1
    assert client.list_runs(where="user.size = '2048'") == []  # text is not the number


def test_a_version_2_store_upgrades_and_finds_its_old_metadata_through_the_index(
    store_url: str,
) -> None:
    """Migration 0003 builds the index over the metadata already stored."""
    _record(store_url)
    close_stores()
    to_version_2(store_url)
    if "sqlite" in store_url:
        assert "zenmeta_metadata_values" not in _tables(store_url)
    SQLStore(store_url).close()  # the first writer migrates it
    close_stores()
    assert _rows(store_url, "SELECT value FROM zenmeta_schema") == [(str(SCHEMA_VERSION),)]
    _filled(store_url)
    plan = _plan(store_url, "user.commit = 'abc'", "run")
    assert _INDEX[store_url.split(":")[0].split("+")[0]] in plan, plan
    if "sqlite" in store_url:
        assert ("user", "commit", "abc") in _indexed(store_url)
    assert [run.name for run in zenmeta.Client(store_url).list_runs(where="user.commit = 'abc'")] \
        == ["first"]  # fmt: skip


def test_gc_in_many_transactions_leaves_no_entry_of_a_deleted_run(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted in batches of two, five runs (each with a child run) leave nothing behind in
    the value index, the kept run keeps its entries, and the count is exact."""
    from zenmeta._store.sql import retention

    monkeypatch.setattr(retention, "RUNS_PER_TRANSACTION", 2)
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)
    for number in range(6):
        with pipeline_run("p", run_name=f"r{number}"):
            log_metadata({"commit": f"c{number}"})
            with pipeline_run("child", run_name=f"r{number}-child"):
                log_metadata({"commit": f"child{number}"})
            train(0.5)
    zenmeta.flush()
    gone = zenmeta.Client(url).gc(where="name != 'r5' and pipeline = 'p'")
    assert len(gone) == 5
    assert _rows(url, "SELECT count(*) FROM zenmeta_runs") == [(2,)]
    assert {value for _, key, value in _indexed(url) if key == "commit"} == {"c5", "child5"}
    left = _rows(url, "SELECT count(DISTINCT run_id) FROM zenmeta_metadata_values")
    assert left == [(2,)]
