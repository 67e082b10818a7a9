"""Steps of a run owned elsewhere write a started record before the user's code."""

from __future__ import annotations

from pathlib import Path as FilePath

import zenmeta
from zenmeta import _process
from zenmeta._store.memory import InMemoryStore
from zenmeta._tracking.runs import PipelineRun


class _RunOwnedElsewhere(PipelineRun):
    """A run whose steps are remote, as an attached run's are."""

    remote = True


def test_a_remote_step_is_running_in_the_store_while_its_code_runs(
    store: InMemoryStore,
) -> None:
    """The started record is there before the body runs; the finished record
    supersedes it, with the executing process."""
    seen = []

    @zenmeta.track_step
    def train() -> None:
        seen.extend((s.name, s.status, s.process_id) for s in store.find_steps())

    with _RunOwnedElsewhere("remote") as run:
        train()
    assert seen == [("train", "running", _process.PROCESS_ID)]
    steps = store.list_steps(run.id)
    assert [(s.name, s.status, s.process_id) for s in steps] == [
        ("train", "completed", _process.PROCESS_ID)
    ]


def test_a_remote_step_on_sqlite_reads_running_then_completed_once(tmp_path: FilePath) -> None:
    """The started row is deleted with the finished step's insert: one step, never two."""
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)
    seen = []

    @zenmeta.track_step
    def train() -> None:
        zenmeta.flush()
        seen.extend(s.status for s in zenmeta.Client(url).find_steps("status = 'running'"))

    with _RunOwnedElsewhere("remote") as run:
        train()
        train()
    assert seen == ["running", "running"]
    steps = zenmeta.Client(url).list_steps(run.id)
    assert [(s.name, s.status) for s in steps] == [("train", "completed"), ("train_2", "completed")]
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        left = connection.execute(sqlalchemy.text("SELECT count(*) FROM zenmeta_step_starts"))
        assert left.scalar_one() == 0
    engine.dispose()


def test_a_local_step_writes_no_started_record(store: InMemoryStore) -> None:
    """A run's own process needs none: its steps carry no process id either."""

    @zenmeta.track_step
    def train() -> None:
        assert store.find_steps() == []

    with zenmeta.pipeline_run("local") as run:
        train()
    assert [s.process_id for s in store.list_steps(run.id)] == [None]


def test_flushes_from_many_threads_keep_every_started_and_finished_record_in_order(
    tmp_path: FilePath,
) -> None:
    """A flush writes on its own thread when the writer is between batches, and
    the writer thread drains too: four threads of remote steps, each flushing
    after every step, store every step once, completed, with no started row
    left behind (a started row written after its step's finished one would be)."""
    import threading

    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)

    @zenmeta.track_step
    def train(x: int) -> int:
        zenmeta.log_metadata({"x": x})
        return x

    def work(offset: int) -> None:
        with zenmeta.attach(carrier):  # attached: remote steps, with started records
            for i in range(200):
                train(offset + i)
                if i % 3:
                    zenmeta.flush()

    with zenmeta.pipeline_run("threads") as run:
        carrier = zenmeta.carry()
        threads = [threading.Thread(target=work, args=(n * 1000,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    zenmeta.flush()
    steps = zenmeta.Client(url).list_steps(run.id)
    assert len(steps) == 800
    assert {s.status for s in steps} == {"completed"}
    assert sorted(s.flat_metadata["x"] for s in steps) == sorted(
        n * 1000 + i for n in range(4) for i in range(200)
    )
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        left = connection.execute(sqlalchemy.text("SELECT count(*) FROM zenmeta_step_starts"))
        assert left.scalar_one() == 0
    engine.dispose()
