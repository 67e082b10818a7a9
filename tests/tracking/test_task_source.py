"""``zenmeta.set_task_source``: an engine names the task a step runs in.

Threads stand in for an engine's worker threads here: a thread does not
inherit the submitter's context, so a step there finds no run, exactly as in
a Dask worker. The Dask integration's own tests use a real cluster.
"""

from __future__ import annotations

import logging
import pathlib
import threading
from collections.abc import Callable
from typing import Any

import pytest

import zenmeta
from zenmeta import Carrier, Client, attach, carry, pipeline_run, track_step
from zenmeta._tracking import context
from zenmeta.testing import reset


@track_step
def work(x: int) -> int:
    return x + 1


def _in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a fresh thread (no context inherited); its result."""
    found: list[Any] = []
    thread = threading.Thread(target=lambda: found.append(fn()))
    thread.start()
    thread.join()
    return found[0]


def _url() -> str:
    return "sqlite:///" + str(pathlib.Path.cwd() / "tasks.db")


def test_a_step_finding_no_run_joins_the_sources_carrier() -> None:
    """A step with no run, in a task whose source gives a carrier, is in that
    run under the carried step, with the task's key and attempt."""
    zenmeta.configure(store=_url())
    with pipeline_run("engine") as run:

        @track_step
        def submitter() -> Carrier:
            return carry()

        carrier = submitter()
        zenmeta.set_task_source(lambda: (carrier, "task-7", 2))

        def in_task() -> tuple[int, Any]:
            @track_step
            def observed() -> Any:
                return context.current_attachment()

            return work(1), observed()

        result, attachment = _in_thread(in_task)
    zenmeta.set_task_source(None)
    assert result == 2
    assert (attachment.task_key, attachment.attempt) == ("task-7", 2)
    steps = Client(_url()).list_steps(run.id)
    (parent,) = (step for step in steps if step.step_name == "submitter")
    assert sorted(step.step_name for step in steps) == ["observed", "submitter", "work"]
    assert {s.parent_step_run_id for s in steps if s is not parent} == {parent.id}
    assert [r.id for r in Client(_url()).list_runs()] == [run.id], "no implicit run"


def test_attach_takes_the_task_key_and_attempt_from_the_source() -> None:
    """attach(carrier) with no task_key names the source's task; an explicit one wins."""
    zenmeta.configure(store=_url())
    with pipeline_run("engine"):
        carrier = carry()
    zenmeta.set_task_source(lambda: (None, "key-1", 3))
    with attach(carrier):
        assert context.current_attachment() == (carrier, "key-1", 3)
    with attach(carrier, task_key="mine"):
        assert context.current_attachment() == (carrier, "mine", None)


def test_a_source_answering_none_leaves_steps_as_they_were() -> None:
    """Outside a task the source says None: a step there opens its implicit run."""
    zenmeta.configure(store=_url())
    zenmeta.set_task_source(lambda: None)
    assert _in_thread(lambda: work(1)) == 2
    (run,) = Client(_url()).list_runs()
    assert run.tags == ("implicit",)


@pytest.mark.parametrize(
    "source",
    [lambda: 1 / 0, lambda: "not a triple"],
    ids=["raises", "answers garbage"],
)
def test_a_broken_source_is_a_warning_never_an_error_in_the_step(
    source: Callable[[], Any], zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """A source that raises or answers nonsense is warned about; the step runs."""
    zenmeta.configure(store=_url())
    zenmeta.set_task_source(source)
    assert _in_thread(lambda: work(1)) == 2
    assert any("task source" in r.getMessage() for r in zenmeta_log.records)
    assert [r.levelno for r in zenmeta_log.records] == [logging.WARNING]


def test_an_unreachable_carrier_from_the_source_is_ignored_with_a_warning(
    zenmeta_log: pytest.LogCaptureFixture,
) -> None:
    """A carrier naming a SQLite file on another machine never breaks the task."""
    zenmeta.configure(store=_url())
    with pipeline_run("engine"):
        foreign = carry()._replace(owner_boot_id="another-boot", owner_host="far")
    zenmeta.set_task_source(lambda: (foreign, "task", 1))
    assert _in_thread(lambda: work(1)) == 2
    assert any("carrier is ignored" in r.getMessage() for r in zenmeta_log.records)


def test_set_task_source_takes_a_function_and_reset_removes_it() -> None:
    """Anything but a function or None is refused; testing.reset() clears the source."""
    with pytest.raises(TypeError, match="a function or None"):
        zenmeta.set_task_source("dask")  # type: ignore[arg-type]
    zenmeta.set_task_source(lambda: None)
    reset()
    assert context.task_answer() is None
    assert not context._task_source
