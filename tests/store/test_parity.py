"""The memory store and the SQL store keep the same records of the same pipeline."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

import pytest
from _sqlite import sqlite_file

import zenmeta
from zenmeta import DType, StorageSize, Uri, log_metadata, pipeline_run, track_step
from zenmeta._records import StepRecord
from zenmeta._store.sql import SQLStore
from zenmeta.testing import InMemoryStore


class Flaky(zenmeta.StackComponent):
    """Contributes typed metadata, and fails once in a while."""

    def get_step_run_metadata(self, info: zenmeta.StepRunInfo) -> dict[str, Any]:
        if info.config.name == "explode":
            raise RuntimeError("backend down")
        return {"step": info.pipeline_step_name, "size": StorageSize(10), "set": {3, 1, 2}}


def _pipeline() -> None:
    @track_step
    def inner() -> None:
        log_metadata({"uri": Uri("https://example.org"), "dtype": DType("int8"), "nan": math.nan})

    @track_step
    def outer() -> Callable[[], None]:
        inner()
        log_metadata({"tuple": (1, "a"), "obj": object.__new__(Odd)})
        return zenmeta.carry_context(lambda: log_metadata({"late": True}))

    @track_step
    def explode() -> None:
        raise ValueError("no")

    with pipeline_run("parity", tags=["a"], components=[Flaky("flaky")]):
        late = outer()
        worker = threading.Thread(target=late)  # runs after its step ended
        worker.start()
        worker.join()
        with pytest.raises(ValueError):
            explode()
        log_metadata({"run_level": 1})


class Odd:
    def __str__(self) -> str:
        return "odd"


def _normalised(client: zenmeta.Client) -> list[dict[str, Any]]:
    """Records without what differs by nature between two runs: ids, times, pids."""
    out = []
    for run in client.list_runs():
        exported = client.export_run(run)
        for entity in [exported, *exported["steps"]]:
            for key in ("id", "run_id", "parent_step_run_id", "parent_run_id", "name", "pid"):
                entity.pop(key, None)
            for key in ("start_time", "end_time", "duration"):
                entity.pop(key, None)
        exported["steps"].sort(key=lambda step: step["step_name"])
        out.append(exported)
    return out


def test_memory_and_sql_stores_keep_identical_records(tmp_path: FilePath) -> None:
    """Types, faults, drops, nesting and statuses read back the same from both."""
    memory = InMemoryStore()
    zenmeta.configure(store=memory)
    _pipeline()
    zenmeta.configure(store=f"sqlite:///{tmp_path}/runs.db")
    _pipeline()
    zenmeta.flush()
    from_memory = _normalised(zenmeta.Client(memory))
    from_sql = _normalised(zenmeta.Client(f"sqlite:///{tmp_path}/runs.db"))
    assert from_memory == from_sql
    assert [step["status"] for step in from_sql[0]["steps"]] == ["failed", "completed", "completed"]


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_metadata_logged_after_its_step_ended_is_refused_with_a_warning(
    url: str, tmp_path: FilePath, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread that finishes late (carry_context) cannot change a recorded step."""
    store = InMemoryStore() if url == "memory://" else f"sqlite:///{tmp_path}/runs.db"
    zenmeta.configure(store=store)
    caplog.set_level(logging.WARNING, logger="zenmeta")

    @track_step
    def step() -> Callable[[], None]:
        log_metadata({"on_time": 1})
        return zenmeta.carry_context(lambda: log_metadata({"late": 2}))

    with pipeline_run("late") as run:
        late = step()
        late()
    zenmeta.flush()
    client = zenmeta.Client(store)
    (recorded,) = client.list_steps(run.id)
    assert recorded.metadata == {"user": {"on_time": 1}}
    assert any("after it ended" in record.getMessage() for record in caplog.records)


def test_a_process_that_writes_only_steps_starts_its_writer(tmp_path: FilePath) -> None:
    """Steps alone (a worker attached to another process's run) are written within a second."""
    database = tmp_path / "steps.db"
    store = SQLStore(f"sqlite:///{database}", durability="batched")
    try:
        run_id = uuid.uuid4()
        for number in range(3):
            now = time.time_ns()
            store.save_step(
                StepRecord(uuid.uuid4(), run_id, None, f"s{number}", "s", "completed", now, now)
            )
        deadline = time.monotonic() + 5
        count = 0
        while time.monotonic() < deadline and count < 3:
            time.sleep(0.05)
            with sqlite_file(database) as connection:
                count = connection.execute("SELECT count(*) FROM zenmeta_steps").fetchone()[0]
        assert count == 3
    finally:
        store.close()
