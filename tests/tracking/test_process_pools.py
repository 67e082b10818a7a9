"""Steps in spawned and forked worker processes belong to the run that sent them.

Real pools, real processes, real stores: each test counts the steps its run
holds afterwards, checks their parents, and that no implicit run appeared.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from _pool_steps import attached_pid, run_is_current, square

import zenmeta
from zenmeta import (
    ContextProcessPoolExecutor,
    RecordedStep,
    attach_process,
    carried,
    carry,
    get_step_context,
    pipeline_run,
    track_step,
)

pytestmark = pytest.mark.slow
SPAWN = multiprocessing.get_context("spawn")


def sqlite_url() -> str:
    return "sqlite:///" + str(pathlib.Path.cwd() / "pools.db")


def steps_of(url: str, run_id: uuid.UUID) -> list[RecordedStep]:
    return zenmeta.Client(url).list_steps(run_id)


def assert_only_run(url: str, run_id: uuid.UUID) -> None:
    runs = zenmeta.Client(url).list_runs()
    assert [run.id for run in runs] == [run_id], "an implicit run appeared"


def squares_of(steps: list[RecordedStep]) -> list[Any]:
    return sorted(s.metadata["user"]["x"] for s in steps if s.step_name == "square")


def test_spawn_process_pool_steps_join_the_run_under_the_submitting_step(store_url: str) -> None:
    """spawn ProcessPoolExecutor + carried(): every step in the run, child of the sender."""
    zenmeta.configure(store=store_url)

    @track_step
    def send(pool: ProcessPoolExecutor) -> tuple[list[int], uuid.UUID]:
        return list(pool.map(carried(square), range(6))), get_step_context().step_run_id

    with pipeline_run("spawned") as run, ProcessPoolExecutor(2, mp_context=SPAWN) as pool:
        results, sender = send(pool)
        direct = pool.submit(carried(square), 10).result()
    assert results == [x * x for x in range(6)] and direct == 100
    steps = steps_of(store_url, run.id)
    assert squares_of(steps) == [0, 1, 2, 3, 4, 5, 10]
    remote = [s for s in steps if s.step_name == "square"]
    assert sum(s.parent_step_run_id == sender for s in remote) == 6
    assert sum(s.parent_step_run_id is None for s in remote) == 1  # sent from the run itself
    assert len({s.name for s in steps}) == len(steps)
    assert all(s.metadata["user"]["pid"] != os.getpid() for s in remote)
    assert_only_run(store_url, run.id)


@pytest.mark.parametrize("start", ["spawn", "forkserver"])
def test_context_process_pool_carries_the_submitters_run_and_step(start: str) -> None:
    """ContextProcessPoolExecutor (spawn, forkserver): submit and map in a step, no carried()."""
    url = sqlite_url()
    zenmeta.configure(store=url)

    @track_step
    def send(pool: ProcessPoolExecutor) -> uuid.UUID:
        assert list(pool.map(square, range(4))) == [0, 1, 4, 9]
        assert pool.submit(square, 5).result() == 25
        return get_step_context().step_run_id

    with (
        pipeline_run("context-pool") as run,
        ContextProcessPoolExecutor(2, mp_context=multiprocessing.get_context(start)) as pool,
    ):
        sender = send(pool)
    remote = [s for s in steps_of(url, run.id) if s.step_name == "square"]
    assert squares_of(remote) == [0, 1, 2, 3, 5]
    assert {s.parent_step_run_id for s in remote} == {sender}
    assert_only_run(url, run.id)


def test_context_process_pool_outside_a_run_submits_plainly() -> None:
    """With no run, calls go as they are: each step makes its usual implicit run."""
    url = sqlite_url()
    zenmeta.configure(store=url)
    os.environ["ZENMETA_STORE"] = url  # the workers' own default, as a user would set it
    try:
        with ContextProcessPoolExecutor(1, mp_context=SPAWN) as pool:
            assert pool.submit(square, 3).result() == 9
    finally:
        del os.environ["ZENMETA_STORE"]
    (run,) = zenmeta.Client(url).list_runs()
    assert "implicit" in run.tags


def test_multiprocessing_spawn_pool_with_carried_calls() -> None:
    """multiprocessing spawn Pool.map(carried(step)): exact count, one run."""
    url = sqlite_url()
    zenmeta.configure(store=url)
    with pipeline_run("mp-carried") as run, SPAWN.Pool(2) as pool:
        assert pool.map(carried(square), range(8)) == [x * x for x in range(8)]
    steps = steps_of(url, run.id)
    assert squares_of(steps) == list(range(8))
    assert {s.parent_step_run_id for s in steps} == {None}
    assert_only_run(url, run.id)


def test_multiprocessing_spawn_pool_attached_with_an_initializer() -> None:
    """Pool(initializer=attach_process): plain steps join; `with` (terminate) loses none."""
    url = sqlite_url()
    zenmeta.configure(store=url)
    with pipeline_run("mp-initializer") as run:
        carrier = carry()
        with SPAWN.Pool(2, initializer=attach_process, initargs=(carrier,)) as pool:
            assert pool.map(square, range(8)) == [x * x for x in range(8)]
            workers = set(pool.map(attached_pid, range(8), chunksize=1))
    steps = steps_of(url, run.id)
    assert squares_of(steps) == list(range(8))
    assert os.getpid() not in {s.metadata["user"]["pid"] for s in steps}
    assert os.getpid() not in workers
    assert len({s.name for s in steps}) == 8
    assert_only_run(url, run.id)


def test_joblib_loky_carried_steps_and_no_leak_into_later_calls() -> None:
    """loky reuses its workers: the carried call's run is gone in the next Parallel call."""
    from joblib import Parallel, delayed

    url = sqlite_url()
    zenmeta.configure(store=url)
    with pipeline_run("loky") as run:
        step = carried(square)
        out = Parallel(n_jobs=2, backend="loky")(delayed(step)(i) for i in range(6))
    assert out == [x * x for x in range(6)]
    later = Parallel(n_jobs=2, backend="loky")(delayed(run_is_current)() for _ in range(6))
    assert later == [False] * 6
    assert squares_of(steps_of(url, run.id)) == list(range(6))
    assert_only_run(url, run.id)


