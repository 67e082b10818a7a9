"""Dead workers told from dead owners (SCALE.md §3), with real processes killed for real.

Workers here are real subprocesses writing through the store API with a
started record, as a remote step does; owners are real subprocesses with a
``pipeline_run`` open. Nothing is mocked: processes are SIGKILLed, pids are
reused by real processes, and on PostgreSQL the heartbeat is moved by the
server's own clock while the reader's clock is set hours off.
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
from pathlib import Path as FilePath
from typing import Any

import pytest
import sqlalchemy

import zenmeta
from zenmeta import _process
from zenmeta._records import COMPLETED, RUNNING, StepRecord
from zenmeta._store import close_stores, open_store
from zenmeta._store.liveness import HEARTBEAT_S
from zenmeta._store.memory import InMemoryStore

_WORKER = """
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

_OWNER = """
import sys, time
import zenmeta
zenmeta.configure(store=sys.argv[1])
with zenmeta.pipeline_run("owned", run_name="owned-run") as run:
    zenmeta.flush()
    print(run.id.hex, flush=True)
    time.sleep(600)
"""


def _spawn(script: str, *args: str) -> tuple[subprocess.Popen[str], str]:
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


def _wait_for(condition: Any, seconds: float = 30.0) -> None:
    """Until ``condition()``: a started record is queued before the user's code
    and written milliseconds later (the window SCALE.md §4 names)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _kill(child: subprocess.Popen[str], *, reap: bool = True) -> None:
    child.send_signal(signal.SIGKILL)
    if reap:
        child.wait(timeout=30)
    else:  # a zombie: dead, not yet reaped by its parent
        deadline = time.monotonic() + 30
        while _state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()[0].decode()


def _sql(url: str, statement: str) -> list[Any]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(sqlalchemy.text(statement))
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def _statuses(url: str, run_id: uuid.UUID) -> dict[str, str]:
    return {step.name: step.status for step in zenmeta.Client(url).list_steps(run_id)}


def test_a_worker_killed_mid_step_leaves_its_step_crashed_under_a_completed_run(
    store_url: str, children: list[subprocess.Popen[str]]
) -> None:
    """The started record outlives the SIGKILLed worker: its step reads running
    while the worker lives, crashed once it is dead (even unreaped), under the
    run, whose own status the worker's death never touches."""
    zenmeta.configure(store=store_url)
    with zenmeta.pipeline_run("spread") as run:
        worker, worker_id = _spawn(_WORKER, store_url, run.id.hex, "a")
        children.append(worker)
        assert _statuses(store_url, run.id) == {"prep": COMPLETED, "train": RUNNING}
        _kill(worker, reap=False)
        assert _state(worker.pid) == "Z"
        assert _statuses(store_url, run.id) == {"prep": COMPLETED, "train": "crashed"}
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
    owner, run_hex = _spawn(_OWNER, store_url)
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
    _kill(owner)
    assert zenmeta.Client(store_url).get_run(run_hex).status == "crashed"
    assert _statuses(store_url, run_id) == {"done": COMPLETED, "long": RUNNING}
    close_stores()  # this process's clean exit from the store is recorded
    assert _statuses(store_url, run_id) == {"done": COMPLETED, "long": "crashed"}
    exits = dict(_sql(store_url, "SELECT id, exit_ns FROM zenmeta_processes"))
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
    rows = _sql(
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
    assert _statuses(store_url, run.id) == {"cut": "crashed"}


def test_a_pid_reused_by_another_process_reads_as_dead(
    tmp_path: FilePath, children: list[subprocess.Popen[str]]
) -> None:
    """The worker's pid now belongs to a process started later: its start time
    differs, so the started step is crashed although the pid answers."""
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)
    with zenmeta.pipeline_run("reuse") as run:
        pass
    worker, worker_id = _spawn(_WORKER, url, run.id.hex, "r")
    children.append(worker)
    assert _statuses(url, run.id)["train"] == RUNNING
    _kill(worker)
    time.sleep(2.5)  # start times are compared to within 2 s
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        # The pid the worker had now names this later process, as after a reuse.
        _sql(url, f"UPDATE zenmeta_processes SET pid = {later.pid} WHERE id = '{worker_id}'")
        assert _process.process_start_time(later.pid) is not None
        assert _statuses(url, run.id)["train"] == "crashed"
        # The same pid with its own start time is that process, alive: running.
        start = _process.process_start_time(later.pid)
        _sql(url, f"UPDATE zenmeta_processes SET process_start = {start} WHERE id = '{worker_id}'")
        assert _statuses(url, run.id)["train"] == RUNNING
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
    worker, worker_id = _spawn(_WORKER, url, run.id.hex, "c")
    children.append(worker)
    worker.send_signal(signal.SIGSTOP)  # alive, silent: no heartbeat moves but ours
    _sql(url, f"UPDATE zenmeta_processes SET boot_id = 'another-machine' WHERE id = '{worker_id}'")
    server_now = "(extract(epoch from clock_timestamp()) * 1000000000)::bigint"
    beat = f"UPDATE zenmeta_processes SET heartbeat_ns = {server_now} - %d WHERE id = '{worker_id}'"
    _sql(url, beat % 30_000_000_000)
    assert _statuses(url, run.id)["train"] == RUNNING
    assert _read_with_clock_off(url, run.id, 3 * 3600)["train"] == RUNNING  # reader 3 h ahead
    _sql(url, beat % 61_000_000_000)
    assert _statuses(url, run.id)["train"] == "crashed"
    assert _read_with_clock_off(url, run.id, -3 * 3600)["train"] == "crashed"  # 3 h behind


