"""@track_step on every kind of callable, and the step lifecycle."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest

import zenmeta
from zenmeta import get_step_context, log_metadata, pipeline_run, track_step
from zenmeta.testing import InMemoryStore


def only_run(store: InMemoryStore) -> zenmeta.RecordedRun:
    runs = store.list_runs()
    assert len(runs) == 1
    return runs[0]


def step_names(store: InMemoryStore) -> list[str]:
    return [s.name for s in store.list_steps(only_run(store).id)]


@track_step
def double(x: int) -> int:
    """Doubles."""
    return 2 * x


@track_step(name="renamed", settings={"lr": 0.1})
def configured(x: int) -> int:
    info = get_step_context()
    assert info.config.settings["lr"] == 0.1
    return x + 1


@track_step
async def slow_double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


@track_step
def count_to(n: int) -> Iterator[int]:
    for i in range(n):
        log_metadata({f"seen_{i}": i})
        yield i


@track_step
async def acount_to(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        log_metadata({f"seen_{i}": i})
        yield i


class Model:
    factor = 3

    @track_step
    def scale(self, x: int) -> int:
        return self.factor * x

    @track_step
    @classmethod
    def make(cls) -> Model:
        return cls()

    @track_step
    @staticmethod
    def add(a: int, b: int) -> int:
        return a + b


def test_plain_function_is_recorded_with_its_result(store: InMemoryStore) -> None:
    """A decorated function returns its value and is recorded as a completed step."""
    with pipeline_run("p"):
        assert double(4) == 8
    [step] = store.list_steps(only_run(store).id)
    assert (step.name, step.step_name, step.status) == ("double", "double", "completed")
    assert step.end_time >= step.start_time


def test_decorator_keeps_identity_and_signature() -> None:
    """Name, doc, __wrapped__, signature and coroutine-ness survive decoration."""
    assert double.__name__ == "double"
    assert double.__doc__ == "Doubles."
    assert inspect.signature(double) == inspect.signature(double.__wrapped__)
    assert list(inspect.signature(double).parameters) == ["x"]
    assert double.__wrapped__(2) == 4
    assert inspect.iscoroutinefunction(slow_double)
    assert not inspect.iscoroutinefunction(double)
    assert inspect.isgeneratorfunction(count_to)
    assert inspect.isasyncgenfunction(acount_to)


def test_parametrised_decorator_names_the_step(store: InMemoryStore) -> None:
    """name= overrides the step name and settings reach the components' info."""
    with pipeline_run("p"):
        assert configured(1) == 2
    assert step_names(store) == ["renamed"]


def test_repeated_calls_get_unique_invocation_names(store: InMemoryStore) -> None:
    """The second and third calls are train_2 and train_3, as in ZenML."""
    with pipeline_run("p"):
        for i in range(3):
            double(i)
    assert step_names(store) == ["double", "double_2", "double_3"]


def test_async_step_spans_its_awaits(store: InMemoryStore) -> None:
    """An async step's duration covers the awaited body."""

    async def main() -> int:
        async with pipeline_run("p"):
            return await slow_double(2)

    assert asyncio.run(main()) == 4
    [step] = store.list_steps(only_run(store).id)
    assert step.duration >= 0.009


def test_generator_step_spans_the_whole_iteration(store: InMemoryStore) -> None:
    """A generator step ends when iteration ends, with what it logged on the way."""
    with pipeline_run("p"):
        items = count_to(3)
        assert zenmeta.get_run_context()  # the run is current, no step yet
        assert list(items) == [0, 1, 2]
    [step] = store.list_steps(only_run(store).id)
    assert step.status == "completed"
    assert step.metadata["user"] == {"seen_0": 0, "seen_1": 1, "seen_2": 2}


