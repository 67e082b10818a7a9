"""Steps in forked worker processes reach the store like any other."""

from __future__ import annotations

import multiprocessing
import pathlib
from concurrent.futures import ProcessPoolExecutor

import zenmeta
from zenmeta import log_metadata, pipeline_run, track_step


@track_step
def square(x: int) -> int:
    log_metadata({"x": x})
    return x * x


def test_forked_pool_workers_flush_their_steps_before_exiting() -> None:
    """Batched mode: multiprocessing's os._exit() in workers loses no step."""
    url = "sqlite:///" + str(pathlib.Path.cwd() / "zenmeta.db")
    zenmeta.configure(store=url, durability="batched")
    context = multiprocessing.get_context("fork")
    with (
        pipeline_run("forked") as run,
        ProcessPoolExecutor(max_workers=2, mp_context=context) as pool,
    ):
        assert sorted(pool.map(square, range(6))) == [0, 1, 4, 9, 16, 25]
    steps = zenmeta.Client(url).list_steps(run.id)
    assert sorted(s.metadata["user"]["x"] for s in steps) == list(range(6))
    assert {s.run_id for s in steps} == {run.id}
    names = [s.name for s in steps]
    assert len(set(names)) == 6, names  # each worker names its steps square@<process token>…
    assert all(name.startswith("square@") for name in names)
