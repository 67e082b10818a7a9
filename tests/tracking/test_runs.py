"""Pipeline runs: the with, async with, decorator and notebook forms."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

import zenmeta
from zenmeta import get_run_context, log_metadata, pipeline_run, start_run, track_step
from zenmeta.testing import InMemoryStore


@track_step
def one() -> int:
    return 1


def test_run_handle_exposes_id_name_status_and_metadata(store: InMemoryStore) -> None:
    """The handle yielded by `with` reflects the run while and after it runs."""
    with pipeline_run("training", run_name="first", tags=["nightly"]) as run:
        assert run.status == "running"
        assert get_run_context().run_id == run.id
        log_metadata({"dataset": "iris"})
        assert run.metadata == {"user": {"dataset": "iris"}}
    assert run.status == "completed" and run.end_time is not None
    recorded = store.list_runs()[0]
    assert (recorded.id, recorded.name, recorded.pipeline_name) == (run.id, "first", "training")
    assert recorded.tags == ("nightly",)


def test_default_run_name_starts_with_pipeline_name(store: InMemoryStore) -> None:
    """Unnamed runs get `<pipeline>-<timestamp>-<id prefix>`."""
    with pipeline_run("training") as run:
        pass
    assert run.name.startswith("training-") and run.name.endswith(run.id.hex[:6])
    with pipeline_run("training") as twin:
        pass
    assert twin.name != run.name  # same second, still told apart


def test_entering_the_same_run_twice_is_an_error(store: InMemoryStore) -> None:
    """A run object is entered once; the error says what to do instead."""
    run = pipeline_run("p")
    with run, pytest.raises(zenmeta.RunStateError, match="already entered"), run:
        pass
    with pytest.raises(zenmeta.RunStateError, match="already entered"), run:
        pass


def test_nested_run_records_its_parent(store: InMemoryStore) -> None:
    """A run opened inside a run is a child run."""
    with pipeline_run("outer") as outer, pipeline_run("inner") as inner:
        one()
    assert inner.parent_run_id == outer.id
    recorded = {r.pipeline_name: r for r in store.list_runs()}
    assert recorded["inner"].parent_run_id == outer.id
    assert recorded["outer"].parent_run_id is None
    assert len(store.list_steps(inner.id)) == 1 and store.list_steps(outer.id) == []


def test_decorator_form_opens_a_new_run_per_call(store: InMemoryStore) -> None:
    """@pipeline_run() makes each call a fresh run named after the function."""

    @pipeline_run()
    def nightly(n: int) -> int:
        return sum(one() for _ in range(n))

    assert nightly(2) == 2 and nightly(1) == 1
    runs = store.list_runs()
    assert [r.pipeline_name for r in runs] == ["nightly", "nightly"]
    assert sorted(len(store.list_steps(r.id)) for r in runs) == [1, 2]


def test_async_decorator_and_async_with(store: InMemoryStore) -> None:
    """Async functions decorated with pipeline_run run inside `async with`."""

    @pipeline_run("asynchronous")
    async def flow() -> int:
        await asyncio.sleep(0)
        return one()

    assert asyncio.run(flow()) == 1
    assert store.list_runs()[0].pipeline_name == "asynchronous"


def test_system_exit_marks_run_interrupted(store: InMemoryStore) -> None:
    """SystemExit inside a run ends it as interrupted and propagates."""
    with pytest.raises(SystemExit), pipeline_run("p"):
        raise SystemExit(3)
    assert store.list_runs()[0].status == "interrupted"


def test_notebook_form_spans_fresh_contexts(store: InMemoryStore) -> None:
    """start_run() stays reachable from cells that run in brand-new contexts."""
    empty = contextvars.Context()
    run = empty.run(start_run, "notebook")
    assert contextvars.Context().run(one) == 1  # another "cell", fresh context
    contextvars.Context().run(log_metadata, {"cell": 3})
    contextvars.Context().run(run.end)
    recorded = store.list_runs()
    assert len(recorded) == 1 and recorded[0].status == "completed"
    assert recorded[0].metadata == {"user": {"cell": 3}}
    assert [s.name for s in store.list_steps(run.id)] == ["one"]
    assert one() == 1  # after end(), steps no longer join it
    assert len(store.list_runs()) == 2


def test_notebook_run_end_misuse_is_clear(store: InMemoryStore) -> None:
    """end() twice, or on a `with` run, raises RunStateError."""
    run = start_run("nb")
    run.end(status="failed")
    assert store.list_runs()[0].status == "failed"
    with pytest.raises(zenmeta.RunStateError):
        run.end()
    with pipeline_run("p") as entered, pytest.raises(zenmeta.RunStateError, match="with"):
        entered.end()


def test_with_run_wins_over_a_notebook_run(store: InMemoryStore) -> None:
    """The ContextVar is consulted first; the notebook registry only as a fallback."""
    notebook = start_run("nb")
    with pipeline_run("explicit") as explicit:
        one()
    notebook.end()
    assert len(store.list_steps(explicit.id)) == 1
    assert explicit.parent_run_id == notebook.id
    assert store.list_steps(notebook.id) == []
