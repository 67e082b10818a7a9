"""Dask: steps run on a real LocalCluster (two worker processes) belong to the
run that submitted them, on a SQLite file store and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sqlite import sqlite_file

import zenmeta
from zenmeta import Client, pipeline_run, track_step

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from zenmeta.integrations import dask as zenmeta_dask  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two worker processes of one thread each, listening on loopback only."""
    with distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: distributed.LocalCluster) -> Iterator[distributed.Client]:
    """A client of the module's cluster, with zenmeta's worker plugin installed."""
    with distributed.Client(cluster) as connected:
        zenmeta_dask.install(connected)
        yield connected


def _close_stores() -> None:
    from zenmeta._store import close_stores

    close_stores()


@pytest.fixture(autouse=True)
def _fresh_worker_stores(client: distributed.Client) -> None:
    """Each test's store is new, but the PostgreSQL one keeps its URL (its tables
    are dropped between tests): the workers close what they opened before, so
    none writes into a recreated database believing it recorded itself there."""
    client.run(_close_stores)


@track_step
def double(x: int) -> int:
    """A step that runs on a worker."""
    return 2 * x


@track_step
def add_one_in_a_step(x: int) -> int:
    """A step on a worker that calls another step there."""
    return double(x) + 1


def _only_run(url: str) -> zenmeta.RecordedRun:
    runs = Client(url).list_runs()
    assert [run.tags for run in runs] == [()], "no implicit run besides the pipeline's"
    return Client(url).get_run(runs[0].id)


def test_install_sets_the_plugin_up_on_every_worker_also_after_a_restart(
    client: distributed.Client,
) -> None:
    """Both workers run the plugin, and so do the workers a restart brings up."""

    def has_plugin(dask_worker: distributed.Worker) -> bool:
        return zenmeta_dask.PLUGIN_NAME in dask_worker.plugins

    assert list(client.run(has_plugin).values()) == [True, True]
    client.restart()
    assert list(client.run(has_plugin).values()) == [True, True]


def test_mapped_and_submitted_steps_belong_to_the_run(
    client: distributed.Client, store_url: str
) -> None:
    """client.map and client.submit of a carried step put every step in the run."""
    zenmeta.configure(store=store_url)
    with pipeline_run("on_dask") as run:
        step = zenmeta.carried(double)
        futures = client.map(step, range(4))
        mapped = client.gather(futures)
        single = client.submit(step, 10)
        submitted = single.result()
    assert mapped == [0, 2, 4, 6]
    assert submitted == 20
    recorded = _only_run(store_url)
    assert recorded.id == run.id
    assert recorded.status == "completed"
    steps = Client(store_url).list_steps(run.id)
    assert sorted(step.step_name for step in steps) == ["double"] * 5
    assert {step.parent_step_run_id for step in steps} == {None}
    assert all(step.status == "completed" for step in steps)
    assert {step.task_key for step in steps} == {str(f.key) for f in (*futures, single)}
    assert {step.attempt for step in steps} == {1}


def test_steps_submitted_from_inside_a_step_have_it_as_parent(
    client: distributed.Client, store_url: str
) -> None:
    """A step submitting work is the parent of the steps run on the workers,
    and a step called inside a worker's step is that step's child."""
    zenmeta.configure(store=store_url)

    @track_step
    def fan_out(xs: list[int]) -> list[int]:
        return list(client.gather(client.map(zenmeta.carried(add_one_in_a_step), xs)))

    with pipeline_run("nested_on_dask") as run:
        assert fan_out([1, 2, 3]) == [3, 5, 7]
    _only_run(store_url)
    steps = Client(store_url).list_steps(run.id)
    by_name: dict[str, list[zenmeta.RecordedStep]] = {}
    for step in steps:
        by_name.setdefault(step.step_name, []).append(step)
    (outer,) = by_name["fan_out"]
    assert outer.parent_step_run_id is None
    middles = by_name["add_one_in_a_step"]
    assert len(middles) == 3
    assert {step.parent_step_run_id for step in middles} == {outer.id}
    inner = by_name["double"]
    assert sorted(step.parent_step_run_id for step in inner) == sorted(s.id for s in middles)


@track_step
def submit_from_the_worker(x: int) -> int:
    """A step on a worker that hands more work to the cluster itself."""
    with distributed.worker_client() as inner:
        return int(inner.submit(zenmeta.carried(double), x).result())


