"""A store's life in a long process: deleted under it, idle, one of hundreds."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path as FilePath

import pytest

import zenmeta
from zenmeta import pipeline_run, track_step
from zenmeta._store import ACTIVE_STORES, resolve_store
from zenmeta._store.sql import writer as sql_writer


@track_step
def step(i: int) -> int:
    zenmeta.log_metadata({"i": i})
    return i


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zenmeta-writer")]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("durability", ["batched", "immediate"])
def test_a_store_deleted_while_recording_is_noticed_and_written_again(
    tmp_path: FilePath, zenmeta_log: pytest.LogCaptureFixture, durability: str
) -> None:
    """Deleting the file (and its folder) mid-run: a warning, then a new store at the path."""
    folder = tmp_path / ".zenmeta"
    path = folder / "zenmeta.db"
    zenmeta.configure(store=str(path), durability=durability)  # type: ignore[arg-type]
    with pipeline_run("before"):
        step(1)
    zenmeta.flush()
    for suffix in ("", "-wal", "-shm"):
        (folder / f"zenmeta.db{suffix}").unlink(missing_ok=True)
    folder.rmdir()
    with pipeline_run("after"):
        step(2)
        step(3)
    zenmeta.flush()
    assert path.is_file()
    warnings = [r.getMessage() for r in zenmeta_log.records if "deleted" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0]
    (run,) = zenmeta.Client(str(path)).list_runs()  # the new file holds what came after
    assert run.pipeline_name == "after" and run.status == "completed"
    assert [s.metadata["user"]["i"] for s in zenmeta.Client(str(path)).list_steps(run)] == [2, 3]


def test_a_store_replaced_by_another_file_is_followed(
    tmp_path: FilePath, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """A file moved away and another put in its place: later records go to the path."""
    path = tmp_path / "runs.db"
    zenmeta.configure(store=str(path))
    with pipeline_run("first"):
        step(1)
    zenmeta.flush()
    os.rename(path, tmp_path / "archived.db")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"runs.db{suffix}").unlink(missing_ok=True)
    with pipeline_run("second"):
        step(2)
    zenmeta.flush()
    assert any("deleted or replaced" in r.getMessage() for r in zenmeta_log.records)
    assert [r.pipeline_name for r in zenmeta.Client(str(path)).list_runs()] == ["second"]


def test_an_idle_writer_gives_back_its_thread_and_takes_it_again(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After IDLE_S with nothing to write the thread exits; the next run starts it again."""
    monkeypatch.setattr(sql_writer, "IDLE_S", 0.3)
    zenmeta.configure(store=str(tmp_path / "idle.db"))
    with pipeline_run("one"):
        step(1)
    zenmeta.flush()
    deadline = time.monotonic() + 10
    while writer_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer_threads() == []
    with pipeline_run("two"):
        for i in range(5):
            step(i)  # steps alone restart the writer, without waiting for a flush
        deadline = time.monotonic() + 5
        while len(zenmeta.Client(str(tmp_path / "idle.db")).list_runs()) < 2:
            assert time.monotonic() < deadline, "the restarted writer never wrote"
            time.sleep(0.05)
    zenmeta.flush()
    runs = zenmeta.Client(str(tmp_path / "idle.db")).list_runs()
    assert [r.pipeline_name for r in runs] == ["two", "one"]
    assert runs[0].step_count == 5


def test_an_open_run_keeps_its_writer_while_idle(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run still open needs its heartbeat: its writer does not retire."""
    monkeypatch.setattr(sql_writer, "IDLE_S", 0.2)
    zenmeta.configure(store=str(tmp_path / "open.db"))
    with pipeline_run("long"):
        step(1)
        zenmeta.flush()
        time.sleep(0.8)
        assert len(writer_threads()) == 1
    zenmeta.flush()


def test_three_hundred_stores_hold_a_bounded_number_of_threads_and_fds(
    tmp_path: FilePath,
) -> None:
    """300 runs each on its own store: a few threads and fds stay open; all were recorded."""
    baseline_fds = open_fds()
    baseline_threads = threading.active_count()
    for number in range(300):
        zenmeta.configure(store=str(tmp_path / f"store-{number}.db"))
        with pipeline_run(f"run-{number}"):
            step(number)
    zenmeta.flush()
    assert len(writer_threads()) <= ACTIVE_STORES
    assert threading.active_count() - baseline_threads <= ACTIVE_STORES
    # a SQLite store holds at most three descriptors: the file, its -wal and -shm
    assert open_fds() - baseline_fds <= 3 * ACTIVE_STORES + 3
    zenmeta.configure(store=None)
    for number in (0, 1, 150, 299):
        (run,) = zenmeta.Client(str(tmp_path / f"store-{number}.db")).list_runs()
        assert run.pipeline_name == f"run-{number}" and run.step_count == 1
    recorded = sum(
        len(zenmeta.Client(str(tmp_path / f"store-{n}.db")).list_runs()) for n in range(300)
    )
    assert recorded == 300


def test_a_released_store_still_takes_the_records_of_its_open_run(tmp_path: FilePath) -> None:
    """A run on a store pushed out of the active set by others keeps recording."""
    zenmeta.configure(store=str(tmp_path / "kept.db"))
    run = zenmeta.start_run("outlived")
    kept = resolve_store()
    for number in range(ACTIVE_STORES + 2):
        zenmeta.configure(store=str(tmp_path / f"other-{number}.db"))
        with pipeline_run("other"):
            pass
    zenmeta.configure(store=str(tmp_path / "kept.db"))
    assert resolve_store() is kept
    step(7)
    run.end()
    zenmeta.flush()
    (found,) = zenmeta.Client(str(tmp_path / "kept.db")).list_runs()
    assert found.status == "completed" and found.step_count == 1
