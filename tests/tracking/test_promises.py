"""Promises under hostile input: names checked at the door, the user's own
exception and only theirs, interrupts recorded, settings checked early."""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest

import zenmeta
from zenmeta import Client, StackComponent, log_metadata, pipeline_run, start_run, track_step
from zenmeta._tracking import components as _components
from zenmeta.testing import InMemoryStore


class LazyMessageError(Exception):
    """An error whose message template fails to render, as some libraries' do."""

    def __str__(self) -> str:
        raise KeyError("template")


class Hook(StackComponent):
    """Raises ``error`` in ``hook``, or returns ``result`` from the metadata hooks."""

    def __init__(self, hook: str = "", error: BaseException | None = None, result: Any = None):
        super().__init__("hook")
        self.hook, self.error, self.result = hook, error, result

    def _maybe(self, hook: str) -> Any:
        if hook == self.hook:
            if self.error is not None:
                raise self.error
            return self.result
        return {}

    def prepare_pipeline_run(self, info: Any) -> None:
        self._maybe("prepare_pipeline_run")

    def get_pipeline_run_metadata(self, run_id: Any) -> Any:
        return self._maybe("get_pipeline_run_metadata")

    def get_step_run_metadata(self, info: Any) -> Any:
        return self._maybe("get_step_run_metadata")

    def prepare_step_run(self, info: Any) -> None:
        self._maybe("prepare_step_run")

    def cleanup_step_run(self, info: Any, step_failed: bool) -> None:
        self._maybe("cleanup_step_run")

    def cleanup_pipeline_run(self, info: Any, run_failed: bool) -> None:
        self._maybe("cleanup_pipeline_run")


@track_step
def ok() -> int:
    return 1


# -- point 1: names and tags are checked where they enter ------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: pipeline_run(123), TypeError),  # type: ignore[arg-type]
        (lambda: pipeline_run("p", run_name=42), TypeError),  # type: ignore[arg-type]
        (lambda: pipeline_run("p", tags="abc"), TypeError),
        (lambda: pipeline_run("p", tags=[1, 2]), TypeError),  # type: ignore[list-item]
        (lambda: pipeline_run(""), ValueError),
        (lambda: start_run("p", run_name=3.5), TypeError),  # type: ignore[arg-type]
        (lambda: track_step(name=7), TypeError),  # type: ignore[call-overload]
        (lambda: track_step(name=""), ValueError),
    ],
)
def test_bad_names_and_tags_are_refused_before_the_run_starts(
    call: Any, error: type[Exception], store: InMemoryStore
) -> None:
    """A non-text name or tag is a clear error at the call, and nothing is recorded."""
    with pytest.raises(error):
        call()
    assert store.list_runs() == []


def test_bare_pipeline_run_decorates_a_function(store: InMemoryStore) -> None:
    """`@pipeline_run` without parentheses makes each call a run named after the function."""

    @pipeline_run
    def training() -> int:
        return ok() + 1

    assert training() == 2
    (run,) = store.list_runs()
    assert run.pipeline_name == "training" and run.status == "completed"
    assert run.step_count == 1


# -- point 3: the user's exception and only theirs --------------------------


def test_user_exception_whose_str_raises_reaches_the_caller_and_is_recorded(
    store: InMemoryStore,
) -> None:
    """The very same exception comes out; the step is recorded with a fallback message."""
    error = LazyMessageError()

    @track_step
    def lazy() -> None:
        raise error

    with pytest.raises(LazyMessageError) as caught, pipeline_run("p") as run:
        lazy()
    assert caught.value is error
    (step,) = store.list_steps(run.id)
    assert step.status == "failed" and step.error_type == "LazyMessageError"
    assert "str() raised KeyError" in (step.error_message or "")
    assert store.list_runs()[0].status == "failed"


@pytest.mark.parametrize(
    "component",
    [
        Hook("get_step_run_metadata", error=LazyMessageError()),
        Hook("cleanup_step_run", error=LazyMessageError()),
        Hook("get_step_run_metadata", result=type("Bad", (dict,), {"items": lambda s: 1 / 0})()),
    ],
    ids=["hook-error-str-raises", "cleanup-error-str-raises", "items-raises"],
)
def test_hook_faults_that_cannot_be_described_never_fail_the_step(
    component: Hook, store: InMemoryStore
) -> None:
    """A hook whose error cannot be printed, or whose mapping cannot be read, is a fault."""
    with pipeline_run("p", components=[component]) as run:
        assert ok() == 1
    (step,) = store.list_steps(run.id)
    assert step.status == "completed"
    assert [(f.component, f.hook) for f in step.faults] == [("hook", component.hook)]


# -- point 4: interrupts inside hooks ----------------------------------------


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_interrupt_in_a_step_hook_propagates_keeps_the_step_and_ends_the_run(
    error: type[BaseException], store: InMemoryStore
) -> None:
    """The interrupt goes on; the step stays recorded, with a fault; the run is interrupted."""
    component = Hook("get_step_run_metadata", error=error())
    with pytest.raises(error), pipeline_run("p", components=[component]) as run:
        ok()
    (step,) = store.list_steps(run.id)
    assert step.status == "completed"
    assert [(f.component, f.error_type) for f in step.faults] == [("hook", error.__name__)]
    assert store.list_runs()[0].status == "interrupted"


def test_interrupt_in_a_run_hook_records_the_run_interrupted(store: InMemoryStore) -> None:
    """A Ctrl-C in `prepare_pipeline_run` leaves no run reading `running`."""
    component = Hook("prepare_pipeline_run", error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt), pipeline_run("p", components=[component]):
        pass
    (run,) = store.list_runs()
    assert run.status == "interrupted"
    assert [(f.component, f.hook) for f in run.faults] == [("hook", "prepare_pipeline_run")]


