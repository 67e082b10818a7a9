"""MLflow across processes: steps run in workers nest under the pipeline's MLflow run."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import pytest
from _pool_steps import square

import zenmeta
from zenmeta import carried, pipeline_run

mlflow = pytest.importorskip("mlflow")

from zenmeta.integrations.mlflow import MLFlowExperimentTracker  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
    ),
]


@pytest.fixture
def tracking_uri(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    template = tmp_path_factory.getbasetemp() / "mlflow-carrier-template.db"
    if not template.exists():
        mlflow.MlflowClient(f"sqlite:///{template}").search_experiments()
    path = tmp_path / "mlflow.db"
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def test_worker_step_runs_hang_under_the_pipelines_mlflow_run(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spawned workers (MLflow configured by flavor only) get the parent run by carrier."""
    store = f"sqlite:///{tmp_path}/zenmeta.db"
    zenmeta.configure(store=store)
    monkeypatch.setenv("ZENMETA_COMPONENTS", "mlflow")  # the workers' stack: their own tracker
    owner = MLFlowExperimentTracker(tracking_uri=tracking_uri, experiment_name="carried")
    context = multiprocessing.get_context("spawn")
    with pipeline_run("ml", components=[owner]) as run:
        carrier = zenmeta.carry()
        assert carrier.component_state["mlflow"]["tracking_uri"] == tracking_uri
        with context.Pool(2) as pool:
            assert pool.map(carried(square), range(4)) == [0, 1, 4, 9]
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("carried")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "zenmeta.step_run_id" not in r.data.tags]
    assert parent.data.tags["zenmeta.run_id"] == str(run.id)
    children = [r for r in runs if "zenmeta.step_run_id" in r.data.tags]
    assert len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.info.status for r in children} == {"FINISHED"}
    steps = zenmeta.Client(store).list_steps(run.id)
    assert {s.metadata["mlflow"]["mlflow_run_id"] for s in steps} == {
        r.info.run_id for r in children
    }