MAIN_SCRIPT = """
import sys, zenmeta
from joblib import Parallel, delayed
from zenmeta import log_metadata, pipeline_run, track_step

factor = int(sys.argv[2])

@track_step
def scaled(x):  # defined in __main__ and using a global: cloudpickle ships it by value
    log_metadata({"x": x})
    return x * factor

if __name__ == "__main__":
    zenmeta.configure(store=sys.argv[1])
    with pipeline_run("main-script") as run:
        step = zenmeta.carried(scaled)  # here: joblib may read the generator in its own thread
        out = Parallel(n_jobs=2, backend="loky")(delayed(step)(i) for i in range(5))
    print(run.id, out)
"""


def test_a_step_defined_in_a_scripts_main_ships_through_loky(tmp_path: pathlib.Path) -> None:
    """A @track_step of a script's __main__ pickles by value and records in the workers."""
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    url = sqlite_url()
    done = subprocess.run(
        [sys.executable, str(script), url, "3"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    run_id, out = done.stdout.split(" ", 1)
    assert out.strip() == "[0, 3, 6, 9, 12]"
    steps = steps_of(url, uuid.UUID(run_id))
    assert sorted(s.metadata["user"]["x"] for s in steps) == [0, 1, 2, 3, 4]
    assert_only_run(url, uuid.UUID(run_id))


def test_forked_pool_in_a_with_block_keeps_every_step() -> None:
    """fork Pool as `with Pool() as pool:` (terminate at exit): all steps, unique names."""
    url = sqlite_url()
    zenmeta.configure(store=url, durability="batched")
    with pipeline_run("forked") as run:
        for _ in range(3):  # each block terminates its workers right after map returns
            with multiprocessing.get_context("fork").Pool(2) as pool:
                assert pool.map(square, range(6)) == [x * x for x in range(6)]
    steps = steps_of(url, run.id)
    assert squares_of(steps) == sorted(list(range(6)) * 3)
    assert len({s.name for s in steps}) == 18
    assert all("@" in s.name for s in steps)
    assert_only_run(url, run.id)


FORK_THREADS = """
import os, sys

seen = []

def threads():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))

# Registered before zenmeta's own hooks, so this one runs after them before the
# fork and before them in the parent after it: it sees what Python 3.12's
# fork-with-threads check sees.
os.register_at_fork(before=lambda: seen.append(threads()),
                    after_in_parent=lambda: seen.append(threads()))

import multiprocessing, zenmeta
sys.path.insert(0, sys.argv[2])
from _pool_steps import square

zenmeta.configure(store=sys.argv[1])
with zenmeta.pipeline_run("threads"):
    square(1)  # the writer thread is running now
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(square, range(4))
    square(2)
print(seen)
"""


def test_no_writer_thread_is_alive_across_a_fork(tmp_path: pathlib.Path) -> None:
    """At each fork the process has one thread: the writer stopped before, restarts after."""
    script = tmp_path / "fork_threads.py"
    script.write_text(textwrap.dedent(FORK_THREADS))
    here = str(pathlib.Path(__file__).parent.parent)
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script), sqlite_url(), here],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 1, 1, 1]"