def test_interrupt_before_the_step_stops_it_and_is_recorded(store: InMemoryStore) -> None:
    """Ctrl-C in `prepare_step_run`: the user's code does not run; step and run read interrupted."""
    ran = []

    @track_step
    def body() -> None:
        ran.append(True)

    component = Hook("prepare_step_run", error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt), pipeline_run("p", components=[component]) as run:
        body()
    (step,) = store.list_steps(run.id)
    assert ran == [] and step.status == "interrupted" and step.faults[0].hook == "prepare_step_run"
    assert store.list_runs()[0].status == "interrupted"


def test_interrupt_in_run_cleanup_records_the_run_interrupted(store: InMemoryStore) -> None:
    """Ctrl-C in `cleanup_pipeline_run` of a run that succeeded: recorded, then raised."""
    component = Hook("cleanup_pipeline_run", error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt), pipeline_run("p", components=[component]):
        ok()
    (run,) = store.list_runs()
    assert run.status == "interrupted" and run.faults[0].hook == "cleanup_pipeline_run"


# -- point 8: slow hooks ---------------------------------------------------------


def test_a_slow_hook_is_recorded_and_warned_about(
    store: InMemoryStore, zenmeta_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook slower than the limit is named in a warning and in the step's faults."""
    monkeypatch.setattr(_components, "SLOW_HOOK_S", 0.01)

    class Slow(StackComponent):
        def get_step_run_metadata(self, info: Any) -> dict[str, Any]:
            time.sleep(0.05)
            return {}

    with pipeline_run("p", components=[Slow("slow")]) as run:
        ok()
    (step,) = store.list_steps(run.id)
    assert [(f.component, f.error_type) for f in step.faults] == [("slow", "SlowHook")]
    assert "'slow'" in zenmeta_log.text and "get_step_run_metadata" in zenmeta_log.text


# -- point 9: bad settings are loud and early --------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("ZENMETA_STRICT", "nah", "true"),
        ("ZENMETA_IMPLICIT_RUNS", "maybe", "false"),
        ("ZENMETA_DURABILITY", "fast", "immediate"),
    ],
)
def test_a_bad_setting_is_one_error_when_the_run_starts(
    variable: str, value: str, allowed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error names the variable and what it allows, before any step runs."""
    monkeypatch.setenv("ZENMETA_STORE", "memory://")
    monkeypatch.setenv(variable, value)
    entered = []
    with pytest.raises(zenmeta.ConfigurationError, match=variable) as caught, pipeline_run("p"):
        entered.append(True)
    assert entered == [] and allowed in str(caught.value)
    with pytest.raises(zenmeta.ConfigurationError, match=variable):
        ok()  # an implicit run checks too


def test_configure_refuses_a_non_boolean_flag() -> None:
    """`configure(strict="nah")` is refused at the call."""
    with pytest.raises(zenmeta.ConfigurationError, match="strict"):
        zenmeta.configure(strict="nah")  # type: ignore[arg-type]


# -- point 10: records that say what happened ----------------------------------------


def test_a_component_named_user_is_refused() -> None:
    """`user` is the source of the user's own metadata, reserved like a taken name."""
    with pytest.raises(zenmeta.ConfigurationError, match="reserved"):
        zenmeta.register_component(StackComponent("user"))
    with (
        pytest.raises(zenmeta.ConfigurationError, match="reserved"),
        pipeline_run("p", components=[StackComponent("user")]),
    ):
        pass


def test_client_sees_the_open_run_of_this_process(tmp_path: Any) -> None:
    """Inside the block, `Client().get_run(run.id)` finds the run (batched mode)."""
    zenmeta.configure(store=f"sqlite:///{tmp_path}/runs.db")
    with pipeline_run("p") as run:
        ok()
        seen = Client().get_run(run.id)
        assert seen.status == "running" and seen.step_count == 1


def test_starting_a_detached_run_again_ends_the_earlier_one(
    store: InMemoryStore, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """Re-running a notebook cell warns and ends the earlier run as completed."""
    first = start_run("nb")
    second = start_run("nb")
    ok()
    second.end()
    assert first.status == "completed" and "still open" in zenmeta_log.text
    assert store.list_steps(first.id) == [] and len(store.list_steps(second.id)) == 1


def test_log_metadata_can_target_the_run_from_inside_a_step(store: InMemoryStore) -> None:
    """`log_metadata(..., run=True)` in a step attaches to the run, not the step."""

    @track_step
    def train() -> None:
        log_metadata({"dataset": "iris"}, run=True)
        log_metadata({"loss": 0.1})

    with pipeline_run("p") as run:
        train()
    assert store.list_runs()[0].metadata == {"user": {"dataset": "iris"}}
    assert store.list_steps(run.id)[0].metadata == {"user": {"loss": 0.1}}


class Trainer:
    @track_step
    def fit(self) -> int:
        return 1


class Evaluator:
    @track_step
    def fit(self) -> int:
        return 2


class Scorer:
    def __call__(self, x: int) -> int:
        return x


def _scale(x: int, factor: int) -> int:
    return x * factor


def test_step_names_tell_methods_partials_and_callables_apart(store: InMemoryStore) -> None:
    """Qualified names for methods (no `<locals>`), the function of a partial, an object's class."""

    def make() -> Any:
        @track_step
        def inner() -> int:
            return 0

        return inner

    with pipeline_run("p") as run:
        Trainer().fit()
        Evaluator().fit()
        track_step(functools.partial(_scale, factor=2))(3)
        track_step(Scorer())(1)
        make()()
    names = [step.step_name for step in store.list_steps(run.id)]
    assert names == ["Trainer.fit", "Evaluator.fit", "_scale", "Scorer", "inner"]
