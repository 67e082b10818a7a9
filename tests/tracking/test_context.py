"""Context propagation: asyncio tasks and threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from zenmeta import (
    ContextThreadPoolExecutor,
    StepRunInfo,
    carry_context,
    get_step_context,
    log_metadata,
    pipeline_run,
    track_step,
)
from zenmeta.testing import InMemoryStore


@track_step
async def sleepy(i: int) -> StepRunInfo:
    info = get_step_context()
    await asyncio.sleep(0.02)
    assert get_step_context() is info  # still our own step after the await
    log_metadata({"i": i})
    return info


def test_fifty_concurrent_async_steps_each_see_their_own_step(store: InMemoryStore) -> None:
    """50 steps under asyncio.gather: distinct infos, one run, durations cover awaits."""

    async def main() -> tuple[object, list[StepRunInfo]]:
        async with pipeline_run("fan-out") as run:
            infos = await asyncio.gather(*(sleepy(i) for i in range(50)))
            return run.id, infos

    run_id, infos = asyncio.run(main())
    assert len({info.step_run_id for info in infos}) == 50
    assert {info.run_id for info in infos} == {run_id}
    steps = store.list_steps(run_id)  # type: ignore[arg-type]
    assert len(steps) == 50
    assert {s.metadata["user"]["i"] for s in steps} == set(range(50))
    assert all(s.duration >= 0.019 for s in steps)
    assert len({s.name for s in steps}) == 50


@track_step
def in_thread(i: int) -> str:
    log_metadata({"thread": threading.current_thread().name, "i": i})
    return get_step_context().run_name


def test_context_executor_steps_belong_to_the_submitting_run(store: InMemoryStore) -> None:
    """Steps submitted through ContextThreadPoolExecutor join the run and parent step."""

    @track_step
    def fan_out() -> list[str]:
        with ContextThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(in_thread, range(8)))

    with pipeline_run("threads") as run:
        names = fan_out()
    assert set(names) == {run.name}
    assert len(store.list_runs()) == 1
    steps = store.list_steps(run.id)
    parent = next(s for s in steps if s.name == "fan_out")
    children = [s for s in steps if s.step_name == "in_thread"]
    assert len(children) == 8
    assert {s.parent_step_run_id for s in children} == {parent.id}


def test_carry_context_wraps_a_function_for_any_thread(store: InMemoryStore) -> None:
    """A function wrapped with carry_context runs in the run even in a plain thread."""
    with pipeline_run("wrapped") as run:
        worker = carry_context(in_thread)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(store.list_runs()) == 1
    assert len(store.list_steps(run.id)) == 3


def test_plain_thread_without_helper_gets_an_implicit_run(store: InMemoryStore) -> None:
    """Documented behaviour: a thread does not inherit the run; its step runs alone."""
    with pipeline_run("outer") as run, ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(in_thread, 1).result()
    runs = {r.pipeline_name: r for r in store.list_runs()}
    assert store.list_steps(run.id) == []
    assert runs["in_thread"].tags == ("implicit",)
    assert runs["in_thread"].parent_run_id is None


def test_async_step_durations_are_measured_per_task(store: InMemoryStore) -> None:
    """Concurrent steps overlap in time: the run is shorter than their sum."""

    async def main() -> float:
        start = time.perf_counter()
        async with pipeline_run("overlap"):
            await asyncio.gather(*(sleepy(i) for i in range(5)))
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    steps = store.list_steps(store.list_runs()[0].id)
    assert sum(s.duration for s in steps) > elapsed


def test_a_step_ended_with_another_contexts_token_is_logged_and_recorded(
    store: InMemoryStore, zenmeta_log: Any
) -> None:
    """Only code that moves contexts by hand can end a step with a token of
    another context; the step is recorded all the same, and the mismatch is
    a warning, never an error in the user's program (OpenTelemetry's rule)."""
    from zenmeta._tracking import steps

    config = steps.step_config_of(sleepy)
    assert config is not None
    with pipeline_run("p"):
        state = steps._begin(config)
        assert state is not None
        foreign = contextvars.copy_context().run(steps._step_var.set, state)
        steps._end(state, foreign, None)
    (step,) = store.list_steps(store.list_runs()[0].id)
    assert step.status == "completed"
    assert "reset in a different context" in zenmeta_log.text
