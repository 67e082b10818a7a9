"""The MLflow tracker against a real MLflow tracking store in a temporary folder."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import zenmeta
from zenmeta import ContextThreadPoolExecutor, Uri, pipeline_run, track_step
from zenmeta.testing import InMemoryStore, recording

mlflow = pytest.importorskip("mlflow")

from zenmeta.integrations import _mlflow_environment  # noqa: E402
from zenmeta.integrations.mlflow import (  # noqa: E402
    MLFlowExperimentTracker,
    _run_url,
    local_tracking_uri,
)

PARENT = "mlflow.parentRunId"

pytestmark = pytest.mark.filterwarnings(
    # MLflow 3.17's SQL store on SQLAlchemy 2.1: not ours to fix, nothing else hidden
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)


@pytest.fixture(scope="session")
def _empty_tracking_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MLflow takes ~2 s to create its tables: do it once, copy the file per test."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, _empty_tracking_db: Path) -> str:
    path = tmp_path / "mlflow.db"
    shutil.copy(_empty_tracking_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def client(tracking_uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def _mlflow_steps(store: InMemoryStore) -> dict[str, dict[str, object]]:
    run = store.list_runs()[0]
    return {step.name: dict(step.metadata["mlflow"]) for step in store.list_steps(run.id)}


def test_one_run_of_three_steps_makes_a_parent_and_three_child_runs(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """Each step is a child of the parent run, named after it, holding its own metrics."""

    @track_step
    def load() -> int:
        mlflow.log_metric("rows", 100)
        return 100

    @track_step
    def train(rows: int) -> float:
        mlflow.log_metric("loss", 0.25)
        return 0.25

    @track_step
    def evaluate(loss: float) -> float:
        mlflow.log_metric("accuracy", 0.9)
        return 0.9

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with recording() as store, pipeline_run("training", components=[tracker]) as run:
        evaluate(train(load()))

    recorded = store.list_runs()[0].metadata["mlflow"]
    experiment = client.get_experiment_by_name("training")
    assert recorded["mlflow_experiment_id"] == experiment.experiment_id
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if PARENT not in r.data.tags]
    assert len(runs) == 4 and len(parents) == 1
    parent = parents[0]
    assert recorded["mlflow_run_id"] == parent.info.run_id
    assert parent.data.tags["zenmeta.run_id"] == str(run.id)
    assert parent.info.run_name == run.name and parent.info.status == "FINISHED"
    assert recorded["mlflow_tracking_uri"] == tracking_uri
    assert isinstance(recorded["mlflow_tracking_uri"], Uri)
    steps = _mlflow_steps(store)
    expected = {"load": {"rows": 100.0}, "train": {"loss": 0.25}, "evaluate": {"accuracy": 0.9}}
    for name, metrics in expected.items():
        child = client.get_run(str(steps[name]["mlflow_run_id"]))
        assert child.info.run_name == name and child.info.status == "FINISHED"
        assert child.data.tags[PARENT] == parent.info.run_id
        assert child.data.metrics == metrics
        assert steps[name]["mlflow_experiment_id"] == experiment.experiment_id
    assert mlflow.active_run() is None


def test_a_failing_step_fails_its_run_and_the_parent_and_leaves_none_active(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """The step's child run and the parent end FAILED; no run stays active."""

    @track_step
    def fine() -> None:
        mlflow.log_metric("ok", 1)

    @track_step
    def broken() -> None:
        mlflow.log_metric("before", 1)
        raise ValueError("bad batch")

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with (
        recording() as store,
        pytest.raises(ValueError, match="bad batch"),
        pipeline_run("failing", components=[tracker]),
    ):
        fine()
        broken()

    steps = _mlflow_steps(store)
    assert client.get_run(str(steps["fine"]["mlflow_run_id"])).info.status == "FINISHED"
    failed = client.get_run(str(steps["broken"]["mlflow_run_id"]))
    assert failed.info.status == "FAILED" and failed.data.metrics == {"before": 1.0}
    parent = client.get_run(str(store.list_runs()[0].metadata["mlflow"]["mlflow_run_id"]))
    assert parent.info.status == "FAILED"
    assert mlflow.active_run() is None
    assert _mlflow_environment.holders() == 0


