"""A recorded ``mlflow_run_id`` links to that run in MLflow's UI, when and only when it can.

The runs are recorded by the real MLflow tracker against a real ``mlflow
server`` started by the test on 127.0.0.1 (and stopped by it), reached
through a tracking URI that carries a user and a password, as teams'
URIs often do: the link must work and must not carry them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Any

import anyio
import httpx
import pytest
from _mlflow_server import mlflow_server as start_mlflow_server

import zenmeta
from zenmeta import Uri, pipeline_run, track_step
from zenmeta._codec import encode_metadata
from zenmeta._records import RunRecord
from zenmeta._ui import dashboard
from zenmeta.integrations.mlflow import MLFlowExperimentTracker
from zenmeta.testing import InMemoryStore, recording

pytestmark = [
    pytest.mark.slow,
    # MLflow 3.17's SQL store on SQLAlchemy 2.1: not ours to fix, nothing else hidden
    pytest.mark.filterwarnings(
        "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
    ),
]

SECRET = "s3cret-pw"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on a free loopback port, for this module; its base URL."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as base:
        yield base


@track_step
def train() -> None:
    pass


def fetch(client: zenmeta.Client, path: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=dashboard.create_app(client))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.get(path)

    return anyio.run(get)


def mlflow_links(html: str) -> list[tuple[str, str]]:
    """(href, text) of every link to MLflow in a page."""
    return re.findall(r'<a class="mlflow" href="([^"]+)"[^>]*>([^<]+)</a>', html)


def test_run_and_step_pages_link_the_mlflow_run_ids_to_the_mlflow_ui(
    mlflow_server: str,
) -> None:
    """Recorded against a real server through a URI with a password: the run's and the
    step's ids are links to their runs' pages there, with no credentials in them."""
    with_password = mlflow_server.replace("http://", f"http://alice:{SECRET}@")
    tracker = MLFlowExperimentTracker(tracking_uri=with_password)
    # Not strict: a loaded machine makes the first call to the server a "slow hook".
    with recording(strict=False) as store, pipeline_run("training", run_name="linked",
                                                        components=[tracker]):  # fmt: skip
        train()
    client = zenmeta.Client(store)
    run = client.get_run("linked")
    parent_id = run.metadata["mlflow"]["mlflow_run_id"]
    experiment = run.metadata["mlflow"]["mlflow_experiment_id"]
    step = client.get_step(run, "train")
    child_id = step.metadata["mlflow"]["mlflow_run_id"]

    page = fetch(client, f"/runs/{run.id}?columns=mlflow.mlflow_run_id")
    parent_page = f"{mlflow_server}/#/experiments/{experiment}/runs/{parent_id}"
    step_link = (f"{mlflow_server}/#/experiments/{experiment}/runs/{child_id}", child_id)
    # The run's facts, its metadata table, then the steps table's chosen column.
    assert mlflow_links(page.text) == [(parent_page, parent_id)] * 2 + [step_link]
    assert SECRET not in page.text and "alice" not in page.text
    assert re.findall(r'<td class="chosen">(.*?)</td>', page.text) == [
        f'<a class="mlflow" href="{step_link[0]}" rel="noopener noreferrer nofollow" '
        f'title="this run in MLflow">{child_id}</a>'
    ]
    step_page = fetch(client, f"/steps/{step.id}")
    assert mlflow_links(step_page.text) == [step_link] * 2
    # The links name runs the server really has, and its UI answers there.
    for run_id in (parent_id, child_id):
        found = httpx.get(f"{mlflow_server}/api/2.0/mlflow/runs/get", params={"run_id": run_id})
        assert found.status_code == 200 and found.json()["run"]["info"]["run_id"] == run_id
    assert httpx.get(parent_page.split("#", 1)[0]).status_code == 200


def test_a_file_tracking_store_gives_no_link(tmp_path: FilePath) -> None:
    """Against a local (sqlite) tracking URI there is no MLflow page to go to: plain ids."""
    tracker = MLFlowExperimentTracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    # Not strict: creating MLflow's tables takes seconds, a "slow hook".
    with recording(strict=False) as store, pipeline_run("training", run_name="local",
                                                        components=[tracker]):  # fmt: skip
        train()
    client = zenmeta.Client(store)
    run = client.get_run("local")
    assert "mlflow_run_url" not in run.metadata["mlflow"]
    page = fetch(client, f"/runs/{run.id}")
    assert mlflow_links(page.text) == [] and run.metadata["mlflow"]["mlflow_run_id"] in page.text


@pytest.mark.parametrize(
    ("values", "linked"),
    [
        ({"mlflow_run_url": Uri("https://mlflow.example/#/experiments/1/runs/abc")}, True),
        ({"mlflow_tracking_uri": Uri("https://mlflow.example/"), "mlflow_experiment_id": "1"},
         True),
        ({"mlflow_run_url": Uri("https://bob:pw@mlflow.example/#/experiments/1/runs/abc")},
         False),
        ({"mlflow_run_url": Uri("javascript:alert(1)//runs/abc")}, False),
        ({"mlflow_run_url": Uri("file:///srv/mlflow/#/experiments/1/runs/abc")}, False),
        ({"mlflow_run_url": Uri("https://mlflow.example/#/experiments/1/runs/other")}, False),
        ({"mlflow_tracking_uri": Uri("sqlite:///m.db"), "mlflow_experiment_id": "1"}, False),
    ],
)  # fmt: skip
def test_only_an_http_page_of_that_very_run_without_credentials_is_linked(
    values: dict[str, Any], linked: bool
) -> None:
    """Records from any store are checked again: no credentials, no other scheme, no
    link that points at some other run."""
    store = InMemoryStore()
    metadata = {"mlflow": encode_metadata({"mlflow_run_id": "abc", **values})[0]}
    run_id = uuid.uuid4()
    store.save_run(
        RunRecord(run_id, "r", "p", None, (), "completed", 1, 2, "h", 1, None, metadata=metadata)
    )
    page = fetch(zenmeta.Client(store), f"/runs/{run_id}")
    links = mlflow_links(page.text)
    if linked:
        assert links == [("https://mlflow.example/#/experiments/1/runs/abc", "abc")] * 2
    else:
        assert links == [] and "pw@" not in "".join(href for href, _ in links)
