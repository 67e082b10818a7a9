"""Dead workers told from dead owners (SCALE.md §3), with real processes killed for real.

Workers here are real subprocesses writing through the store API with a
started record, as a remote step does; owners are real subprocesses with a
``pipeline_run`` open. Nothing is mocked: processes are SIGKILLed, pids are
reused by real processes, and on PostgreSQL the heartbeat is moved by the
server's own clock while the reader's clock is set hours off.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path as FilePath
from typing import Any

import pytest
from _processes import OWNER, WORKER, children, kill, spawn, sql, state, statuses

import zenmeta
from zenmeta import _process
from zenmeta._records import COMPLETED, RUNNING, StepRecord
from zenmeta._store import close_stores, open_store
from zenmeta._store.memory import InMemoryStore

__all__ = ["children"]  # the fixture, used by name


def test_a_worker_killed_mid_step_leaves_its_step_crashed_under_a_completed_run(
    store_url: str, children: list[subprocess.Popen[str]]
) -> None:
    """The started record outlives the SIGKILLed worker: its step reads running
    while the worker lives, crashed once it is dead (even unreaped), under the
    run, whose own status the worker's death never touches."""
    zenmeta.configure(store=store_url)
    with zenmeta.pipeline_run("spread") as run:
        worker, worker_id = spawn(WORKER, store_url, run.id.hex, "a")
        children.append(worker)
        assert statuses(store_url, run.id) == {"prep": COMPLETED, "train": RUNNING}
        kill(worker, reap=False)
        assert state(worker.pid) == "Z"
        assert statuses(store_url, run.id) == {"prep": COMPLETED, "train": "crashed"}
        assert zenmeta.Client(store_url).get_run(str(run.id)).status == RUNNING
    worker.wait(timeout=30)
    client = zenmeta.Client(store_url)
    found = client.get_run(str(run.id))
    assert found.status == COMPLETED and found.step_count == 2
    crashed = client.list_steps(found, where="status = 'crashed'")
    assert [(s.name, s.process_id, s.task_key, s.attempt) for s in crashed] == [
        ("train", worker_id, "train-a", 0)
    ]
    assert client.get_step(crashed[0].id).status == "crashed"
    summary = client.summarize_steps(found)
    assert {(line.step_name, line.status): line.executions for line in summary} == {
        ("prep", COMPLETED): 1,
        ("train", "crashed"): 1,
    }


def test_the_owner_killed_makes_the_run_crashed_while_workers_steps_keep_their_own_judgement(
    store_url: str, children: list[subprocess.Popen[str]]
) -> None:
    """A SIGKILLed owner's run reads crashed; this process, its worker, keeps its
    finished step completed and its started step running, until it exits."""
    owner, run_hex = spawn(OWNER, store_url)
    children.append(owner)
    run_id = uuid.UUID(hex=run_hex)
    store = open_store(store_url)
    start = time.time_ns()
    store.save_step(
        StepRecord(uuid.uuid4(), run_id, None, "done", "done", COMPLETED, start, start + 10,
                   process_id=_process.PROCESS_ID, task_key="done-1", attempt=0)
    )  # fmt: skip
    store.save_step_started(
        StepRecord(uuid.uuid4(), run_id, None, "long", "long", RUNNING, start + 20, start + 20,
                   process_id=_process.PROCESS_ID, task_key="long-1", attempt=0)
    )  # fmt: skip
    store.flush()
    assert zenmeta.Client(store_url).get_run(run_hex).status == RUNNING
    kill(owner)
    assert zenmeta.Client(store_url).get_run(run_hex).status == "crashed"
    assert statuses(store_url, run_id) == {"done": COMPLETED, "long": RUNNING}
    close_stores()  # this process's clean exit from the store is recorded
    assert statuses(store_url, run_id) == {"done": COMPLETED, "long": "crashed"}
    exits = dict(sql(store_url, "SELECT id, exit_ns FROM zenmeta_processes"))
    assert len(exits) == 2 and exits[_process.PROCESS_ID] is not None
    assert [exit_ns for pid, exit_ns in exits.items() if pid != _process.PROCESS_ID] == [None]