def test_a_step_on_a_worker_is_the_parent_of_the_tasks_it_submits(
    client: distributed.Client, store_url: str
) -> None:
    """carry() inside an attached step on a worker carries that step: the tasks
    it submits from there are its children, in the same run."""
    zenmeta.configure(store=store_url)
    with pipeline_run("from_a_worker") as run:
        assert client.submit(zenmeta.carried(submit_from_the_worker), 4).result() == 8
    _only_run(store_url)
    steps = {step.step_name: step for step in Client(store_url).list_steps(run.id)}
    assert sorted(steps) == ["double", "submit_from_the_worker"]
    assert steps["submit_from_the_worker"].parent_step_run_id is None
    assert steps["double"].parent_step_run_id == steps["submit_from_the_worker"].id
    assert steps["double"].task_key != steps["submit_from_the_worker"].task_key


def test_a_step_defined_in_a_scripts_main_ships_to_the_workers(
    cluster: distributed.LocalCluster, tmp_path: Path
) -> None:
    """A @track_step written in a script's __main__ pickles by value and records."""
    url = f"sqlite:///{tmp_path}/store/zenmeta.db"
    script = tmp_path / "pipeline.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import distributed
            import zenmeta
            from zenmeta.integrations import dask as zenmeta_dask

            @zenmeta.track_step
            def square(x):
                return x * x

            if __name__ == "__main__":
                zenmeta.configure(store={url!r})
                with distributed.Client({cluster.scheduler_address!r}) as client:
                    zenmeta_dask.install(client)
                    with zenmeta.pipeline_run("from_main") as run:
                        squares = client.gather(client.map(zenmeta.carried(square), range(3)))
                print(run.id, sum(squares))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    run_id, total = done.stdout.split()
    assert total == "5"
    recorded = _only_run(url)
    assert str(recorded.id) == run_id
    assert [step.step_name for step in Client(url).list_steps(run_id)] == ["square"] * 3


def test_an_annotated_delayed_graph_records_into_the_run(
    client: distributed.Client, tmp_path: Path
) -> None:
    """Steps of a dask.delayed graph built inside annotate() join the run with
    no wrapper, each under the step that built the graph."""
    url = f"sqlite:///{tmp_path}/store/zenmeta.db"
    zenmeta.configure(store=url)

    @track_step
    def build_and_compute() -> int:
        with zenmeta_dask.annotate():
            parts = [dask.delayed(double)(x) for x in range(3)]
            total = dask.delayed(sum)(parts)
        return int(client.compute(total, optimize_graph=False).result())

    with pipeline_run("delayed") as run:
        assert build_and_compute() == 6
    _only_run(url)
    steps = Client(url).list_steps(run.id)
    (outer,) = (step for step in steps if step.step_name == "build_and_compute")
    doubles = [step for step in steps if step.step_name == "double"]
    assert len(doubles) == 3
    assert {step.parent_step_run_id for step in doubles} == {outer.id}


@track_step
def fail_first_time(marker: str) -> tuple[str | None, int | None]:
    """Raises on its first execution (no marker file yet), then tells which
    task and attempt it ran as."""
    from zenmeta._tracking.context import current_attachment

    if not os.path.exists(marker):
        with open(marker, "w") as file:
            file.write("failed once")
        raise RuntimeError("first attempt fails")
    attachment = current_attachment()
    assert attachment is not None
    return attachment.task_key, attachment.attempt


def test_a_retried_task_is_two_steps_with_its_key_and_attempts_1_and_2(
    client: distributed.Client, tmp_path: Path
) -> None:
    """Dask's retry of a failed task is a second step under the same task key,
    numbered by the scheduler: attempt 1 failed, attempt 2 completed."""
    url = f"sqlite:///{tmp_path}/store/zenmeta.db"
    zenmeta.configure(store=url)
    with pipeline_run("retried") as run:
        future = client.submit(zenmeta.carried(fail_first_time), str(tmp_path / "m"), retries=1)
        task_key, attempt = future.result()
    assert task_key == str(future.key)
    assert attempt == 2
    steps = Client(url).list_steps(run.id)
    recorded = sorted((step.attempt, step.status, step.task_key) for step in steps)
    assert recorded == [(1, "failed", task_key), (2, "completed", task_key)]


