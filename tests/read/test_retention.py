"""Deleting and collecting runs: whole runs only, and never the pinned, the alive or the kept."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Any

import pytest
import sqlalchemy
from _processes import WORKER, children, kill, spawn, sql
from conftest import fresh_store_url

import zenmeta
from zenmeta import _process, log_metadata, pipeline_run, track_step
from zenmeta.testing import InMemoryStore

__all__ = ["children"]  # the fixture, used by name


@track_step
def work(number: int) -> None:
    log_metadata({"number": number})


def _run(pipeline: str, name: str, *, fail: bool = False, tags: tuple[str, ...] = ()) -> None:
    try:
        with pipeline_run(pipeline, run_name=name, tags=tags):
            log_metadata({"size": len(name)})
            work(1)
            with pipeline_run(f"{pipeline}-child", run_name=f"{name}-child"):
                work(2)
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        pass
    time.sleep(0.002)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path: FilePath) -> Iterator[zenmeta.Client]:
    store: Any = InMemoryStore()
    if request.param != "memory":
        store = fresh_store_url(request, request.param, tmp_path)
    zenmeta.configure(store=store)
    for number in range(3):
        _run("train", f"train-{number}", fail=number == 0)
    _run("train", "train-pinned", fail=True, tags=("pinned",))
    _run("eval", "eval-0", fail=True)
    zenmeta.flush()
    yield zenmeta.Client(store)


def names(client: zenmeta.Client) -> set[str]:
    return {run.name for run in client.list_runs()}


def test_deleting_a_run_takes_its_steps_metadata_and_child_runs(client: zenmeta.Client) -> None:
    """One run goes with everything under it; the others stay whole."""
    before = len(client.find_steps("step = 'work'"))
    assert client.delete_runs("train-1") == 2  # the run and its child run
    assert "train-1" not in names(client) and "train-1-child" not in names(client)
    assert len(client.find_steps("step = 'work'")) == before - 2
    assert client.get_run("train-2").metadata["user"] == {"size": 7}
    with pytest.raises(zenmeta.RunNotFoundError):
        client.delete_runs("train-1")


@pytest.mark.parametrize(
    ("rules", "gone"),
    [
        ({"status": ["failed"]}, {"train-0", "eval-0"}),  # not the pinned failed run
        ({"keep_last": 2}, {"train-0", "train-1"}),  # each pipeline keeps its 2 newest
        ({"where": "pipeline = 'eval' or name = 'train-2'"}, {"eval-0", "train-2"}),
        ({"older_than": dt.timedelta(days=1)}, set()),
        ({"older_than": dt.timedelta(0), "status": ["failed"], "keep_last": 1}, {"train-0"}),
    ],
)
def test_gc_collects_what_its_rules_select_and_dry_run_says_exactly_that(
    client: zenmeta.Client, rules: dict[str, Any], gone: set[str]
) -> None:
    """Each policy alone and together; a dry run lists exactly what a real run deletes."""
    rules = {**rules}
    if "keep_last" in rules and "where" not in rules and "status" not in rules:
        rules["where"] = "not pipeline like '%-child'"
    before = names(client)
    planned = {run.name for run in client.gc(dry_run=True, **rules)}
    assert names(client) == before
    deleted = {run.name for run in client.gc(**rules)}
    assert planned == deleted == gone
    assert names(client) == before - gone - {f"{name}-child" for name in gone}
    assert "train-pinned" in names(client)


def test_gc_needs_a_rule(client: zenmeta.Client) -> None:
    """Collecting with no rule at all is refused rather than emptying the store."""
    with pytest.raises(ValueError, match="say what to collect"):
        client.gc()


_WRITER = """
import sys, time, zenmeta
zenmeta.configure(store=sys.argv[1])

@zenmeta.track_step
def tick(n):
    zenmeta.log_metadata({"n": n})

with zenmeta.pipeline_run("live", run_name="alive"):
    print("started", flush=True)
    for n in range(100_000):
        tick(n)
        if n % 50 == 0:
            zenmeta.flush()
        if sys.stdin.closed:
            break
        time.sleep(0.001)
        if n == 4_000:
            break
