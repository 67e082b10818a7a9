"""The SQL store under faults: records it cannot write, values it cannot read,
locks held by others, repeated failures and a process killed at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path as FilePath
from typing import Any
from uuid import uuid4

import pytest
from _sqlite import sqlite_file
from click.testing import CliRunner

import zenmeta
from zenmeta import Client, StackComponent, log_metadata, pipeline_run, track_step
from zenmeta._codec import MetadataSet
from zenmeta._records import StepRecord
from zenmeta._store.sql import SQLStore
from zenmeta._store.sql import batches as _batches
from zenmeta._ui.cli import cli


@pytest.fixture
def url(tmp_path: FilePath) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


@track_step
def step(i: int) -> int:
    log_metadata({"i": i})
    return i


def _flush_within(store: Any, seconds: float = 20.0) -> None:
    """Flush in a helper thread; the test fails (instead of hanging) if it never returns."""
    done = threading.Thread(target=store.flush, daemon=True)
    done.start()
    done.join(seconds)
    assert not done.is_alive(), "flush() hung"


def _step_record(run_id: Any, name: Any, metadata: dict[str, MetadataSet] | None = None) -> Any:
    now = time.time_ns()
    return StepRecord(uuid4(), run_id, None, name, name, "completed", now, now, None, None,
                      metadata or {})  # fmt: skip


def test_a_record_the_writer_cannot_write_is_dropped_alone(
    url: str, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """Bad records (a non-text name, an unencodable value) cost only themselves."""
    zenmeta.configure(store=url)
    with pipeline_run("other") as other:
        step(1)
        poison = MetadataSet()
        poison.values["huge"], poison.types["huge"] = 10**5000, "int"
        other._store.save_step(_step_record(other.id, 123))
        other._store.save_step(_step_record(other.id, "huge", {"c": poison}))
        step(2)
        _flush_within(other._store)
    steps = Client(url).list_steps(other.id)
    assert [s.metadata["user"]["i"] for s in steps] == [1, 2]
    assert "dropped" in zenmeta_log.text


def test_a_huge_int_from_a_component_is_dropped_visibly(url: str) -> None:
    """The codec refuses what the writer could not encode; the run ends normally."""

    class Huge(StackComponent):
        def get_step_run_metadata(self, info: Any) -> dict[str, Any]:
            return {"huge": 10**5000, "fine": 1}

    zenmeta.configure(store=url)
    with pipeline_run("p", components=[Huge("huge")]) as run:
        step(0)
    (recorded,) = Client(url).list_steps(run.id)
    assert recorded.metadata["huge"] == {"fine": 1}
    assert [d.key for d in recorded.dropped] == ["huge"]


def test_sets_of_tuples_round_trip_through_sqlite(url: str) -> None:
    """A set of tuples comes back as a set of tuples, and readers keep working."""
    zenmeta.configure(store=url)
    with pipeline_run("p"):
        log_metadata({"pairs": {(1, "a"), (2, "b")}, "frozen": frozenset({(1, (2, 3))})})
    (run,) = Client(url).list_runs()
    assert run.metadata["user"] == {"pairs": {(1, "a"), (2, "b")}, "frozen": {(1, (2, 3))}}


def test_one_corrupt_stored_value_never_fails_a_reader(url: str, tmp_path: FilePath) -> None:
    """A value that cannot be decoded reads as a placeholder plus a note; the CLI works."""
    zenmeta.configure(store=url)
    with pipeline_run("p", run_name="damaged"):
        log_metadata({"size": zenmeta.StorageSize(3), "kept": "yes"})
    with pipeline_run("p", run_name="broken"):
        log_metadata({"x": 1})
    zenmeta.flush()
    with sqlite_file(tmp_path / "runs.db") as db:
        db.execute(
            "UPDATE zenmeta_metadata SET document = ? WHERE document LIKE '%kept%'",
            ('{"size":"three","kept":"yes"}',),
        )
        db.execute("UPDATE zenmeta_metadata SET document = '{oops' WHERE document LIKE '%\"x\"%'")
    runs = {r.name: r for r in Client(url).list_runs()}
    damaged, broken = runs["damaged"], runs["broken"]
    assert damaged.metadata["user"]["kept"] == "yes"
    assert str(damaged.metadata["user"]["size"]).startswith("<undecodable")
    assert [d.key for d in damaged.dropped] == ["size"]
    assert broken.metadata["user"] and broken.dropped[0].key == "*"
    for command in (["runs", "list"], ["store", "info"], ["runs", "show", "damaged"]):
        result = CliRunner().invoke(cli, ["--store", url, *command])
        assert result.exit_code == 0, result.output


_LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(1.5)
db.rollback()
"""