def test_three_runs_with_one_name_make_three_parent_runs(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """Parent runs are remembered by id, never looked up again by name."""

    @track_step
    def step() -> None:
        mlflow.log_metric("x", 1)

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri, experiment_name="shared")
    with recording() as store:
        for _ in range(3):
            with pipeline_run("same", run_name="same-name", components=[tracker]):
                step()

    experiment = client.get_experiment_by_name("shared")
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.info.run_id for r in runs if PARENT not in r.data.tags}
    recorded = {r.metadata["mlflow"]["mlflow_run_id"] for r in store.list_runs()}
    assert len(parents) == 3 and parents == recorded
    assert sorted(r.data.tags[PARENT] for r in runs if PARENT in r.data.tags) == sorted(parents)


def test_steps_in_context_threads_log_into_their_own_runs(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """MLflow's per-thread active run follows the step into the worker thread."""

    @track_step
    def square(value: int) -> int:
        time.sleep(0.01)  # keep several steps in flight at once
        mlflow.log_metric("value", value)
        return value * value

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with (
        recording() as store,
        pipeline_run("threads", components=[tracker]),
        ContextThreadPoolExecutor(max_workers=3) as pool,
    ):
        assert list(pool.map(square, range(6))) == [0, 1, 4, 9, 16, 25]

    run = store.list_runs()[0]
    seen = []
    for step in store.list_steps(run.id):
        child = client.get_run(str(step.metadata["mlflow"]["mlflow_run_id"]))
        seen.append(child.data.metrics["value"])
        assert child.info.run_name == step.name
    assert sorted(seen) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert mlflow.active_run() is None


def test_concurrent_async_steps_log_into_their_own_runs(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """Interleaved tasks on one event loop never log into each other's run."""
    started = 0
    all_started = asyncio.Event()

    @track_step
    async def score(value: int) -> int:
        nonlocal started
        started += 1
        if started == 4:
            all_started.set()
        await all_started.wait()  # every step's run exists before any logs
        mlflow.log_metric("first", value)
        await asyncio.sleep(0)
        mlflow.log_metric("second", value)
        return value

    async def main() -> list[int]:
        return list(await asyncio.gather(*(score(v) for v in range(4))))

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with recording() as store, pipeline_run("tasks", components=[tracker]):
        assert asyncio.run(main()) == [0, 1, 2, 3]

    run = store.list_runs()[0]
    for step in store.list_steps(run.id):
        metrics = client.get_run(str(step.metadata["mlflow"]["mlflow_run_id"])).data.metrics
        assert metrics["first"] == metrics["second"]
        assert set(metrics) == {"first", "second"}
    assert mlflow.active_run() is None


def test_a_step_inside_a_step_nests_under_the_outer_steps_run(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """The MLflow tree follows the step tree."""

    @track_step
    def inner() -> None:
        mlflow.log_metric("inner", 1)

    @track_step
    def outer() -> None:
        inner()
        mlflow.log_metric("outer", 1)

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with recording() as store, pipeline_run("nested", components=[tracker]):
        outer()

    steps = _mlflow_steps(store)
    inner_run = client.get_run(str(steps["inner"]["mlflow_run_id"]))
    outer_run = client.get_run(str(steps["outer"]["mlflow_run_id"]))
    assert inner_run.data.tags[PARENT] == outer_run.info.run_id
    assert inner_run.data.metrics == {"inner": 1.0}
    assert outer_run.data.metrics == {"outer": 1.0}


def test_a_generator_step_run_ends_with_the_iteration_or_with_the_pipeline_run(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """An exhausted generator's run ends FINISHED; an abandoned one ends KILLED."""

    @track_step
    def batches(count: int) -> Iterator[int]:
        for index in range(count):
            mlflow.log_metric("batch", index, step=index)
            yield index

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with recording(strict=False), pipeline_run("stream", components=[tracker]):
        assert list(batches(3)) == [0, 1, 2]
        abandoned = batches(5)
        next(abandoned)

    experiment = client.get_experiment_by_name("stream")
    children = {
        r.info.run_name: r
        for r in client.search_runs([experiment.experiment_id])
        if PARENT in r.data.tags
    }
    assert children["batches"].info.status == "FINISHED"
    assert children["batches"].data.metrics == {"batch": 2.0}
    assert children["batches_2"].info.status == "KILLED"
    assert mlflow.active_run() is None
    abandoned.close()


def test_a_nested_pipeline_run_nests_its_parent_mlflow_run(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """A run opened inside a run becomes a child of the outer run's MLflow run."""
    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri, experiment_name="nesting")
    with (
        recording() as store,
        pipeline_run("outer", components=[tracker]) as outer,
        pipeline_run("inner", components=[tracker]) as inner,
    ):
        pass

    ids = {r.id: r.metadata["mlflow"]["mlflow_run_id"] for r in store.list_runs()}
    inner_run = client.get_run(str(ids[inner.id]))
    assert inner_run.data.tags[PARENT] == ids[outer.id]
    assert client.get_run(str(ids[outer.id])).info.status == "FINISHED"


def test_an_experiment_created_concurrently_is_used_not_an_error(
    tracking_uri: str, client: mlflow.MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Losing the race to create the experiment just means using the winner's."""
    winner = client.create_experiment("raced")
    lookup = mlflow.MlflowClient.get_experiment_by_name
    calls = []

    def late_lookup(self: mlflow.MlflowClient, name: str) -> object:
        calls.append(name)
        return None if len(calls) == 1 else lookup(self, name)  # created after our look

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", late_lookup)
    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with recording() as store, pipeline_run("raced", components=[tracker]):
        pass
    assert store.list_runs()[0].metadata["mlflow"]["mlflow_experiment_id"] == winner
    assert calls == ["raced", "raced"]


def test_another_components_failure_never_leaves_an_mlflow_run_open(
    tracking_uri: str, client: mlflow.MlflowClient, store: InMemoryStore
) -> None:
    """A component raising in every hook does not keep MLflow's runs open."""

    class Broken(zenmeta.StackComponent):
        flavor = "broken"

        def prepare_step_run(self, info: zenmeta.StepRunInfo) -> None:
            raise RuntimeError("prepare")

        def cleanup_step_run(self, info: zenmeta.StepRunInfo, step_failed: bool) -> None:
            raise RuntimeError("cleanup")

        def cleanup_pipeline_run(self, info: zenmeta.PipelineRunInfo, run_failed: bool) -> None:
            raise RuntimeError("cleanup run")

    @track_step
    def step() -> str:
        return "done"

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with pipeline_run("mixed", components=[Broken(), tracker]):
        assert step() == "done"

    experiment = client.get_experiment_by_name("mixed")
    statuses = [r.info.status for r in client.search_runs([experiment.experiment_id])]
    assert statuses == ["FINISHED", "FINISHED"]
    assert mlflow.active_run() is None


def test_credentials_and_tracking_uri_are_restored_after_the_run(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings apply inside the run only; no secret is left in the environment."""
    users_uri = f"sqlite:///{tmp_path / 'users.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", users_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    seen: dict[str, str | None] = {}

    @track_step
    def step() -> None:
        seen["uri"] = mlflow.get_tracking_uri()
        seen["token"] = os.environ.get("MLFLOW_TRACKING_TOKEN")

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri, tracking_token="s3cret")
    with recording(), pipeline_run("restore", components=[tracker]):
        step()

    assert seen == {"uri": tracking_uri, "token": "s3cret"}
    assert "MLFLOW_TRACKING_TOKEN" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert os.environ["MLFLOW_TRACKING_URI"] == users_uri
    assert mlflow.get_tracking_uri() == users_uri


def test_an_unreachable_server_never_stops_the_steps(zenmeta_log: pytest.LogCaptureFixture) -> None:
    """Steps run and return, the run records the fault and warns once (not per step),
    each step says why MLflow was skipped, and the run ends at once."""
    tracker = MLFlowExperimentTracker(tracking_uri=f"http://127.0.0.1:{_closed_port()}")

    @track_step
    def step(value: int) -> int:
        return value + 1

    started = time.perf_counter()
    with recording(strict=False) as store, pipeline_run("offline", components=[tracker]):
        assert [step(v) for v in range(3)] == [1, 2, 3]
    assert time.perf_counter() - started < 5

    run = store.list_runs()[0]
    assert run.status == "completed"
    assert [(f.component, f.hook) for f in run.faults] == [("mlflow", "prepare_pipeline_run")]
    for recorded in store.list_steps(run.id):
        assert recorded.faults == ()
        assert "failed earlier in this run" in recorded.metadata["mlflow"]["mlflow_skipped"]
    warnings = [r.getMessage() for r in zenmeta_log.records if r.name == "zenmeta"]
    assert len(warnings) == 1 and "component 'mlflow' failed" in warnings[0]
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert _mlflow_environment.holders() == 0


def test_a_silent_server_costs_one_bounded_wait_per_run(silent_server: str) -> None:
    """A server that never answers costs ``request_timeout`` once, not per step."""
    tracker = MLFlowExperimentTracker(
        tracking_uri=silent_server, request_timeout=1, request_retries=0
    )

    @track_step
    def step() -> str:
        return "ran"

    started = time.perf_counter()
    with recording(strict=False) as store, pipeline_run("silent", components=[tracker]):
        assert [step() for _ in range(5)] == ["ran"] * 5
    elapsed = time.perf_counter() - started
    assert 0.9 < elapsed < 3
    assert store.list_runs()[0].faults[0].hook == "prepare_pipeline_run"


def test_the_default_tracking_store_sits_beside_zenmetas_store(tmp_path: Path) -> None:
    """Without a URI anywhere, MLflow data goes to a SQLite file next to zenmeta's."""
    zenmeta.configure(store=f"sqlite:///{tmp_path / 'data' / 'zenmeta.db'}")
    assert local_tracking_uri() == f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"
    zenmeta.configure(store="memory://")
    assert local_tracking_uri() == f"sqlite:///{tmp_path / '.zenmeta' / 'mlflow.db'}"
    assert MLFlowExperimentTracker().tracking_uri() == local_tracking_uri()


def test_a_run_page_link_carries_no_credentials() -> None:
    """The deep link to an http server's run page drops user and password."""
    link = _run_url("https://bob:pw@mlflow.example.com:5000/", "3", "abc")
    assert link == "https://mlflow.example.com:5000/#/experiments/3/runs/abc"
    assert isinstance(link, Uri)


def test_without_mlflow_the_component_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constructing the tracker without MLflow says which extra to install."""
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(zenmeta.MissingExtraError, match=r"zenmeta\[mlflow\]") as caught:
        MLFlowExperimentTracker()
    assert caught.value.extra == "mlflow"


def test_importing_the_integration_does_not_import_mlflow() -> None:
    """MLflow is loaded by the component's hooks only."""
    code = (
        "import sys, zenmeta, zenmeta.integrations.mlflow, zenmeta.integrations.environment\n"
        "zenmeta.integrations.mlflow.MLFlowExperimentTracker()\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_interrupted_run_ends_its_parent_killed(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """KeyboardInterrupt inside a run ends the parent MLflow run KILLED."""
    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with (
        recording() as store,
        pytest.raises(KeyboardInterrupt),
        pipeline_run("interrupted", components=[tracker]),
    ):
        raise KeyboardInterrupt
    parent = client.get_run(str(store.list_runs()[0].metadata["mlflow"]["mlflow_run_id"]))
    assert parent.info.status == "KILLED"
    assert mlflow.active_run() is None


def test_mlflow_calls_between_steps_log_to_the_parent_run(
    tracking_uri: str, client: mlflow.MlflowClient
) -> None:
    """`mlflow.log_param` inside the run but outside any step lands in the parent run:
    no stray run in the Default experiment, nothing left RUNNING."""

    @track_step
    def train() -> None:
        mlflow.log_metric("loss", 0.5)

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with recording() as store, pipeline_run("between", components=[tracker]):
        mlflow.log_param("before", "steps")
        train()
        mlflow.log_param("after", "steps")
    parent_id = store.list_runs()[0].metadata["mlflow"]["mlflow_run_id"]
    parent = client.get_run(parent_id)
    assert parent.data.params == {"before": "steps", "after": "steps"}
    assert parent.info.status == "FINISHED"
    every = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], run_view_type=3
    )
    assert len(every) == 2  # the parent and the step's run, nothing in Default
    assert {r.info.status for r in every} == {"FINISHED"}
    assert mlflow.active_run() is None


def test_a_step_that_starts_its_own_mlflow_run_nests_under_the_steps_run(
    tracking_uri: str, client: mlflow.MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`with mlflow.start_run():` inside a step nests under the step's run, in its experiment."""

    @track_step
    def tune() -> str:
        with mlflow.start_run(run_name="trial") as trial:
            mlflow.log_metric("score", 0.75)
        return str(trial.info.run_id)

    tracker = MLFlowExperimentTracker(tracking_uri=tracking_uri)
    with recording() as store, pipeline_run("tuning", components=[tracker]) as run:
        trial_id = tune()
        with mlflow.start_run(run_name="between") as between:  # under the parent run
            mlflow.log_metric("extra", 1.0)
    step_id = store.list_steps(run.id)[0].metadata["mlflow"]["mlflow_run_id"]
    parent_id = store.list_runs()[0].metadata["mlflow"]["mlflow_run_id"]
    trial = client.get_run(trial_id)
    assert trial.data.tags[PARENT] == step_id and trial.data.metrics == {"score": 0.75}
    assert trial.info.experiment_id == client.get_run(step_id).info.experiment_id
    assert trial.info.status == "FINISHED"
    assert client.get_run(between.info.run_id).data.tags[PARENT] == parent_id
    assert mlflow.active_run() is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    with mlflow.start_run() as outside:  # outside zenmeta's runs: MLflow's own behaviour
        assert PARENT not in client.get_run(outside.info.run_id).data.tags


def test_a_plain_store_path_puts_the_tracking_store_beside_it(tmp_path: Path) -> None:
    """`configure(store="data/runs.db")` (a plain path) keeps MLflow's file beside it."""
    zenmeta.configure(store=str(tmp_path / "data" / "runs.db"))
    assert local_tracking_uri() == f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"


_TERMINATED_WITH_MLFLOW = """
import sys, time, zenmeta
from zenmeta.integrations.mlflow import MLFlowExperimentTracker

tracker = MLFlowExperimentTracker(tracking_uri=sys.argv[1])
with zenmeta.pipeline_run("served", run_name="served", components=[tracker]):
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_sigterm_ends_the_mlflow_parent_run_killed(
    tracking_uri: str, client: mlflow.MlflowClient, tmp_path: Path
) -> None:
    """`kill` mid-run: zenmeta's run reads `interrupted`, MLflow's parent run `KILLED`."""
    import signal
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/runs.db"
    env = {**os.environ, "ZENMETA_STORE": url}
    with subprocess.Popen(
        [sys.executable, "-c", _TERMINATED_WITH_MLFLOW, tracking_uri],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=120) == 143
    assert zenmeta.Client(url).get_run("served").status == "interrupted"
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and {run.info.status for run in runs} == {"KILLED"}