def test_generator_step_context_is_not_visible_while_suspended(store: InMemoryStore) -> None:
    """Between two items the caller is not inside the generator's step."""
    with pipeline_run("p"):
        items = count_to(2)
        next(items)
        with pytest.raises(zenmeta.NoActiveContextError):
            get_step_context()
        items.close()
    [step] = store.list_steps(only_run(store).id)
    assert step.status == "completed"
    assert step.metadata["user"] == {"seen_0": 0}


def test_generator_step_failing_midway_is_failed(store: InMemoryStore) -> None:
    """An exception raised inside a generator step fails the step and reaches the caller."""

    @track_step
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("midway")

    with pytest.raises(ValueError, match="midway"), pipeline_run("p"):
        list(broken())
    [step] = store.list_steps(only_run(store).id)
    assert (step.status, step.error_type, step.error_message) == ("failed", "ValueError", "midway")


def test_generator_step_receives_sent_values_and_thrown_errors(store: InMemoryStore) -> None:
    """send() and throw() reach the wrapped generator; its return value passes through."""

    @track_step
    def echo() -> Iterator[object]:
        received = yield "ready"
        try:
            yield received
        except KeyError:
            yield "caught"
        return "done"

    with pipeline_run("p"):
        gen = echo()
        assert next(gen) == "ready"
        assert gen.send(42) == 42
        assert gen.throw(KeyError("k")) == "caught"
        with pytest.raises(StopIteration) as stop:
            next(gen)
        assert stop.value.value == "done"
    assert store.list_steps(only_run(store).id)[0].status == "completed"


def test_async_generator_step_spans_the_iteration(store: InMemoryStore) -> None:
    """An async generator step ends when iteration ends."""

    async def main() -> list[int]:
        async with pipeline_run("p"):
            return [i async for i in acount_to(3)]

    assert asyncio.run(main()) == [0, 1, 2]
    [step] = store.list_steps(only_run(store).id)
    assert step.status == "completed"
    assert step.metadata["user"] == {"seen_0": 0, "seen_1": 1, "seen_2": 2}


def test_async_generator_closed_early_completes_the_step(store: InMemoryStore) -> None:
    """aclose() on a partly consumed async generator ends its step as completed."""

    async def main() -> None:
        async with pipeline_run("p"):
            gen = acount_to(5)
            assert await gen.__anext__() == 0
            await gen.aclose()

    asyncio.run(main())
    [step] = store.list_steps(only_run(store).id)
    assert step.status == "completed"
    assert step.metadata["user"] == {"seen_0": 0}


def test_methods_of_every_kind_are_steps(store: InMemoryStore) -> None:
    """Instance, class and static methods bind correctly and are recorded."""
    with pipeline_run("p"):
        model = Model.make()
        assert isinstance(model, Model)
        assert model.scale(2) == 6
        assert Model.add(1, 2) == 3
        assert model.add(2, 2) == 4
    assert step_names(store) == ["Model.make", "Model.scale", "Model.add", "Model.add_2"]


def test_failing_step_reraises_the_same_exception(store: InMemoryStore) -> None:
    """The caller gets the very exception object raised, traceback intact."""
    raised = ValueError("bad input")

    @track_step
    def fail() -> None:
        raise raised

    with pytest.raises(ValueError) as caught, pipeline_run("p"):
        fail()
    assert caught.value is raised
    assert caught.value.__traceback__ is not None
    frames = [f.name for f in __import__("traceback").extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "fail"
    step = store.list_steps(store.list_runs()[0].id)[0]
    assert (step.status, step.error_type, step.error_message) == (
        "failed",
        "ValueError",
        "bad input",
    )
    assert store.list_runs()[0].status == "failed"


def test_keyboard_interrupt_marks_step_and_run_interrupted(store: InMemoryStore) -> None:
    """KeyboardInterrupt is recorded as interrupted, not failed, and still propagates."""

    @track_step
    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), pipeline_run("p"):
        stop()
    run = store.list_runs()[0]
    assert run.status == "interrupted"
    assert store.list_steps(run.id)[0].status == "interrupted"


