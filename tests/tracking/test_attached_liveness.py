"""Liveness through ``zenmeta.attach``: attached workers and owners killed for real.

A worker attached with a carrier writes a started record for each step; one
SIGKILLed in a step leaves it ``crashed`` under its run, whose own status only
its owner decides (SCALE.md §3).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path as FilePath

from _processes import children, kill, spawn, sql, statuses, wait_for

import zenmeta
from zenmeta._records import COMPLETED, RUNNING
from zenmeta._store.liveness import HEARTBEAT_S

__all__ = ["children"]  # the fixture, used by name

_ATTACHEDWORKER = """
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
        first, said = spawn(_ATTACHEDWORKER, header, "0")
        children.append(first)
        assert said == "in the step"
        wait_for(lambda: list(statuses(store_url, run.id).values()) == [RUNNING])
        kill(first)
        second, said = spawn(_ATTACHEDWORKER, header, "1")
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
    owner, header = spawn(_CARRYING_OWNER, store_url)
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
    kill(owner)
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
    worker, _ = spawn(_ATTACHEDWORKER, header, "0")
    children.append(worker)
    wait_for(lambda: list(statuses(url, run.id).values()) == [RUNNING])
    query = f"SELECT heartbeat_ns FROM zenmeta_processes WHERE pid = {worker.pid}"
    (first,) = sql(url, query)
    time.sleep(HEARTBEAT_S + 1.5)
    (second,) = sql(url, query)
    assert second[0] > first[0]
