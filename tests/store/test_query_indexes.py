"""The metadata equality indexes: used by the queries, kept whole by every write, migrated in."""

from __future__ import annotations

import uuid
from pathlib import Path as FilePath
from typing import Any

import pytest
import sqlalchemy
from _versions import tables as _tables
from _versions import to_version_2, to_version_4

import zenmeta
from zenmeta import StorageSize, log_metadata, pipeline_run, track_step
from zenmeta._read.query import parse_filter
from zenmeta._store import close_stores, copy_store
from zenmeta._store.sql import SQLStore
from zenmeta._store.sql.indexes import _SQLITE_FILL, _STEPS_FILL, INDEXED_TEXT, INSERT_TRIGGER
from zenmeta._store.sql.query import compile_filter
from zenmeta._store.sql.rows import FULL_METADATA, PLAIN_IN_ROW
from zenmeta._store.sql.schema import SCHEMA_VERSION, metadata_sets, runs, steps
from zenmeta._store.sql.sessions import open_session


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


def test_sqlite_value_index_follows_a_rewritten_set_in_a_step_row(tmp_path: FilePath) -> None:
    """A step's set kept in its own row (version 6) is indexed as it is written,
    and a rewrite of it leaves no copy of the old value in the index."""
    url = f"sqlite:///{tmp_path}/store.db"
    _record(url)
    (step,) = zenmeta.Client(url).list_steps(zenmeta.Client(url).get_run("first"))
    assert _rows(url, "SELECT source FROM zenmeta_steps WHERE id = :e", e=step.id.hex) == [
        ("user",)
    ]
    assert ("user", "split", "train") in _indexed(url)
    _rows(url, "UPDATE zenmeta_steps SET document = :d WHERE id = :e",
          d='{"split":"test"}', e=step.id.hex)  # fmt: skip
    assert ("user", "split", "test") in _indexed(url)
    assert ("user", "split", "train") not in _indexed(url)


def _set_rows(documents: list[str]) -> tuple[list[Any], list[Any]]:
    """Metadata rows and step rows holding their set (version 6), one of each per document."""
    metadata: list[Any] = []
    step_rows: list[Any] = []
    run = uuid.uuid4().hex
    for number, document in enumerate(documents):
        entity = uuid.uuid4().hex
        metadata += [entity, "user", "run", entity, 0, document, "{}"]
        step_rows += [entity, run, f"s_{number}", "s", "completed", number, number, "user",
                      document, "{}"]  # fmt: skip
    return metadata, step_rows


def test_a_document_that_is_not_json_is_still_stored(tmp_path: FilePath) -> None:
    """The index skips what it cannot read instead of refusing the write: a
    session inserting it (a copy, say) and a version-4 trigger alike. Its
    neighbours in the batch are indexed all the same: the fill that trusts
    its documents fails on it, and the guarded one completes the entries."""
    url = f"sqlite:///{tmp_path}/store.db"
    SQLStore(url).close()
    close_stores()
    documents = ['{"split":"a"}', "not json", '{"split":"b","n":1}', '"text"', "[1]"]
    metadata, step_rows = _set_rows(documents)
    engine = sqlalchemy.create_engine(url)
    try:
        session = open_session(engine)
        session.begin()
        session.insert(metadata_sets, {FULL_METADATA: metadata})
        session.insert(steps, {PLAIN_IN_ROW: step_rows})
        session.commit()
        session.close()
    finally:
        engine.dispose()
    assert _rows(url, "SELECT count(*) FROM zenmeta_metadata") == [(5,)]
    assert _rows(url, "SELECT count(*) FROM zenmeta_steps WHERE document IS NOT NULL") == [(5,)]
    assert _indexed(url) == {("user", "split", "a"), ("user", "split", "b")}
    assert len(_entries(url)) == 4 and _entries(url) == _all_entries(url)
    _rows(url, "DELETE FROM zenmeta_metadata_values")
    _rows(url, "DELETE FROM zenmeta_metadata")
    _rows(url, INSERT_TRIGGER)
    _rows(url, "INSERT INTO zenmeta_metadata VALUES (:e, 'user', 'step', :e, 0, 'not json', '{}')",
          e=uuid.uuid4().hex)  # fmt: skip
    assert _indexed(url) == set()


def _all_entries(url: str) -> set[tuple[Any, ...]]:
    """What the value index must hold: every entry of every stored document,
    in metadata rows and in step rows (version 6)."""
    insert = (
        "INSERT OR IGNORE INTO zenmeta_metadata_values (entity_kind, source, key, value, "
        "entity_id, run_id)"
    )
    return {
        tuple(row)
        for fill in (_SQLITE_FILL, _STEPS_FILL)
        for row in _rows(url, fill.replace(insert, ""))
    }


def _entries(url: str) -> set[tuple[Any, ...]]:
    return {tuple(row) for row in _rows(url, "SELECT entity_kind, source, key, value, entity_id, "
                                             "run_id FROM zenmeta_metadata_values")}  # fmt: skip


@pytest.mark.parametrize("durability", ["batched", "immediate"])
def test_every_write_of_metadata_fills_the_index(tmp_path: FilePath, durability: str) -> None:
    """Plain steps, failed ones, runs, metadata logged late, and a copy to another
    store: the index holds exactly the entries of the documents stored."""
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url, durability=durability)

    @track_step
    def fails(i: int) -> None:
        log_metadata({"split": f"bad-{i}"})
        raise ValueError("no")

    for round_ in range(3):
        with pipeline_run("p", run_name=f"run-{round_}"):
            log_metadata({"commit": f"c{round_}", "size": 3})
            for i in range(300):
                train(0.5 if i % 2 else 0.25)
                if i % 100 == 0:
                    with pytest.raises(ValueError):
                        fails(i)
            log_metadata({"late": "yes"})
    zenmeta.flush()
    assert len(_all_entries(url)) == 3 * (2 + 300 + 3)
    assert _entries(url) == _all_entries(url)
    copy = f"sqlite:///{tmp_path}/copy.db"
    copy_store(url, copy)
    assert _entries(copy) == _all_entries(copy) and len(_all_entries(copy)) == 3 * 305


def test_a_version_4_store_upgrades_to_the_index_filled_by_statement(tmp_path: FilePath) -> None:
    """Migration 0005 drops the insert trigger and keeps every entry; its
    downgrade puts the trigger back and indexes what version 5 wrote."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    from zenmeta._store.sql.migrations.versions import v0005_index_by_statement as v0005

    url = f"sqlite:///{tmp_path}/store.db"
    _record(url)
    close_stores()
    to_version_4(url)
    before = _entries(url)
    assert before and _triggers(url) == {"zenmeta_metadata_values_insert",
                                         "zenmeta_metadata_values_update"}  # fmt: skip
    SQLStore(url).close()  # the first writer migrates it
    close_stores()
    assert _triggers(url) == {"zenmeta_metadata_values_update", "zenmeta_steps_values_update"}
    assert _entries(url) == before == _all_entries(url)
    _record(url)
    close_stores()
    assert _entries(url) == _all_entries(url) != before
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM zenmeta_metadata_values")
            with Operations.context(MigrationContext.configure(connection)):
                v0005.downgrade()
    finally:
        engine.dispose()
    assert "zenmeta_metadata_values_insert" in _triggers(url)
    assert _entries(url) == _all_entries(url)


def _triggers(url: str) -> set[str]:
    return {row[0] for row in _rows(url, "SELECT name FROM sqlite_master WHERE type = 'trigger'")}


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