"""


def test_gc_on_a_store_another_process_is_writing_leaves_nothing_half_deleted(
    store_url: str, tmp_path: FilePath
) -> None:
    """While a live run writes (SQLite and PostgreSQL), every policy spares it, the
    pinned and the kept, and no step or metadata set is left without its run."""
    url = store_url
    zenmeta.configure(store=url)
    for number in range(6):
        _run("train", f"old-{number}", fail=number % 2 == 0)
    _run("train", "keeper", fail=True, tags=("pinned",))
    zenmeta.flush()
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(_WRITER))
    writer = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "started"
        client = zenmeta.Client(url)
        deleted = {run.name for run in client.gc(status=["failed"])}
        deleted |= {run.name for run in client.gc(older_than=dt.timedelta(0), keep_last=2)}
        deleted |= {run.name for run in client.gc(where="name like 'live%' or pipeline = 'live'")}
        assert writer.poll() is None, "the writer ended before gc could race it"
    finally:
        writer.wait(timeout=120)
        assert writer.stdout is not None
        writer.stdout.close()
    # old-5 is the newest unpinned run of its pipeline: keep_last=2 keeps it (and keeper).
    assert deleted == {"old-0", "old-1", "old-2", "old-3", "old-4", "old-1-child", "old-3-child"}
    left = {run.name for run in zenmeta.Client(url).list_runs()}
    assert {"alive", "keeper", "keeper-child", "old-5", "old-5-child"} <= left
    assert not left & deleted
    alive = zenmeta.Client(url).get_run("alive")
    assert alive.step_count == 4_001 and alive.status == "completed"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            orphans = connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM zenmeta_steps "
                    "WHERE run_id NOT IN (SELECT id FROM zenmeta_runs)"
                )
            ).scalar_one()
            loose = connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM zenmeta_metadata WHERE run_id NOT IN "
                    "(SELECT id FROM zenmeta_runs)"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert (orphans, loose) == (0, 0)


def test_a_running_run_is_refused_by_delete(tmp_path: FilePath) -> None:
    """A run whose process is alive cannot be deleted from under it."""
    zenmeta.configure(store=f"sqlite:///{tmp_path}/r.db")
    with pipeline_run("open", run_name="open") as run:
        zenmeta.flush()
        with pytest.raises(zenmeta.RunStateError, match="still running"):
            zenmeta.Client().delete_runs(run.id)


def test_gc_with_vacuum_gives_space_back(tmp_path: FilePath) -> None:
    """--vacuum shrinks the SQLite file after a large collection."""
    url = f"sqlite:///{tmp_path}/v.db"
    zenmeta.configure(store=url)
    for number in range(20):
        with pipeline_run("big", run_name=f"big-{number}"):
            log_metadata({"blob": "x" * 50_000})
    zenmeta.flush()

    def size() -> int:
        files = [tmp_path / "v.db", tmp_path / "v.db-wal"]
        return sum(path.stat().st_size for path in files if path.exists())

    before = size()
    assert len(zenmeta.Client(url).gc(where="pipeline = 'big'", vacuum=True)) == 20
    assert size() < before / 4


_EXITED = """
import sys, zenmeta
from zenmeta import _process
zenmeta.configure(store=sys.argv[1])
for name in ("exited-1", "exited-2"):
    with zenmeta.pipeline_run("exited", run_name=name):
        pass
print(_process.PROCESS_ID, flush=True)
"""


def _age_heartbeat(url: str, process_id: str, seconds: int) -> None:
    """Make that process's heartbeat ``seconds`` old by the database's clock, and
    its machine another one, so that only the heartbeat can tell it is alive."""
    if url.startswith("postgresql"):
        now = "(extract(epoch from clock_timestamp()) * 1000000000)::bigint"
    else:  # SQLite's one machine: its clock writes and judges heartbeats
        now = str(time.time_ns())
    sql(
        url,
        f"UPDATE zenmeta_processes SET boot_id = 'another-machine', "
        f"heartbeat_ns = {now} - {seconds * 1_000_000_000} WHERE id = '{process_id}'",
    )


def _process_ids(url: str) -> set[str]:
    return {row[0] for row in sql(url, "SELECT id FROM zenmeta_processes")}


def test_gc_forgets_the_processes_it_left_unnamed_once_they_are_gone_never_a_live_one(
    store_url: str, children: list[subprocess.Popen[str]]
) -> None:
    """After gc, a process record stays while a remaining run or step names it, or
    while its process lives (this one, a worker alive, a far worker with a fresh
    heartbeat); the others go: a clean exit, a worker killed here, a far worker
    whose heartbeat is 61 s old by the database's clock."""
    url = store_url
    zenmeta.configure(store=url)
    exited = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_EXITED), url],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.strip()  # fmt: skip
    workers = {}
    for role in ("killed", "alive", "far-stale", "far-fresh"):
        with pipeline_run(f"w-{role}", run_name=role) as run:
            child, workers[role] = spawn(WORKER, url, run.id.hex, role)
            children.append(child)
        if role == "killed":
            kill(child)
        elif role.startswith("far"):
            child.send_signal(signal.SIGSTOP)  # alive, silent: only its heartbeat speaks
            _age_heartbeat(url, workers[role], 61 if role == "far-stale" else 30)
    zenmeta.flush()
    own = _process.PROCESS_ID
    assert _process_ids(url) == {own, exited, *workers.values()}

    client = zenmeta.Client(url)
    deleted = client.gc(where="pipeline like 'w-%' or name = 'exited-1'")
    assert {run.name for run in deleted} == {
        "killed",
        "alive",
        "far-stale",
        "far-fresh",
        "exited-1",
    }
    kept = {own, exited, workers["alive"], workers["far-fresh"]}  # exited: exited-2 names it
    assert _process_ids(url) == kept
    assert client.gc(where="name = 'exited-2'")[0].name == "exited-2"
    assert _process_ids(url) == kept - {exited}
    assert client.list_runs() == []