def test_each_process_records_itself_once_and_its_clean_exit(store_url: str) -> None:
    """One row per writing process with host, boot id, pid namespace, pid and
    start time; a clean exit stamps it, and a process exiting mid-step leaves
    that step crashed."""
    script = """
    import sys, time, uuid
    import zenmeta
    from zenmeta import _process
    from zenmeta._records import StepRecord
    from zenmeta._store import open_store
    zenmeta.configure(store=sys.argv[1])
    with zenmeta.pipeline_run("clean") as run:
        pass
    now = time.time_ns()
    open_store(sys.argv[1]).save_step_started(StepRecord(uuid.uuid4(), run.id, None, "cut",
        "cut", "running", now, now, process_id=_process.PROCESS_ID))
    print(_process.PROCESS_ID, run.id.hex)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), store_url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    process_id, run_hex = done.stdout.split()
    rows = sql(
        store_url,
        "SELECT id, host, boot_id, pid_namespace, pid, process_start, heartbeat_ns, exit_ns "
        "FROM zenmeta_processes",
    )
    assert len(rows) == 1
    row = rows[0]
    assert row[0] == process_id and row[1] == _process.host_name()
    assert row[2] == _process.boot_id() and row[3] == _process.pid_namespace()
    assert row[4] > 0 and row[5] is not None and row[6] is not None and row[7] is not None
    run = zenmeta.Client(store_url).get_run(run_hex)
    assert run.status == COMPLETED
    assert statuses(store_url, run.id) == {"cut": "crashed"}


def test_a_pid_reused_by_another_process_reads_as_dead(
    tmp_path: FilePath, children: list[subprocess.Popen[str]]
) -> None:
    """The worker's pid now belongs to a process started later: its start time
    differs, so the started step is crashed although the pid answers."""
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)
    with zenmeta.pipeline_run("reuse") as run:
        pass
    worker, worker_id = spawn(WORKER, url, run.id.hex, "r")
    children.append(worker)
    assert statuses(url, run.id)["train"] == RUNNING
    kill(worker)
    time.sleep(2.5)  # start times are compared to within 2 s
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        # The pid the worker had now names this later process, as after a reuse.
        sql(url, f"UPDATE zenmeta_processes SET pid = {later.pid} WHERE id = '{worker_id}'")
        assert _process.process_start_time(later.pid) is not None
        assert statuses(url, run.id)["train"] == "crashed"
        # The same pid with its own start time is that process, alive: running.
        start = _process.process_start_time(later.pid)
        sql(url, f"UPDATE zenmeta_processes SET process_start = {start} WHERE id = '{worker_id}'")
        assert statuses(url, run.id)["train"] == RUNNING
    finally:
        later.kill()
        later.wait(timeout=30)


_SKEWED_READER = """
import json, sys, time, uuid
real = time.time_ns
time.time_ns = lambda: real() + int(float(sys.argv[3]) * 1e9)  # this host's clock, hours off
import zenmeta
steps = zenmeta.Client(sys.argv[1]).list_steps(uuid.UUID(hex=sys.argv[2]))
print(json.dumps({step.name: step.status for step in steps}))
"""


def _read_with_clock_off(url: str, run_id: uuid.UUID, seconds: float) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SKEWED_READER), url, run_id.hex, str(seconds)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    import json

    found: dict[str, str] = json.loads(done.stdout)
    return found


def test_postgres_judges_a_heartbeat_by_the_servers_clock_not_the_readers(
    request: pytest.FixtureRequest, tmp_path: FilePath, children: list[subprocess.Popen[str]]
) -> None:
    """A worker on "another machine" (its boot id not the reader's) is judged by
    its heartbeat: fresh by the server's clock reads running, 61 s old by the
    server's clock reads crashed, whatever the reader's own clock says."""
    from conftest import fresh_store_url

    url = fresh_store_url(request, "postgresql", tmp_path)
    zenmeta.configure(store=url)
    with zenmeta.pipeline_run("clocks") as run:
        pass
    worker, worker_id = spawn(WORKER, url, run.id.hex, "c")
    children.append(worker)
    worker.send_signal(signal.SIGSTOP)  # alive, silent: no heartbeat moves but ours
    sql(url, f"UPDATE zenmeta_processes SET boot_id = 'another-machine' WHERE id = '{worker_id}'")
    server_now = "(extract(epoch from clock_timestamp()) * 1000000000)::bigint"
    beat = f"UPDATE zenmeta_processes SET heartbeat_ns = {server_now} - %d WHERE id = '{worker_id}'"
    sql(url, beat % 30_000_000_000)
    assert statuses(url, run.id)["train"] == RUNNING
    assert _read_with_clock_off(url, run.id, 3 * 3600)["train"] == RUNNING  # reader 3 h ahead
    sql(url, beat % 61_000_000_000)
    assert statuses(url, run.id)["train"] == "crashed"
    assert _read_with_clock_off(url, run.id, -3 * 3600)["train"] == "crashed"  # 3 h behind


def test_sqlite_judges_a_heartbeat_from_another_machine_by_the_local_clock(
    tmp_path: FilePath, children: list[subprocess.Popen[str]]
) -> None:
    """SQLite's one machine: heartbeats are written and judged by its clock."""
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)
    with zenmeta.pipeline_run("clocks") as run:
        pass
    worker, worker_id = spawn(WORKER, url, run.id.hex, "s")
    children.append(worker)
    worker.send_signal(signal.SIGSTOP)
    sql(url, f"UPDATE zenmeta_processes SET boot_id = 'another-machine' WHERE id = '{worker_id}'")
    assert statuses(url, run.id)["train"] == RUNNING
    stale = time.time_ns() - 61 * 1_000_000_000
    sql(url, f"UPDATE zenmeta_processes SET heartbeat_ns = {stale} WHERE id = '{worker_id}'")
    assert statuses(url, run.id)["train"] == "crashed"