def test_sqlite_judges_a_heartbeat_from_another_machine_by_the_local_clock(
    tmp_path: FilePath, children: list[subprocess.Popen[str]]
) -> None:
    """SQLite's one machine: heartbeats are written and judged by its clock."""
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)
    with zenmeta.pipeline_run("clocks") as run:
        pass
    worker, worker_id = _spawn(_WORKER, url, run.id.hex, "s")
    children.append(worker)
    worker.send_signal(signal.SIGSTOP)
    _sql(url, f"UPDATE zenmeta_processes SET boot_id = 'another-machine' WHERE id = '{worker_id}'")
    assert _statuses(url, run.id)["train"] == RUNNING
    stale = time.time_ns() - 61 * 1_000_000_000
    _sql(url, f"UPDATE zenmeta_processes SET heartbeat_ns = {stale} WHERE id = '{worker_id}'")
    assert _statuses(url, run.id)["train"] == "crashed"


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


_ATTACHED_WORKER = """
import sys, time
import zenmeta

carrier = zenmeta.Carrier.from_header(sys.argv[1])
attempt = int(sys.argv[2])


@zenmeta.track_step
def train() -> None:
    if attempt == 0:  # the first execution dies in the step
        print("in the step", flush=True)
        time.sleep(600)


with zenmeta.attach(carrier, task_key="train-key", attempt=attempt):
    train()
print("done", flush=True)
"""


def test_an_attached_worker_killed_mid_step_leaves_it_crashed_and_the_retry_recorded(
    store_url: str, children: list[subprocess.Popen[str]]
) -> None:
    """Through ``zenmeta.attach``: attempt 0 is SIGKILLed in the step and reads
    crashed, attempt 1 completes; both are steps of the run, grouped under their
    task key, and the run completes."""
    zenmeta.configure(store=store_url)
    with zenmeta.pipeline_run("attached") as run:
        header = zenmeta.carry().to_header()
        first, said = _spawn(_ATTACHED_WORKER, header, "0")
        children.append(first)
        assert said == "in the step"
        _wait_for(lambda: list(_statuses(store_url, run.id).values()) == [RUNNING])
        _kill(first)
        second, said = _spawn(_ATTACHED_WORKER, header, "1")
        children.append(second)
        assert said == "done" and second.wait(timeout=60) == 0
    client = zenmeta.Client(store_url)
    found = client.get_run(str(run.id))
    assert found.status == COMPLETED and found.step_count == 2
    steps = client.list_steps(found)
    assert [(s.step_name, s.status, s.task_key, s.attempt) for s in steps] == [
        ("train", "crashed", "train-key", 0),
        ("train", COMPLETED, "train-key", 1),
    ]
    assert len({s.process_id for s in steps}) == 2 and all(s.process_id for s in steps)
    (task,) = client.summarize_tasks(found)
    assert (task.task_key, task.executions, dict(task.statuses)) == (
        "train-key",
        2,
        {"crashed": 1, COMPLETED: 1},
    )


_CARRYING_OWNER = """
import sys, time
import zenmeta
zenmeta.configure(store=sys.argv[1])
with zenmeta.pipeline_run("owned") as run:
    zenmeta.flush()
    print(zenmeta.carry().to_header(), flush=True)
    time.sleep(600)
"""


def test_an_owner_killed_under_attached_steps_crashes_the_run_not_the_steps(
    store_url: str, children: list[subprocess.Popen[str]]
) -> None:
    """This process attaches to a run whose owner is then SIGKILLed: the run
    reads crashed, this process's finished steps stay completed."""
    owner, header = _spawn(_CARRYING_OWNER, store_url)
    children.append(owner)
    carrier = zenmeta.Carrier.from_header(header)

    @zenmeta.track_step
    def evaluate() -> None:
        pass

    with zenmeta.attach(carrier, task_key="evaluate-key", attempt=0):
        evaluate()
    zenmeta.flush()
    client = zenmeta.Client(store_url)
    run = client.get_run(str(carrier.run_id))
    assert run.status == RUNNING
    _kill(owner)
    run = client.get_run(str(carrier.run_id))
    assert run.status == "crashed"
    assert [(s.step_name, s.status, s.task_key) for s in client.list_steps(run)] == [
        ("evaluate", COMPLETED, "evaluate-key")
    ]


def test_a_worker_in_a_long_step_keeps_beating_with_no_run_of_its_own(
    tmp_path: FilePath, children: list[subprocess.Popen[str]]
) -> None:
    """Its process row's heartbeat moves every few seconds while the step runs,
    although the worker writes no run and no other record meanwhile."""
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)
    with zenmeta.pipeline_run("long") as run:
        header = zenmeta.carry().to_header()
    worker, _ = _spawn(_ATTACHED_WORKER, header, "0")
    children.append(worker)
    _wait_for(lambda: list(_statuses(url, run.id).values()) == [RUNNING])
    query = f"SELECT heartbeat_ns FROM zenmeta_processes WHERE pid = {worker.pid}"
    (first,) = _sql(url, query)
    time.sleep(HEARTBEAT_S + 1.5)
    (second,) = _sql(url, query)
    assert second[0] > first[0]
