"""A tracking URI's password is never printed, logged or recorded: not by MLflow's own
"View run … at: <url>" lines, not by zenmeta's warnings, not in what is stored.

Against a real ``mlflow server`` on 127.0.0.1 (started and stopped here), reached
through ``http://user:password@…`` as teams' URIs often are, and against a port
where nothing listens, so that MLflow's errors (which quote the URL) are seen too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import httpx
import pytest
from _mlflow_server import free_port, mlflow_server

import zenmeta
from zenmeta import pipeline_run, track_step
from zenmeta.testing import recording

mlflow = pytest.importorskip("mlflow")

from zenmeta.integrations.mlflow import MLFlowExperimentTracker  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    # MLflow 3.17's SQL store on SQLAlchemy 2.1: not ours to fix, nothing else hidden
    pytest.mark.filterwarnings(
        "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
    ),
]

SECRET = "pw-0f9c1e"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as base:
        yield base


def _with_password(base: str) -> str:
    return base.replace("http://", f"http://alice:{SECRET}@")


@track_step
def train() -> None:
    # The user's own fluent run inside the step: ending it prints too.
    with mlflow.start_run(run_name="inner"):
        mlflow.log_metric("loss", 0.5)


def _everything_shown(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, client: zenmeta.Client
) -> str:
    """All that was printed, logged, and recorded (every run, exported as JSON)."""
    printed = capfd.readouterr()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    recorded = json.dumps([client.export_run(str(run.id)) for run in client.list_runs()])
    return "\n".join([printed.out, printed.err, logged, recorded])


def test_ending_runs_on_a_server_reached_with_a_password_never_prints_it(
    server: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The pipeline's run, its step's run and the user's run nested in it all end
    FINISHED on the server; nothing printed, logged or recorded holds the password."""
    caplog.set_level(logging.DEBUG)
    tracker = MLFlowExperimentTracker(tracking_uri=_with_password(server))
    # Not strict: a loaded machine makes the first call to the server a "slow hook".
    with recording(strict=False) as store, pipeline_run("secrets", components=[tracker]):
        train()
    shown = _everything_shown(capfd, caplog, zenmeta.Client(store))
    assert SECRET not in shown
    run = zenmeta.Client(store).list_runs()[0]
    parent = run.metadata["mlflow"]["mlflow_run_id"]
    found = httpx.get(f"{server}/api/2.0/mlflow/runs/get", params={"run_id": parent}).json()
    assert found["run"]["info"]["status"] == "FINISHED"
    experiment = found["run"]["info"]["experiment_id"]
    searched = httpx.post(
        f"{server}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment]}
    ).json()
    names = sorted(r["info"]["run_name"] for r in searched["runs"])
    assert names == sorted(["inner", "train", run.name])
    assert {r["info"]["status"] for r in searched["runs"]} == {"FINISHED"}


def test_a_server_that_cannot_be_reached_with_a_password_never_shows_it(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """MLflow's errors quote the URL it was given: zenmeta's warning, the recorded
    fault and the step's ``mlflow_skipped`` reason still hold no password."""
    caplog.set_level(logging.DEBUG)
    nowhere = _with_password(f"http://127.0.0.1:{free_port()}")
    tracker = MLFlowExperimentTracker(tracking_uri=nowhere, request_timeout=2, request_retries=0)

    @track_step
    def plain() -> None:
        pass

    with recording(strict=False) as store, pipeline_run("unreachable", components=[tracker]):
        plain()
    client = zenmeta.Client(store)
    run = client.list_runs()[0]
    assert [fault.component for fault in run.faults] == ["mlflow"]
    assert "mlflow_skipped" in client.list_steps(run)[0].metadata["mlflow"]
    shown = _everything_shown(capfd, caplog, client)
    assert "127.0.0.1" in shown  # the errors are there, and say where
    assert SECRET not in shown


def test_without_credentials_mlflow_still_prints_its_links(
    server: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Only a URI holding credentials silences MLflow's "View run … at" lines,
    and only while the run lasts: the variable is put back after it."""
    before = os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
    tracker = MLFlowExperimentTracker(tracking_uri=server)
    with recording(strict=False), pipeline_run("plain", components=[tracker]):
        train()
    assert f"View run train at: {server}/#/experiments/" in capfd.readouterr().out
    with recording(strict=False), pipeline_run("quiet", components=[tracker]):
        pass
    tracker = MLFlowExperimentTracker(tracking_uri=_with_password(server))
    with recording(strict=False), pipeline_run("quiet", components=[tracker]):
        pass
    assert os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT") == before