def test_nested_step_records_its_parent(store: InMemoryStore) -> None:
    """A step called inside a step links to it."""

    @track_step
    def outer() -> int:
        return double(1)

    with pipeline_run("p"):
        outer()
    steps = {s.name: s for s in store.list_steps(only_run(store).id)}
    assert steps["double"].parent_step_run_id == steps["outer"].id
    assert steps["outer"].parent_step_run_id is None


def test_step_outside_a_run_opens_an_implicit_run(store: InMemoryStore) -> None:
    """A step with no current run gets a one-step run named after it."""
    assert double(5) == 10
    run = only_run(store)
    assert (run.pipeline_name, run.tags, run.status) == ("double", ("implicit",), "completed")
    assert step_names(store) == ["double"]


def test_implicit_runs_can_be_turned_off(store: InMemoryStore) -> None:
    """With implicit runs off, a step outside a run runs untracked."""
    zenmeta.configure(implicit_runs=False)
    assert double(5) == 10
    assert store.list_runs() == []


def test_log_metadata_attaches_to_step_then_run(store: InMemoryStore) -> None:
    """Inside a step it goes to the step; outside a step, to the run; latest wins."""

    @track_step
    def work() -> None:
        log_metadata({"rows": 1})
        log_metadata({"rows": 2, "dtype": zenmeta.DType("float32")})

    with pipeline_run("p"):
        work()
        log_metadata({"owner": "ana"})
    run = only_run(store)
    assert run.metadata == {"user": {"owner": "ana"}}
    step = store.list_steps(run.id)[0]
    assert step.metadata == {"user": {"rows": 2, "dtype": "float32"}}
    assert isinstance(step.metadata["user"]["dtype"], zenmeta.DType)


def test_log_metadata_outside_everything_is_a_clear_error() -> None:
    """Misuse raises NoActiveContextError naming what to do."""
    with pytest.raises(zenmeta.NoActiveContextError, match="outside any step or run"):
        log_metadata({"a": 1})
    with pytest.raises(zenmeta.NoActiveContextError, match="outside a step"):
        get_step_context()


def test_step_info_has_zenml_shapes(store: InMemoryStore) -> None:
    """StepRunInfo carries ZenML's field names and is frozen."""
    seen: list[zenmeta.StepRunInfo] = []

    @track_step
    def look() -> None:
        seen.append(get_step_context())

    with pipeline_run("training", run_name="r1") as run:
        look()
    info = seen[0]
    assert info.run_id == run.id and info.run_name == "r1"
    assert info.pipeline.name == "training" and info.config.name == "look"
    assert info.pipeline_step_name == "look" and info.parent_step_run_id is None
    assert info.start_time.tzinfo is not None
    with pytest.raises(AttributeError):
        info.run_name = "other"  # type: ignore[misc]


def test_decorating_a_non_callable_is_a_type_error() -> None:
    """@track_step on something that is not callable says so."""
    with pytest.raises(TypeError, match="decorates a function"):
        track_step(42)  # type: ignore[call-overload]


def test_logging_a_dict_another_thread_is_changing_never_raises_into_the_step(
    store: InMemoryStore,
) -> None:
    """The values are copied at once (in C, under the interpreter lock) before
    they are checked: iterating the caller's own dict while another thread
    adds and removes a key raised ``RuntimeError`` into the step."""
    import sys
    import threading

    shared = {f"k{i}": i for i in range(200)}
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            shared["extra"] = 1
            stop.is_set()  # a Python call: a point where the interpreter may switch threads
            shared.pop("extra", None)

    @track_step
    def log_it() -> None:
        log_metadata(shared)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    changer = threading.Thread(target=churn)
    changer.start()
    try:
        with pipeline_run("churned"):
            for _ in range(300):
                log_it()
    finally:
        stop.set()
        changer.join()
        sys.setswitchinterval(interval)
    steps = store.list_steps(only_run(store).id)
    assert len(steps) == 300
    assert all(not step.dropped for step in steps)
    assert all(step.metadata["user"]["k199"] == 199 for step in steps)
