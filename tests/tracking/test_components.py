"""Stack components: hook order, isolation, strict mode, registration."""

from __future__ import annotations

import contextlib
from typing import Any
from uuid import UUID

import numpy as np
import pytest

import zenmeta
from zenmeta import (
    PipelineRunInfo,
    StackComponent,
    StepRunInfo,
    Uri,
    pipeline_run,
    track_step,
)
from zenmeta._tracking.components import HOOKS
from zenmeta.testing import InMemoryStore


class Recorder(StackComponent):
    """Records every hook call; raises in the hook named by ``fail_in``."""

    def __init__(self, name: str, fail_in: str | None = None) -> None:
        super().__init__(name)
        self.fail_in = fail_in
        self.calls: list[tuple[str, Any]] = []

    def _hit(self, hook: str, detail: Any = None) -> None:
        self.calls.append((hook, detail))
        if hook == self.fail_in:
            raise RuntimeError(f"{self.name} broke in {hook}")

    def prepare_pipeline_run(self, info: PipelineRunInfo) -> None:
        self._hit("prepare_pipeline_run")

    def get_pipeline_run_metadata(self, run_id: UUID) -> dict[str, Any]:
        self._hit("get_pipeline_run_metadata")
        return {"where": Uri(f"http://{self.name}.example/runs/{run_id}")}

    def prepare_step_run(self, info: StepRunInfo) -> None:
        self._hit("prepare_step_run", info.pipeline_step_name)

    def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, Any]:
        self._hit("get_step_run_metadata", info.pipeline_step_name)
        return {"step": info.pipeline_step_name}

    def cleanup_step_run(self, info: StepRunInfo, step_failed: bool) -> None:
        self._hit("cleanup_step_run", step_failed)

    def cleanup_pipeline_run(self, info: PipelineRunInfo, run_failed: bool) -> None:
        self._hit("cleanup_pipeline_run", run_failed)


@track_step
def add_one(x: int) -> int:
    return x + 1


def test_hooks_run_in_lifecycle_order(store: InMemoryStore) -> None:
    """Run hooks wrap the steps; each step sees prepare, metadata, cleanup."""
    component = Recorder("rec")
    with pipeline_run("p", components=[component]):
        add_one(1)
    assert component.calls == [
        ("prepare_pipeline_run", None),
        ("get_pipeline_run_metadata", None),
        ("prepare_step_run", "add_one"),
        ("get_step_run_metadata", "add_one"),
        ("cleanup_step_run", False),
        ("cleanup_pipeline_run", False),
    ]
    run = store.list_runs()[0]
    assert run.metadata["rec"]["where"] == f"http://rec.example/runs/{run.id}"
    assert isinstance(run.metadata["rec"]["where"], Uri)
    assert store.list_steps(run.id)[0].metadata == {"rec": {"step": "add_one"}}


def test_failing_step_still_collects_metadata(store: InMemoryStore) -> None:
    """On failure every component's metadata hook runs and cleanup hears step_failed."""
    first, second = Recorder("first"), Recorder("second")
    error = ZeroDivisionError("boom")

    @track_step
    def explode() -> None:
        raise error

    with pytest.raises(ZeroDivisionError) as caught, pipeline_run("p", components=[first, second]):
        explode()
    assert caught.value is error
    for component in (first, second):
        assert ("get_step_run_metadata", "explode") in component.calls
        assert ("cleanup_step_run", True) in component.calls
        assert ("cleanup_pipeline_run", True) in component.calls
    step = store.list_steps(store.list_runs()[0].id)[0]
    assert step.status == "failed"
    assert set(step.metadata) == {"first", "second"}


