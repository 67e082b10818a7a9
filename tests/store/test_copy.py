"""`zenmeta store copy` and `zenmeta.copy_store`: idempotent, incremental, types kept,
SQLite and PostgreSQL either way."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path as FilePath
from typing import Any

import pytest
from _postgres import PostgresServer
from _same import same as _same
from click.testing import CliRunner
from conftest import fresh_store_url

import zenmeta
from zenmeta import Path, StorageSize, Uri, log_metadata, pipeline_run, track_step
from zenmeta._ui.cli import cli

VALUES: dict[str, Any] = {
    "float": 0.25,
    "big_float": 1e20,
    "nan": math.nan,
    "tuple": (1, "a"),
    "set": {1, 2},
    "uri": Uri("https://models.example/3"),
    "path": Path("/data/x.csv"),
    "size": StorageSize(2048),
    "nested": {"z": 1, "a": [1.5, None, True]},
    "text": "héllo ✓ \U0001f600",
}

PAIRS = [("sqlite", "postgresql"), ("postgresql", "sqlite"), ("sqlite", "sqlite")]


@pytest.fixture(params=PAIRS, ids=lambda pair: f"{pair[0]}-to-{pair[1]}")
def stores(request: pytest.FixtureRequest, tmp_path: FilePath) -> tuple[str, str]:
    """A fresh source and a fresh target store on the backends named by the pair."""
    source_kind, target_kind = request.param
    source = fresh_store_url(request, source_kind, tmp_path / "source")
    if target_kind == "sqlite":
        target = f"sqlite:///{tmp_path}/target/zenmeta.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        target = server.create_database("copy")
    return source, target


@track_step
def train(i: int) -> int:
    log_metadata({"i": i, **VALUES})
    return i


def _exports(url: str) -> list[dict[str, Any]]:
    client = zenmeta.Client(url)
    return [json.loads(json.dumps(client.export_run(str(r.id)))) for r in client.list_runs()]


def _counts(url: str) -> tuple[int, int, int]:
    info = zenmeta.Client(url).store_info()
    return info["runs"], info["steps"], info["metadata_sets"]


def test_copying_twice_gives_the_same_store(stores: tuple[str, str]) -> None:
    """The target reads exactly as the source (ids, statuses, typed values, in
    order); a second copy adds nothing."""
    source, target = stores
    zenmeta.configure(store=source)
    with pipeline_run("training", run_name="one", tags=["a"]):
        log_metadata({"run_level": VALUES["uri"]})
        train(1)
        train(2)
    with pytest.raises(ValueError), pipeline_run("scoring", run_name="two"):
        train(3)
        raise ValueError("bad")
    first = zenmeta.copy_store(source, target)
    assert (first.runs, first.steps) == (2, 3)
    counts = _counts(target)
    assert counts == _counts(source) == (2, 3, first.metadata_sets)
    again = zenmeta.copy_store(source, target)
    assert (again.steps, _counts(target)) == (0, counts)
    assert _exports(target) == _exports(source)
    copied = zenmeta.Client(target).list_steps(zenmeta.Client(target).get_run("one"))
    values = copied[0].metadata["user"]
    assert list(values) == ["i", *VALUES], "keys in recorded order"
    assert _same(dict(values), {"i": 1, **VALUES})


def test_a_run_copied_mid_run_is_completed_by_the_next_copy(stores: tuple[str, str]) -> None:
    """Copied while running, then after it ended: every step and the final status."""
    source, target = stores
    zenmeta.configure(store=source)
    run = zenmeta.start_run("live", run_name="live")
    for i in range(30):
        train(i)
    zenmeta.flush()
    early = zenmeta.copy_store(source, target)
    assert early.steps == 30
    assert zenmeta.Client(target).get_run("live").end_time is None
    for i in range(30, 75):
        train(i)
    run.end()
    later = zenmeta.copy_store(source, target)
    assert (later.runs, later.steps) == (1, 45)
    copied = zenmeta.Client(target).get_run("live")
    assert copied.status == "completed" and copied.step_count == 75
    steps = zenmeta.Client(target).list_steps(copied)
    assert sorted(s.metadata["user"]["i"] for s in steps) == list(range(75))
    assert _exports(target) == _exports(source)


def test_a_stale_source_never_reopens_a_finished_run(
    stores: tuple[str, str], tmp_path: FilePath
) -> None:
    """Copying in an older state of a run (a snapshot taken while it ran) keeps
    the target's finished run as it is."""
    source, target = stores
    snapshot = f"sqlite:///{tmp_path}/snapshot.db"
    zenmeta.configure(store=source)
    run = zenmeta.start_run("live", run_name="live")
    train(0)
    zenmeta.flush()
    zenmeta.copy_store(source, snapshot)
    run.end()
    zenmeta.copy_store(source, target)
    stale = zenmeta.copy_store(snapshot, target)
    assert (stale.runs, stale.steps) == (0, 0)
    finished = zenmeta.Client(target).get_run("live")
    assert finished.status == "completed" and finished.end_time is not None


def test_since_copies_only_the_runs_started_after_it(stores: tuple[str, str]) -> None:
    """--since / since=: older runs stay behind."""
    source, target = stores
    zenmeta.configure(store=source)
    with pipeline_run("old", run_name="old"):
        train(1)
    cut = datetime.now(timezone.utc) + timedelta(milliseconds=5)
    while datetime.now(timezone.utc) < cut:
        pass
    with pipeline_run("new", run_name="new"):
        train(2)
    counts = zenmeta.copy_store(source, target, since=cut)
    assert (counts.runs, counts.steps) == (1, 1)
    assert [r.name for r in zenmeta.Client(target).list_runs()] == ["new"]


def test_the_store_copy_command_takes_paths_and_urls(tmp_path: FilePath) -> None:
    """`zenmeta store copy a.db b.db`: counts as text or JSON, again adds nothing."""
    zenmeta.configure(store=f"sqlite:///{tmp_path}/a.db")
    with pipeline_run("p", run_name="r"):
        train(1)
    runner = CliRunner()
    result = runner.invoke(cli, ["store", "copy", str(tmp_path / "a.db"), str(tmp_path / "b.db")])
    assert result.exit_code == 0, result.output
    assert "copied 1 runs, 1 new steps" in result.output
    again = runner.invoke(
        cli, ["store", "copy", f"sqlite:///{tmp_path}/a.db", str(tmp_path / "b.db"), "--json"]
    )
    assert json.loads(again.output) == {"runs": 1, "steps": 0, "metadata_sets": 0}
    recent = runner.invoke(
        cli,
        ["store", "copy", str(tmp_path / "a.db"), str(tmp_path / "c.db"), "--since", "2999-01-01"],
    )
    assert recent.exit_code == 0 and "copied 0 runs" in recent.output


def test_copy_refuses_memory_stores_and_copying_a_store_onto_itself(tmp_path: FilePath) -> None:
    """A clear StoreError, and one line with exit status 1 from the command."""
    with pytest.raises(zenmeta.StoreError, match="between SQL stores"):
        zenmeta.copy_store("memory://", f"sqlite:///{tmp_path}/a.db")
    with pytest.raises(zenmeta.StoreError, match="same store"):
        zenmeta.copy_store(f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/a.db")
    result = CliRunner().invoke(cli, ["store", "copy", "memory://", str(tmp_path / "b.db")])
    assert result.exit_code == 1 and "between SQL stores" in result.stderr
