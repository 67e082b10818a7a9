"""Real processes for the liveness tests: spawned, killed, reaped, and the store read.

Shared by ``tests/store/test_liveness.py`` and ``tests/tracking/test_attached_liveness.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy

import zenmeta

WORKER = """
import sys, time, uuid
from zenmeta import _process
from zenmeta._records import StepRecord
from zenmeta._store import open_store

url, run_hex, task = sys.argv[1], sys.argv[2], sys.argv[3]
store = open_store(url)
run_id = uuid.UUID(hex=run_hex)
start = time.time_ns()
store.save_step(StepRecord(uuid.uuid4(), run_id, None, "prep", "prep", "completed", start,
                           start + 1000, process_id=_process.PROCESS_ID, task_key="prep-" + task,
                           attempt=0))
store.save_step_started(StepRecord(uuid.uuid4(), run_id, None, "train", "train", "running",
                                   start + 2000, start + 2000, process_id=_process.PROCESS_ID,
                                   task_key="train-" + task, attempt=0))
store.flush()
print(_process.PROCESS_ID, flush=True)
time.sleep(600)
"""

OWNER = """
import sys, time
import zenmeta
zenmeta.configure(store=sys.argv[1])
with zenmeta.pipeline_run("owned", run_name="owned-run") as run:
    zenmeta.flush()
    print(run.id.hex, flush=True)
    time.sleep(600)
"""


def spawn(script: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """A real Python process running ``script``; the first line it prints."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if not line:
        child.kill()
        raise AssertionError(child.communicate(timeout=30))
    return child, line


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts, killed and reaped whatever happens."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=30)


def wait_for(condition: Any, seconds: float = 30.0) -> None:
    """Until ``condition()``: a started record is queued before the user's code
    and written milliseconds later (the window SCALE.md §4 names)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def kill(child: subprocess.Popen[str], *, reap: bool = True) -> None:
    child.send_signal(signal.SIGKILL)
    if reap:
        child.wait(timeout=30)
    else:  # a zombie: dead, not yet reaped by its parent
        deadline = time.monotonic() + 30
        while state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()[0].decode()


def sql(url: str, statement: str) -> list[Any]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sqlalchemy.text(statement))
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def statuses(url: str, run_id: uuid.UUID) -> dict[str, str]:
    return {step.name: step.status for step in zenmeta.Client(url).list_steps(run_id)}