@track_step
def sleep_the_first_time(pid_file: str) -> int:
    """Writes its worker's pid and sleeps (to be killed); a rerun returns at once."""
    if not os.path.exists(pid_file):
        with open(pid_file + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        time.sleep(120)
    return os.getpid()


def _wait_for(path: Path, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def test_a_worker_killed_mid_task_leaves_a_crashed_step_and_a_completed_run(
    client: distributed.Client, store_url: str, tmp_path: Path
) -> None:
    """SIGKILL a worker inside a step: that execution reads crashed, Dask's rerun
    on another worker is recorded as attempt 2, and the run still completes."""
    zenmeta.configure(store=store_url)
    pid_file = tmp_path / "worker.pid"
    with pipeline_run("killed_worker") as run:
        future = client.submit(zenmeta.carried(sleep_the_first_time), str(pid_file))
        killed = int(_wait_for(pid_file))
        time.sleep(0.5)  # the started record's urgent write: well under this
        os.kill(killed, signal.SIGKILL)
        survivor = future.result(timeout=120)
    assert survivor != killed
    recorded = Client(store_url).get_run(run.id)
    assert recorded.status == "completed"
    steps = Client(store_url).list_steps(run.id)
    seen = [(s.status, s.attempt, s.task_key) for s in steps]
    # Each execution is its own step. Dask may run the rerun twice (a task moved
    # by work stealing while it already ran, under load): both are recorded.
    crashed = [step for step in steps if step.status == "crashed"]
    completed = [step for step in steps if step.status == "completed"]
    assert len(crashed) == 1 and completed and len(steps) == 1 + len(completed), seen
    assert {step.task_key for step in steps} == {str(future.key)}, seen
    assert crashed[0].attempt == 1, seen
    assert all(step.attempt is not None and step.attempt >= 2 for step in completed), seen


def test_a_closed_cluster_leaves_its_workers_steps_stored_and_their_exit_recorded(
    tmp_path: Path,
) -> None:
    """Closing a cluster stores every step its workers took and records each
    writing worker's clean exit, so none of them is later judged dead."""
    path = tmp_path / "store" / "zenmeta.db"
    zenmeta.configure(store=f"sqlite:///{path}")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as own,
        distributed.Client(own) as own_client,
    ):
        zenmeta_dask.install(own_client)
        (worker_pid,) = own_client.run(os.getpid).values()
        with pipeline_run("closing") as run:
            own_client.gather(own_client.map(zenmeta.carried(double), range(3)))
    assert len(Client(f"sqlite:///{path}").list_steps(run.id)) == 3
    with sqlite_file(path) as connection:
        exits = dict(connection.execute("SELECT pid, exit_ns FROM zenmeta_processes"))
    assert exits[worker_pid] is not None


def _configure_workers(url: str | None) -> None:
    """Point a worker's own (implicit) runs at ``url``; None undoes it."""
    if url is None:
        zenmeta.reset_configuration()
    else:
        zenmeta.configure(store=url)


def test_fusing_a_delayed_graph_drops_its_annotations_as_documented(
    client: distributed.Client, tmp_path: Path
) -> None:
    """With Dask's linear fusion of delayed graphs on, the fused task carries no
    annotation: its steps open implicit runs; optimize_graph=False keeps them in."""
    url = f"sqlite:///{tmp_path}/store/zenmeta.db"
    zenmeta.configure(store=url)
    client.run(_configure_workers, url)  # where the workers' implicit runs go, to count them
    try:
        joined: dict[bool, int] = {}
        for optimize in (True, False):
            fusing = dask.config.set({"optimization.fuse.delayed": True})
            with fusing, pipeline_run("fused") as run:
                with zenmeta_dask.annotate():
                    chain = dask.delayed(double)(dask.delayed(double)(1))
                assert client.compute(chain, optimize_graph=optimize).result() == 4
            joined[optimize] = len(Client(url).list_steps(run.id))
        zenmeta.flush()
        client.run(zenmeta.flush)
    finally:
        client.run(_configure_workers, None)
    assert joined == {True: 0, False: 2}
    implicit = [r for r in Client(url).list_runs() if r.tags == ("implicit",)]
    assert len(implicit) == 2


def test_install_without_distributed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where distributed cannot be imported, install() says which extra to install."""
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(zenmeta.MissingExtraError, match=r"pip install 'zenmeta\[dask\]'"):
        zenmeta_dask.install(object())  # type: ignore[arg-type]


def test_annotate_without_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where dask cannot be imported, annotate() says which extra to install."""
    monkeypatch.setitem(sys.modules, "dask", None)
    with (
        pytest.raises(zenmeta.MissingExtraError, match=r"zenmeta\[dask\]"),
        zenmeta_dask.annotate(),
    ):
        pass
