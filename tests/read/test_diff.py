"""Diffs of runs: fields, metadata by source, packages, steps — differences only by default."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import zenmeta
from zenmeta import log_metadata, pipeline_run, track_step
from zenmeta._read.diff import MISSING
from zenmeta.testing import InMemoryStore


class Environment(zenmeta.StackComponent):
    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__("environment")
        self.values = values

    def get_pipeline_run_metadata(self, run_id: uuid.UUID) -> dict[str, Any]:
        return self.values


@track_step
def load() -> None:
    pass


@track_step
def train() -> None:
    raise RuntimeError("diverged")


def _run(name: str, environment: dict[str, Any], accuracy: float, *, trains: bool) -> None:
    try:
        with pipeline_run("p", run_name=name, components=[Environment(environment)]):
            log_metadata({"accuracy": accuracy, "seed": 1})
            load()
            if trains:
                train()
    except RuntimeError:
        pass
    time.sleep(0.002)


def _store() -> InMemoryStore:
    store = InMemoryStore()
    zenmeta.configure(store=store)
    base = ["numpy==1.26.4", "rich==13.7.1", "six==1.16.0"]
    _run("good", {"git_commit": "abc", "installed_packages": base}, 0.93, trains=False)
    changed = ["numpy==2.0.1", "rich==13.7.1", "torch==2.3.0"]
    _run("bad", {"git_commit": "def", "installed_packages": changed}, 0.41, trains=True)
    return store


def test_two_runs_differ_in_packages_commit_metadata_status_and_steps() -> None:
    """Only what differs, grouped by source; packages one by one."""
    diff = zenmeta.Client(_store()).diff_runs("good", "bad")
    assert diff.labels == ["good", "bad"]
    assert diff.fields == {"status": ("completed", "failed"), "error_type": (None, "RuntimeError")}
    environment = diff.metadata["environment"]
    assert environment["git_commit"] == ("abc", "def")
    assert environment["installed_packages.numpy"] == ("1.26.4", "2.0.1")
    assert environment["installed_packages.six"] == ("1.16.0", MISSING)
    assert environment["installed_packages.torch"] == (MISSING, "2.3.0")
    assert "installed_packages.rich" not in environment
    assert diff.metadata["user"] == {"accuracy": (0.93, 0.41)}  # seed is the same
    assert diff.steps == {"train": (MISSING, "failed")}


def test_markdown_and_json_say_added_removed_and_changed() -> None:
    """Markdown fit for a pull request; JSON keyed by run, leaving out what a run lacks."""
    diff = zenmeta.Client(_store()).diff_runs("good", "bad")
    markdown = diff.to_markdown()
    assert "| `installed_packages.torch` | — | `2.3.0` | added |" in markdown
    assert "| `installed_packages.six` | `1.16.0` | — | removed |" in markdown
    assert "| `git_commit` | `abc` | `def` | changed |" in markdown
    exported = json.loads(json.dumps(diff.to_dict(), allow_nan=False))
    assert exported["metadata"]["environment"]["installed_packages.torch"] == {"bad": "2.3.0"}
    assert [run["label"] for run in exported["runs"]] == ["good", "bad"]


def test_everything_keeps_equal_values_and_any_number_of_runs_compare() -> None:
    """--all shows equal values too; three runs (two of one name) line up side by side."""
    store = _store()
    _run("good", {"git_commit": "abc", "installed_packages": ["numpy==1.26.4"]}, 0.93, trains=False)
    client = zenmeta.Client(store)
    runs = client.list_runs()
    diff = client.diff_runs(*runs, everything=True)
    assert len(diff.labels) == 3 and diff.labels[0].startswith("good (")
    assert diff.metadata["user"]["seed"] == (1, 1, 1)
    assert client.diff_runs(runs[0], runs[2]).to_markdown().count("\n") > 3