def test_lock_held_by_another_process_is_named_in_a_warning(
    url: str,
    tmp_path: FilePath,
    zenmeta_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer that waits on someone else's lock says so, naming the store."""
    monkeypatch.setattr(_batches, "LOCK_WARN_S", 0.3)
    zenmeta.configure(store=url, durability="immediate")
    with pipeline_run("p"):
        pass
    with subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(tmp_path / "runs.db")],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pipeline_run("p"):
            step(1)
    assert len(Client(url).list_runs()) == 2
    assert "waiting" in zenmeta_log.text and "runs.db" in zenmeta_log.text


def test_opening_a_store_another_process_has_locked_is_named_in_a_warning(
    tmp_path: FilePath, zenmeta_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run of a process waits for the schema check; it says whose lock."""
    path = tmp_path / "runs.db"
    SQLStore(f"sqlite:///{path}").close()  # the tables exist; a new opener checks them
    monkeypatch.setattr(_batches, "LOCK_WARN_S", 0.3)
    with subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        SQLStore(f"sqlite:///{path}").close()
    assert "waiting for another process's lock to open" in zenmeta_log.text
    assert "runs.db" in zenmeta_log.text


def test_repeated_write_failures_warn_once_per_cause(
    url: str, tmp_path: FilePath, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """A full disk (SQLite's max_page_count) warns once, not once per run or batch."""
    store = SQLStore(url, durability="immediate")
    zenmeta.configure(store=store)
    with pipeline_run("p"):
        pass
    with sqlite_file(tmp_path / "runs.db") as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    store._writer._discard_session()
    store.engine.dispose()

    from sqlalchemy import event

    @event.listens_for(store.engine, "connect")
    def _full(connection: Any, _record: Any) -> None:
        connection.execute(f"PRAGMA max_page_count = {pages}")

    for _ in range(5):
        with pipeline_run("p"):
            log_metadata({"blob": "x" * 50_000})
    full = [r for r in zenmeta_log.records if "full" in r.getMessage()]
    assert len(full) == 1, [r.getMessage() for r in zenmeta_log.records]
    store.close()


_EARLY_KILL = """
import os, sys, time, zenmeta
from zenmeta._store import open_store
# A fresh process opens its store on a thread of its own (~0.3 s, _store/opening.py);
# the promise tested here starts once it is open.
open_store(os.environ["ZENMETA_STORE"]).opened()
run = zenmeta.start_run("early", run_name=sys.argv[1])
print("started", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_process_killed_soon_after_start_leaves_its_run(url: str) -> None:
    """Batched mode, store open: a run killed ~75 ms after it started is on disk, `crashed`."""
    env = {**os.environ, "ZENMETA_STORE": url, "ZENMETA_DURABILITY": "batched"}
    for attempt in range(5):
        with subprocess.Popen(
            [sys.executable, "-c", _EARLY_KILL, f"early-{attempt}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ) as child:
            assert child.stdout is not None and child.stdout.readline().strip() == "started"
            time.sleep(0.075)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
    runs = Client(url).list_runs()
    assert sorted(r.name for r in runs) == [f"early-{i}" for i in range(5)]
    assert {r.status for r in runs} == {"crashed"}


def test_store_info_json_still_parses_after_corruption(url: str, tmp_path: FilePath) -> None:
    """`store info --json` counts rows without decoding them."""
    zenmeta.configure(store=url)
    with pipeline_run("p"):
        log_metadata({"a": 1})
    zenmeta.flush()
    with sqlite_file(tmp_path / "runs.db") as db:
        db.execute("UPDATE zenmeta_runs SET tags = 'nope', faults = '[[1'")
    result = CliRunner().invoke(cli, ["--store", url, "store", "info", "--json"])
    assert json.loads(result.output)["runs"] == 1
    (run,) = Client(url).list_runs()
    assert run.tags == () and run.faults[0].component == "<undecodable>"


class _Exiting(str):
    """A name whose ``isascii`` ends the thread that asks (a hostile record)."""

    def isascii(self) -> bool:
        raise SystemExit("not today")


def test_a_record_that_raises_system_exit_costs_only_itself(
    url: str, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """Even a SystemExit from a hostile record neither stops the writer nor hangs `flush()`."""
    zenmeta.configure(store=url)
    with pipeline_run("p") as run:
        run._store.save_step(_step_record(run.id, _Exiting("doom")))
        _flush_within(run._store)
        step(1)
        _flush_within(run._store)
    assert [s.metadata["user"]["i"] for s in Client(url).list_steps(run.id)] == [1]
    assert "SystemExit" in zenmeta_log.text and run._store._writer._thread.is_alive()
