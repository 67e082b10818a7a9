"""`runs list` filters and paging, `runs diff`, `runs delete`, `store gc`, `steps find`."""

from __future__ import annotations

import json
import time
from pathlib import Path as FilePath

import pytest
from click.testing import CliRunner

import zenmeta
from zenmeta import log_metadata, pipeline_run, track_step
from zenmeta._ui.cli import cli


@track_step
def train(loss: float) -> None:
    log_metadata({"loss": loss})


@pytest.fixture
def store(tmp_path: FilePath) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    zenmeta.configure(store=url)
    for number in range(5):
        try:
            tags = ["nightly"] if number % 2 else []
            with pipeline_run("train", run_name=f"r{number}", tags=tags):
                log_metadata({"accuracy": 0.5 + number / 10})
                train(float(number))
                if number == 3:
                    raise RuntimeError("boom")
        except RuntimeError:
            pass
        time.sleep(0.002)
    zenmeta.flush()
    return url


def run(store: str, *args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(cli, ["--store", store, *args])
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_runs_list_filters_pages_and_says_how_many_it_shows(store: str) -> None:
    """--where, --tag, --offset, --all, and "showing N of M"."""
    assert "showing 2 of 5" in run(store, "runs", "list", "--limit", "2")
    page = run(store, "runs", "list", "--limit", "2", "--offset", "2")
    assert "showing 3-4 of 5" in page and "r2" in page and "r1" in page and "r4" not in page
    chosen = run(store, "runs", "list", "--where", "user.accuracy >= 0.7", "--tag", "nightly")
    assert "r3" in chosen and "showing 1 of 1" in chosen
    assert "showing 5 of 5" in run(store, "runs", "list", "--all", "--limit", "1")
    assert "r0" not in run(store, "runs", "list", "--since", "2999-01-01")
    assert "position" in run(store, "runs", "list", "--where", "user.accuracy >", ok=False)


def test_runs_diff_prints_tables_markdown_and_json(store: str) -> None:
    """Two runs side by side; Markdown keeps its lines; JSON parses."""
    table = run(store, "runs", "diff", "r1", "r3")
    assert "accuracy" in table and "failed" in table
    markdown = run(store, "runs", "diff", "r1", "r3", "--markdown")
    assert "| `accuracy` | `0.6` | `0.8` | changed |" in markdown.splitlines()
    data = json.loads(run(store, "runs", "diff", "r1", "r3", "--json"))
    assert data["metadata"]["user"]["accuracy"] == {"r1": 0.6, "r3": 0.8}
    assert "two runs" in run(store, "runs", "diff", "r1", ok=False)


def test_runs_delete_asks_and_store_gc_lists_what_goes(store: str) -> None:
    """delete asks unless --yes; gc --dry-run deletes nothing; gc deletes the same runs."""
    assert "r0" in run(store, "runs", "list")
    result = CliRunner().invoke(cli, ["--store", store, "runs", "delete", "r0"], input="n\n")
    assert result.exit_code == 1 and "r0" in run(store, "runs", "list")
    assert "deleted 1 run(s)" in run(store, "runs", "delete", "r0", "--yes")
    dry = run(store, "store", "gc", "--status", "failed", "--dry-run")
    assert "r3" in dry and "1 run(s) would be deleted" in dry and "r3" in run(store, "runs", "list")
    assert "deleted 1 run(s)" in run(store, "store", "gc", "--status", "failed", "--yes")
    assert "r3" not in run(store, "runs", "list")
    assert "30d or 12h" in run(store, "store", "gc", "--older-than", "soon", ok=False)


def test_steps_find_searches_every_run(store: str) -> None:
    """Steps across runs, newest first, by the same filter language."""
    found = run(store, "steps", "find", "--where", "user.loss >= 3")
    assert found.count("train") == 2
    data = json.loads(run(store, "steps", "find", "--where", "user.loss >= 3", "--json"))
    assert [step["metadata"]["user"]["loss"] for step in data] == [4.0, 3.0]


def test_runs_show_summarises_steps_by_name_and_pages_them(tmp_path: FilePath) -> None:
    """A 300-step run: a summary by name and status, then only --steps N of them."""
    url = f"sqlite:///{tmp_path}/big.db"
    zenmeta.configure(store=url)

    @track_step
    def fails() -> None:
        raise ValueError("no")

    with pipeline_run("big", run_name="big"):
        for number in range(300):
            train(float(number))
        with pytest.raises(ValueError):
            fails()
    zenmeta.flush()
    shown = run(url, "runs", "show", "big", "--steps", "5")
    assert "Steps by name" in shown and "300" in shown and "fails" in shown
    assert "showing 5 of 301 steps" in shown
    assert shown.count("Step train") == 5
    assert "Step train" not in run(url, "runs", "show", "big", "--steps", "0")
    summary = zenmeta.Client(url).summarize_steps("big")
    assert [(s.step_name, s.status, s.executions) for s in summary] == [
        ("train", "completed", 300),
        ("fails", "failed", 1),
    ]
    assert len(json.loads(run(url, "runs", "show", "big", "--json"))["steps"]) == 301
