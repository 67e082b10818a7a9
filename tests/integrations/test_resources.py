"""The resources component: what each step cost in time, memory and GPU."""

from __future__ import annotations

import sys
import threading
import time

import pytest

import zenmeta
from zenmeta import pipeline_run, track_step
from zenmeta.integrations.resources import ResourcesComponent
from zenmeta.testing import InMemoryStore, recording

MIB = 1024 * 1024
MB = 1000 * 1000
# The step allocates 200 MiB and the peak must be 200 MB above the start: the
# start's RSS holds pages the interpreter may hand back during the step.
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _steps(store: InMemoryStore) -> dict[str, dict[str, object]]:
    run = store.list_runs()[0]
    return {step.name: dict(step.metadata["resources"]) for step in store.list_steps(run.id)}


@track_step
def allocate() -> int:
    block = bytearray(200 * MIB)  # zero-filled: every page is touched
    return len(block)


@track_step
def spin() -> tuple[float, float]:
    """0.3 s of this thread's CPU; returns its own (wall, thread CPU) seconds."""
    wall, cpu = time.perf_counter(), time.thread_time()
    deadline = cpu + 0.3
    while time.thread_time() < deadline:
        pass
    return time.perf_counter() - wall, time.thread_time() - cpu


@linux_only
def test_a_step_allocating_200_mb_peaks_that_much_above_its_start() -> None:
    """``peak_rss`` is the step's own high-water mark, reset at step start."""
    with recording() as store, pipeline_run("r", components=[ResourcesComponent()]):
        allocate()
        allocate()  # the second step is measured from its own start, not the process's
    for name in ("allocate", "allocate_2"):
        recorded = _steps(store)[name]
        assert recorded["peak_rss_scope"] == "step"
        peak, start = recorded["peak_rss"], recorded["rss_start"]
        assert isinstance(peak, zenmeta.StorageSize) and isinstance(start, zenmeta.StorageSize)
        assert peak - start >= 200 * MB
        assert recorded["rss_end"] < peak  # the block was freed before the step ended


def test_a_cpu_bound_step_has_cpu_time_close_to_its_wall_time() -> None:
    """A busy loop: the recorded times match what the step measured itself, and CPU
    time is as close to wall time as the scheduler let it be (on an idle machine, ≈)."""
    with recording() as store, pipeline_run("r", components=[ResourcesComponent()]):
        own_wall, own_cpu = spin()
    recorded = _steps(store)["spin"]
    wall, thread, process = (
        recorded["wall_time_s"],
        recorded["thread_cpu_time_s"],
        recorded["cpu_time_s"],
    )
    assert isinstance(wall, float) and isinstance(thread, float) and isinstance(process, float)
    assert wall == pytest.approx(own_wall, abs=0.02)
    assert thread == pytest.approx(own_cpu, abs=0.02) and thread >= 0.3
    assert process >= thread - 0.005  # the process's CPU includes the step's thread
    assert thread / wall == pytest.approx(own_cpu / own_wall, abs=0.05)


def test_a_sleeping_step_uses_almost_no_cpu() -> None:
    """Waiting is wall time, not CPU time."""

    @track_step
    def wait() -> None:
        time.sleep(0.2)

    with recording() as store, pipeline_run("r", components=[ResourcesComponent()]):
        wait()
    recorded = _steps(store)["wait"]
    assert recorded["wall_time_s"] >= 0.2
    assert recorded["thread_cpu_time_s"] < 0.05


def test_without_a_gpu_there_are_no_gpu_keys_and_no_error() -> None:
    """No pynvml (or no device) is not an error: the GPU keys are simply absent."""
    with recording(strict=True) as store, pipeline_run("r", components=[ResourcesComponent()]):
        spin()
    step = store.list_steps(store.list_runs()[0].id)[0]
    assert not [key for key in step.metadata["resources"] if key.startswith("gpu")]
    assert step.faults == () and step.dropped == ()


@linux_only
def test_an_outer_step_keeps_the_peak_of_its_inner_step() -> None:
    """An inner step resets the process-wide mark; the outer step's peak still covers it."""

    @track_step
    def outer() -> None:
        allocate()

    with recording() as store, pipeline_run("r", components=[ResourcesComponent()]):
        outer()
    recorded = _steps(store)
    peak, start = recorded["outer"]["peak_rss"], recorded["outer"]["rss_start"]
    assert isinstance(peak, int) and isinstance(start, int)
    assert peak - start >= 200 * MB


def test_steps_on_threads_are_measured_separately() -> None:
    """Each thread's step gets its own thread CPU time, none leaks into another."""
    with recording() as store, pipeline_run("r", components=[ResourcesComponent()]) as run:
        workers = [threading.Thread(target=zenmeta.carry_context(spin)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    steps = store.list_steps(run.id)
    assert len(steps) == 2
    for step in steps:
        assert step.metadata["resources"]["thread_cpu_time_s"] == pytest.approx(0.3, rel=0.15)


def test_the_flavor_name_switches_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ZENMETA_COMPONENTS=resources`` finds it through the entry point."""
    monkeypatch.setenv("ZENMETA_COMPONENTS", "resources")
    with recording() as store, pipeline_run("r"):
        spin()
    step = store.list_steps(store.list_runs()[0].id)[0]
    assert "wall_time_s" in step.metadata["resources"]


def test_cuda_visible_devices_is_read_as_cuda_reads_it() -> None:
    """Entries up to the first invalid one; ``-1`` or empty hides every device."""
    from zenmeta.integrations.resources import _visible

    assert _visible("0,2") == ["0", "2"]
    assert _visible("GPU-1a2b, 1") == ["GPU-1a2b", "1"]
    assert _visible("1,-1,0") == ["1"]
    assert _visible("") == []
    assert _visible("-1") == []
