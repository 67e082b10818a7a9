"""Screens group the executions of one task, and say which steps came late."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path as FilePath

import anyio
import httpx
from click.testing import CliRunner

import zenmeta
from zenmeta import _process
from zenmeta._records import COMPLETED, StepRecord
from zenmeta._store import open_store
from zenmeta._ui import dashboard
from zenmeta._ui.cli import cli

_CUT_SHORT = """
import sys, time, uuid
from zenmeta import _process
from zenmeta._records import StepRecord
from zenmeta._store import open_store
now = time.time_ns()
open_store(sys.argv[1]).save_step_started(StepRecord(uuid.uuid4(), uuid.UUID(hex=sys.argv[2]),
    None, "train", "train", "running", now, now, process_id=_process.PROCESS_ID,
    task_key="train-key", attempt=0))
"""


def _retried_run(tmp_path: FilePath) -> tuple[str, str]:
    """A run whose task ran twice: attempt 0 in a process that exited mid-step
    (crashed), attempt 1 finished after the run had ended (late)."""
    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)
    with zenmeta.pipeline_run("spread") as run:
        subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_CUT_SHORT), url, run.id.hex],
            check=True, timeout=120,
        )  # fmt: skip
    now = time.time_ns()
    store = open_store(url)
    store.save_step(
        StepRecord(uuid.uuid4(), run.id, None, "train_2", "train", COMPLETED, now - 1000, now,
                   process_id=_process.PROCESS_ID, task_key="train-key", attempt=1)
    )  # fmt: skip
    store.flush()
    return url, str(run.id)


def test_runs_show_groups_the_executions_of_a_task_and_flags_late_steps(
    tmp_path: FilePath,
) -> None:
    """One task run twice reads as one line with its crash; the late step says so."""
    url, run_id = _retried_run(tmp_path)
    result = CliRunner().invoke(cli, ["--store", url, "runs", "show", run_id])
    assert result.exit_code == 0, result.output
    assert "Tasks run more than once" in result.output
    assert "train \u00d72 (1 crashed)" in result.output
    assert "completed late" in result.output
    assert zenmeta.Client(url).get_run(run_id).status == COMPLETED


def test_the_dashboards_run_page_groups_the_executions_of_a_task(tmp_path: FilePath) -> None:
    """The run page lists the task with its executions; each step row says its attempt."""
    url, run_id = _retried_run(tmp_path)
    app = dashboard.create_app(zenmeta.Client(url))

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as web:
            return await web.get(f"/runs/{run_id}")

    page = anyio.run(send)
    assert page.status_code == 200
    assert "train \u00d72 (1 crashed)" in page.text and "train-key" in page.text
    assert "attempt 1" in page.text and ">late<" in page.text