def test_a_subprocess_started_with_the_carrier_environment_records_into_the_run() -> None:
    """subprocess.run(env=carrier.environ()): its steps join the run under the sender."""
    url = sqlite_url()
    zenmeta.configure(store=url)
    here = str(pathlib.Path(__file__).parent.parent)
    code = f"import sys; sys.path.insert(0, {here!r}); import _pool_steps; _pool_steps.square(7)"

    @track_step
    def launch() -> uuid.UUID:
        env = {**os.environ, **carry().environ()}
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
        return get_step_context().step_run_id

    with pipeline_run("subprocess") as run:
        sender = launch()
    (remote,) = [s for s in steps_of(url, run.id) if s.step_name == "square"]
    assert remote.parent_step_run_id == sender
    assert remote.metadata["user"]["x"] == 7
    assert_only_run(url, run.id)


def test_a_foreign_sqlite_carrier_is_refused_in_the_worker() -> None:
    """A carrier claiming another machine's SQLite file fails the task clearly, writes nothing."""
    url = sqlite_url()
    zenmeta.configure(store=url)
    with pipeline_run("foreign") as run:
        carrier = carry()._replace(owner_host="elsewhere", owner_boot_id="another-boot")
    with SPAWN.Pool(1) as pool, pytest.raises(zenmeta.CarrierError, match="SQLite file"):
        pool.apply(carried(square, carrier), (2,))
    assert steps_of(url, run.id) == []


@pytest.mark.parametrize("credentials", ["own ZENMETA_STORE", "PGPASSWORD"])
def test_workers_bring_their_own_postgresql_password(
    postgres_server: Any, credentials: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The carrier has no password; a worker's own environment supplies it."""
    role = f"pool_{credentials.split()[-1].lower()}"
    password = "Worker-Secret-7"
    url = postgres_server.create_role_with_password(role, password)
    zenmeta.configure(store=url)
    if credentials == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", password)
    else:
        monkeypatch.setenv("ZENMETA_STORE", url)
    with pipeline_run("pg-credentials") as run:
        carrier = carry()
        assert password not in carrier.store
        with SPAWN.Pool(2) as pool:
            assert pool.map(carried(square, carrier), range(4)) == [0, 1, 4, 9]
    assert squares_of(steps_of(url, run.id)) == [0, 1, 2, 3]


def test_a_forked_child_gets_the_default_sigterm_back() -> None:
    """zenmeta's SIGTERM handler is the owner's: a forked worker dies of SIGTERM at once
    (a SystemExit raised in its after-fork hooks would be swallowed and hang the pool)."""
    import signal

    zenmeta.configure(store=sqlite_url())
    with pipeline_run("signals"):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_writer_thread_leaves_signals_to_the_main_thread() -> None:
    """SIGTERM and SIGINT are blocked in the writer thread, so they always wake the main one."""
    import threading

    zenmeta.configure(store=sqlite_url())
    with pipeline_run("mask"):
        square(1)
        zenmeta.flush()  # the store opens in the background; its writer runs once open
        (writer,) = [t for t in threading.enumerate() if t.name.startswith("zenmeta-writer")]
        status = pathlib.Path(f"/proc/self/task/{writer.native_id}/status").read_text()
    blocked = int(
        next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16
    )
    assert blocked & (1 << (15 - 1)) and blocked & (1 << (2 - 1))