@pytest.mark.parametrize("hook", HOOKS)
def test_a_raising_hook_breaks_nothing_else(
    hook: str, store: InMemoryStore, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """The step returns, the other component records, a warning names the culprit."""
    bad, good = Recorder("bad", fail_in=hook), Recorder("good")
    with pipeline_run("p", components=[bad, good]):
        assert add_one(1) == 2
    run = store.list_runs()[0]
    step = store.list_steps(run.id)[0]
    assert run.status == "completed" and step.status == "completed"
    assert step.metadata["good"] == {"step": "add_one"}
    assert "good" in run.metadata
    faults = run.faults if "pipeline" in hook else step.faults
    assert [(f.component, f.hook, f.error_type) for f in faults] == [("bad", hook, "RuntimeError")]
    assert f"component 'bad' failed in {hook}" in zenmeta_log.text
    assert len(good.calls) == len(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_strict_mode_raises_component_errors(hook: str, store: InMemoryStore) -> None:
    """In strict mode a raising hook becomes a ComponentError naming it, after cleanup."""
    zenmeta.configure(strict=True)
    bad, good = Recorder("bad", fail_in=hook), Recorder("good")
    with pytest.raises(zenmeta.ComponentError) as caught, pipeline_run("p", components=[bad, good]):
        add_one(1)
    assert (caught.value.component, caught.value.hook) == ("bad", hook)
    assert good.calls[-1][0] == "cleanup_pipeline_run"  # every cleanup still ran
    assert store.list_runs()[0].status in ("failed", "completed")


def test_strict_mode_never_replaces_the_users_exception(store: InMemoryStore) -> None:
    """A failing hook in strict mode does not mask the step's own error."""
    zenmeta.configure(strict=True)

    @track_step
    def explode() -> None:
        raise KeyError("mine")

    bad = Recorder("bad", fail_in="get_step_run_metadata")
    with pytest.raises(KeyError, match="mine"), pipeline_run("p", components=[bad]):
        explode()


def test_numpy_and_custom_objects_are_coerced(
    store: InMemoryStore, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """A numpy.float64 becomes a float; a custom object its str(), with a warning."""

    class Opaque:
        def __str__(self) -> str:
            return "opaque-thing"

    class Numeric(StackComponent):
        def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, Any]:
            return {"loss": np.float64(0.25), "count": np.int64(3), "thing": Opaque()}

    with pipeline_run("p", components=[Numeric("num")]):
        add_one(1)
    values = store.list_steps(store.list_runs()[0].id)[0].metadata["num"]
    assert values == {"loss": 0.25, "count": 3, "thing": "opaque-thing"}
    assert type(values["loss"]) is float and type(values["count"]) is int
    assert "stored as its str()" in zenmeta_log.text


def test_zenml_style_component_without_subclassing_works(store: InMemoryStore) -> None:
    """Any object with ZenML's hook signatures plugs in unchanged (duck typing)."""

    class ZenMLTracker:
        name = "zenml_tracker"

        def get_pipeline_run_metadata(self, run_id: UUID) -> dict[str, Any]:
            return {"experiment_tracker_url": Uri("https://tracker.example")}

        def get_step_run_metadata(self, info: Any) -> dict[str, Any]:
            return {"step": info.pipeline_step_name, "pipeline": info.pipeline.name}

    with pipeline_run("p", components=[ZenMLTracker()]):
        add_one(1)
    run = store.list_runs()[0]
    assert run.metadata["zenml_tracker"] == {"experiment_tracker_url": "https://tracker.example"}
    assert store.list_steps(run.id)[0].metadata["zenml_tracker"] == {
        "step": "add_one",
        "pipeline": "p",
    }


def test_metadata_hook_returning_a_non_mapping_is_dropped_visibly(store: InMemoryStore) -> None:
    """A hook that returns a list records a dropped entry, not a crash."""

    class Wrong(StackComponent):
        def get_step_run_metadata(self, info: StepRunInfo) -> Any:
            return ["not", "a", "dict"]

    with pipeline_run("p", components=[Wrong("wrong")]):
        add_one(1)
    step = store.list_steps(store.list_runs()[0].id)[0]
    assert step.status == "completed"
    assert [(d.source, d.key) for d in step.dropped] == [("wrong", "*")]


def test_default_stack_and_per_run_override(store: InMemoryStore) -> None:
    """Registered components serve every run unless a run names its own."""
    default, special = Recorder("default"), Recorder("special")
    zenmeta.register_component(default)
    with pipeline_run("a"):
        add_one(1)
    with pipeline_run("b", components=[special]):
        add_one(1)
    by_pipeline = {r.pipeline_name: r for r in store.list_runs()}
    assert set(by_pipeline["a"].metadata) == {"default"}
    assert set(by_pipeline["b"].metadata) == {"special"}
    zenmeta.unregister_component("default")
    with pipeline_run("c"):
        add_one(1)
    assert zenmeta.Client(store).list_runs(pipeline="c")[0].metadata == {}


def test_step_selects_components_by_name(store: InMemoryStore) -> None:
    """@track_step(components=[...]) uses only the named components of the stack."""
    tracker, other = Recorder("mlflow"), Recorder("other")

    @track_step(components=["mlflow", "absent"])
    def selective() -> None:
        pass

    with pipeline_run("p", components=[tracker, other]):
        selective()
    step = store.list_steps(store.list_runs()[0].id)[0]
    assert set(step.metadata) == {"mlflow"}
    assert not any(hook == "prepare_step_run" for hook, _ in other.calls)
    assert [(f.component, f.hook) for f in step.faults] == [("absent", "select")]


def test_registration_rejects_duplicates_and_non_components() -> None:
    """Two components with one name, or an object with no hooks, are clear errors."""
    zenmeta.register_component(Recorder("same"))
    with pytest.raises(zenmeta.ConfigurationError, match="already registered"):
        zenmeta.register_component(Recorder("same"))
    with pytest.raises(zenmeta.ConfigurationError, match="none of the component hooks"):
        zenmeta.register_component(object())
    with pytest.raises(zenmeta.ConfigurationError, match="share the name"):
        pipeline_run("p", components=[Recorder("x"), Recorder("x")]).__enter__()
    with pytest.raises(zenmeta.ConfigurationError, match="not registered"):
        zenmeta.unregister_component("never")


def test_cleanup_hook_that_accepts_status_is_told_the_outcome(store: InMemoryStore) -> None:
    """A cleanup_pipeline_run with a `status` keyword hears interrupted vs failed."""
    heard: list[tuple[bool, str]] = []

    class Listener(StackComponent):
        def cleanup_pipeline_run(
            self, info: PipelineRunInfo, run_failed: bool, status: str = "?"
        ) -> None:
            heard.append((run_failed, status))

    for error in (None, ValueError("x"), KeyboardInterrupt()):
        expected = pytest.raises(type(error)) if error else contextlib.nullcontext()
        with expected, pipeline_run("p", components=[Listener("listener")]):
            if error is not None:
                raise error
    assert heard == [(False, "completed"), (True, "failed"), (True, "interrupted")]