def test_a_step_finished_after_its_run_ended_is_kept_and_flagged_late(store_url: str) -> None:
    """The late step is stored and marked late; the run stays completed, its end unchanged."""
    zenmeta.configure(store=store_url)
    with zenmeta.pipeline_run("early") as run:
        pass
    client = zenmeta.Client(store_url)
    ended = client.get_run(str(run.id)).end_time
    store = open_store(store_url)
    start = time.time_ns()
    store.save_step(
        StepRecord(uuid.uuid4(), run.id, None, "slow", "slow", COMPLETED, start - 10**9, start,
                   process_id=_process.PROCESS_ID, task_key="slow-1", attempt=1)
    )  # fmt: skip
    store.flush()
    after = zenmeta.Client(store_url).get_run(str(run.id))
    assert after.status == COMPLETED and after.end_time == ended and after.step_count == 1
    (step,) = zenmeta.Client(store_url).list_steps(after)
    assert step.late and step.to_dict()["late"] is True
    assert zenmeta.Client(store_url).get_step(step.id).late


def test_task_key_and_attempt_round_trip(store_url: str) -> None:
    """Each execution of a task is its own step, with its process, task key and attempt."""
    store = open_store(store_url)
    _round_trip(store, lambda: store)


def test_task_key_and_attempt_round_trip_in_memory() -> None:
    """The memory store keeps them alike, and judges started steps alike."""
    memory = InMemoryStore()
    _round_trip(memory, lambda: memory)
    memory.close()  # this process's exit: its started steps are crashed now
    assert {s.status for s in memory.find_steps() if s.task_key == "t-open"} == {"crashed"}


def _round_trip(store: Any, reader: Any) -> None:
    run_id = uuid.uuid4()
    start = time.time_ns()
    for attempt, status in ((0, "failed"), (1, COMPLETED)):
        store.save_step(
            StepRecord(uuid.uuid4(), run_id, None, f"t_{attempt}", "t", status,
                       start + attempt, start + 5, process_id=_process.PROCESS_ID,
                       task_key="t-key", attempt=attempt)
        )  # fmt: skip
    store.save_step_started(
        StepRecord(uuid.uuid4(), run_id, None, "open", "open", RUNNING, start + 9, start + 9,
                   process_id=_process.PROCESS_ID, task_key="t-open", attempt=3)
    )  # fmt: skip
    store.flush()
    steps = reader().list_steps(run_id)
    assert [(s.name, s.status, s.task_key, s.attempt, s.process_id) for s in steps] == [
        ("t_0", "failed", "t-key", 0, _process.PROCESS_ID),
        ("t_1", COMPLETED, "t-key", 1, _process.PROCESS_ID),
        ("open", RUNNING, "t-open", 3, _process.PROCESS_ID),
    ]
    assert steps[1].to_dict()["task_key"] == "t-key"


def test_deleting_a_run_deletes_its_crashed_started_steps(
    store_url: str, children: list[subprocess.Popen[str]]
) -> None:
    """A pruned run leaves no started record behind to read as a stray crashed step."""
    zenmeta.configure(store=store_url)
    with zenmeta.pipeline_run("pruned") as run:
        worker, _ = spawn(WORKER, store_url, run.id.hex, "d")
        children.append(worker)
        kill(worker)
    client = zenmeta.Client(store_url)
    assert [s.status for s in client.find_steps("status = 'crashed'")] == ["crashed"]
    assert client.delete_runs(str(run.id)) == 1
    assert client.find_steps("status = 'crashed'") == []


def test_a_store_copy_carries_started_steps_and_process_records(
    store_url: str, tmp_path: FilePath, children: list[subprocess.Popen[str]]
) -> None:
    """In the copy, a dead worker's step is crashed and a live owner's run is
    running, judged by the copied process records; the owner's death shows there too."""
    zenmeta.configure(store=store_url)
    with zenmeta.pipeline_run("copied") as done:
        worker, _ = spawn(WORKER, store_url, done.id.hex, "k")
        children.append(worker)
        kill(worker)
    owner, open_hex = spawn(OWNER, store_url)
    children.append(owner)
    target = f"sqlite:///{tmp_path}/copy/zenmeta.db"
    zenmeta.copy_store(store_url, target)
    zenmeta.copy_store(store_url, target)  # again: the same, nothing doubled
    copied = zenmeta.Client(target)
    assert statuses(target, done.id) == {"prep": COMPLETED, "train": "crashed"}
    assert copied.get_run(str(done.id)).step_count == 2
    assert copied.get_run(open_hex).status == RUNNING
    kill(owner)
    assert zenmeta.Client(target).get_run(open_hex).status == "crashed"
