"""The ``where`` language: grammar, typed comparison, and the same answers from every store."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Any

import pytest
from _sqlite import sqlite_file
from conftest import fresh_store_url

import zenmeta
from zenmeta import DType, QueryError, StorageSize, Uri, log_metadata, pipeline_run, track_step
from zenmeta._process import host_name
from zenmeta._records import RunRecord
from zenmeta._store import open_store
from zenmeta.testing import InMemoryStore

BACKENDS = ["memory", "sqlite", "postgresql"]

# name -> (pipeline, tags, user metadata, environment metadata, fails)
RUNS: dict[str, tuple[str, tuple[str, ...], dict[str, Any], dict[str, Any], bool]] = {
    "r1": ("train", ("nightly",), {"accuracy": 0.95, "epochs": 10, "config": {"lr": 0.1}},
           {"git_commit": "abc123", "host": "gpu-1"}, False),
    "r2": ("train", ("nightly", "pinned"),
           {"accuracy": 0.91, "epochs": 20, "config": {"lr": 0.01, "name": "big"}},
           {"git_commit": "abc123", "host": "gpu-2"}, False),
    "r3": ("train", (), {"accuracy": 0.5, "epochs": 10, "size": StorageSize(2048)},
           {"git_commit": "def456", "host": "gpu-1"}, True),
    "r4": ("eval", ("adhoc",), {"accuracy": "n/a", "flag": True, "none": None,
           "uri": Uri("https://example.org/x"), "dtype": DType("float32")},
           {"git_commit": "DEF456"}, False),
    "r5": ("eval", (), {"accuracy": math.nan, "flag": False, "items": [1, 2],
           "size": StorageSize(10)}, {}, False),
    "r6": ("eval", ("exp-1",), {"accuracy": 1, "epochs": 2.5, "note": "100% done_ok"},
           {"git_commit": "abc123"}, False),
}  # fmt: skip


class Environment(zenmeta.StackComponent):
    """Run metadata from a component, as the environment component gives it."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__("environment")
        self.values = values

    def get_pipeline_run_metadata(self, run_id: uuid.UUID) -> dict[str, Any]:
        return dict(self.values)


@track_step
def train(loss: float) -> None:
    log_metadata({"loss": loss})


@track_step
def evaluate() -> None:
    log_metadata({"score": 3})


def _record_runs() -> None:
    for name, (pipeline, tags, user, environment, fails) in RUNS.items():
        components = [Environment(environment)] if environment else []
        try:
            with pipeline_run(pipeline, run_name=name, tags=tags, components=components):
                log_metadata(user)
                train(0.5 if name != "r2" else 2.0)
                evaluate()
                if fails:
                    raise RuntimeError("boom")
        except RuntimeError:
            pass
        time.sleep(0.002)  # distinct start times: newest first is well defined


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: FilePath) -> Iterator[zenmeta.Client]:
    """A store holding ``RUNS``, on each backend."""
    store: Any = InMemoryStore()
    if request.param != "memory":
        store = fresh_store_url(request, request.param, tmp_path)
    zenmeta.configure(store=store, strict=False)
    _record_runs()
    zenmeta.flush()
    yield zenmeta.Client(store)


def names(client: zenmeta.Client, where: str) -> list[str]:
    return sorted(run.name for run in client.list_runs(where=where))


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("environment.git_commit = 'abc123'", ["r1", "r2", "r6"]),
        ("environment.git_commit = 'abc123' and user.accuracy >= 0.92", ["r1", "r6"]),
        ("user.accuracy >= 0.9", ["r1", "r2", "r6"]),  # text, NaN: never numbers
        ("user.accuracy = 1.0", ["r6"]),  # int and float compare as numbers
        ("user.accuracy < 0.6 or user.accuracy = 'n/a'", ["r3", "r4"]),
        ("user.accuracy != 0.95", ["r2", "r3", "r6"]),  # only numbers are compared
        ("not user.accuracy >= 0.9", ["r3", "r4", "r5"]),  # not: the whole term
        ("user.config.lr < 0.05", ["r2"]),
        ("user.config.name exists", ["r2"]),
        ("user.config missing", ["r3", "r4", "r5", "r6"]),
        ("user.size >= 1024", ["r3"]),  # a StorageSize as its bytes
        ("user.flag = true", ["r4"]),
        ("user.flag != true", ["r5"]),
        ("user.flag > false", []),  # booleans are never ordered
        ("user.none = null", ["r4"]),
        ("user.flag != null", ["r4", "r5"]),
        ("user.uri like 'https://%'", ["r4"]),
        ("user.dtype = 'float32'", ["r4"]),
        ("user.items exists and user.items != 1", ["r5"][:0]),  # a list compares as nothing
        ("environment.git_commit like 'def%'", ["r3"]),  # like is case-sensitive
        ("user.note like '100\\% done\\_ok'", ["r6"]),
        ("user.note like '100% done_ok'", ["r6"]),
        ("user.note like '1_0%'", ["r6"]),
        ("user.epochs in (10, 2.5)", ["r1", "r3", "r6"]),
        ("user.epochs not in (10, 2.5)", ["r2"]),
        ("environment.host in ('gpu-1')", ["r1", "r3"]),
        ("pipeline = 'eval' and tag = 'adhoc'", ["r4"]),
        ("tag like 'exp-%'", ["r6"]),
        ("tag in ('pinned', 'adhoc')", ["r2", "r4"]),
        ("not tag = 'nightly'", ["r3", "r4", "r5", "r6"]),
        ("status = 'failed'", ["r3"]),
        ("status != 'failed' and pipeline = 'train'", ["r1", "r2"]),
        ("name in ('r1', 'r5')", ["r1", "r5"]),
        ("name > 'r4'", ["r5", "r6"]),
        ("duration >= 0 and duration exists", ["r1", "r2", "r3", "r4", "r5", "r6"]),
        ("start_time >= '2000-01-01' and start_time < '2999-01-01T00:00:00Z'",
         ["r1", "r2", "r3", "r4", "r5", "r6"]),
        ("start_time < '2000-01-01'", []),
        ("(user.accuracy >= 0.9 or user.flag = true) and not pipeline = 'train'", ["r4", "r6"]),
        ("user.accuracy >= 0.9 or user.flag = true and pipeline = 'train'", ["r1", "r2", "r6"]),
        ("NOT (pipeline = 'train' OR pipeline = 'eval')", []),
        ("user.missing_key = 1 or user.missing_key != 1", []),
    ],
)  # fmt: skip
def test_filters_find_exactly_the_runs_they_describe(
    client: zenmeta.Client, where: str, expected: list[str]
) -> None:
    """Every operator and rule of the language, with hand-checked answers, on each store."""
    assert names(client, where) == expected


def test_filters_combine_with_the_other_filters_limit_and_offset(client: zenmeta.Client) -> None:
    """where, pipeline, limit and offset apply together, newest first."""
    found = client.list_runs(where="user.accuracy >= 0", pipeline="train", limit=2, offset=1)
    assert [run.name for run in found] == ["r2", "r1"]
    assert [run.name for run in client.list_runs(where="pipeline = 'eval'", limit=1)] == ["r6"]


@pytest.mark.parametrize(
    "hostile",
    [
        "'; DROP TABLE zenmeta_runs; --",
        "' OR '1'='1",
        '" OR 1=1 --',
        "%' OR 1=1 --",
        "abc123') OR ('1'='1",
        "\\'",
        "\x00",
    ],
)
def test_hostile_values_are_values_and_match_nothing(client: zenmeta.Client, hostile: str) -> None:
    """Values are bound parameters: injection attempts find nothing and break nothing."""
    quoted = "'" + hostile.replace("'", "''") + "'"
    for where in (
        f"environment.git_commit = {quoted}",
        f"name = {quoted}",
        f"tag like {quoted}",
        f"user.config.name in ({quoted}, 'x')",
    ):
        assert names(client, where) == []
    assert len(client.list_runs()) == len(RUNS)


@pytest.mark.parametrize(
    ("where", "position", "message"),
    [
        ("user.accuracy >", 15, "expected a value"),
        ("accuracy >= 0.9", 0, "unknown field 'accuracy'"),
        ("user.accuracy >= 0.9 and", 24, "expected a field"),
        ("user.accuracy >= 0.9 or or", 24, "expected a field"),
        ("(user.accuracy >= 0.9", 21, "expected ')'"),
        ("user.accuracy ~ 1", 14, "unexpected character"),
        ("user.name = 'open", 12, "unexpected character"),
        ("user.x in (1, 'a')", 0, "one kind"),
        ("user.x like 3", 12, "like takes a text"),
        ("user.x < null", 9, "null is compared"),
        ("start_time > 'yesterday'", 13, "not an ISO time"),
        ("user.x = 1 user.y = 2", 11, "expected 'and', 'or'"),
        ("", 0, "empty"),
    ],
)
def test_syntax_errors_name_the_position(where: str, position: int, message: str) -> None:
    """A filter that does not parse is a QueryError saying what and where, before any read."""
    with pytest.raises(QueryError) as raised:
        zenmeta.Client(InMemoryStore()).list_runs(where=where)
    assert raised.value.position == position
    assert message in str(raised.value) and f"position {position}" in str(raised.value)


def test_steps_are_filtered_within_a_run_and_found_across_runs(client: zenmeta.Client) -> None:
    """list_steps(where=...) and find_steps(where=...) use the same language on steps."""
    run = client.get_run("r2")
    assert [s.name for s in client.list_steps(run, where="user.loss > 1")] == ["train"]
    assert [s.name for s in client.list_steps(run, where="step = 'evaluate'")] == ["evaluate"]
    found = client.find_steps("user.loss > 1 or (step = 'evaluate' and user.score = 3)")
    assert len(found) == 1 + len(RUNS)
    assert found[0].start_time >= found[-1].start_time  # newest first
    assert len(client.find_steps("user.score = 3", limit=2)) == 2
    with pytest.raises(QueryError):
        client.find_steps("tag = 'x'")  # steps have no tags


def test_a_run_maps_its_steps_by_invocation_name(client: zenmeta.Client) -> None:
    """run.steps["train"], as in ZenML, and get_step(run, name)."""
    run = client.get_run("r1")
    assert list(run.steps) == ["train", "evaluate"] and len(run.steps) == 2
    assert run.steps["train"].metadata["user"] == {"loss": 0.5}
    assert client.get_step(run, "evaluate").id == run.steps["evaluate"].id
    assert client.get_step("r1", "train").id == run.steps["train"].id
    with pytest.raises(KeyError):
        run.steps["nope"]
    with pytest.raises(zenmeta.RunNotFoundError):
        client.get_step(run, "nope")


def test_the_client_takes_the_handle_a_with_block_gave(tmp_path: FilePath) -> None:
    """Wherever Client takes a run, the PipelineRun handle works too."""
    zenmeta.configure(store=f"sqlite:///{tmp_path}/h.db")
    with pipeline_run("handle") as handle:
        train(0.1)
    client = zenmeta.Client()
    assert client.get_run(handle).id == handle.id
    assert [s.name for s in client.list_steps(handle)] == ["train"]
    assert client.get_step(handle, "train").metadata["user"]["loss"] == 0.1
    assert client.export_run(handle)["id"] == str(handle.id)


def test_crashed_and_running_are_judged_on_read_inside_filters(tmp_path: FilePath) -> None:
    """A run whose process died reads crashed in a filter too, however it is negated."""
    url = f"sqlite:///{tmp_path}/c.db"
    zenmeta.configure(store=url)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    store = open_store(url)
    now = time.time_ns()
    for name, pid in (("dead", int(dead.stdout)), ("alive", os.getpid())):
        store.save_run(  # type: ignore[attr-defined]
            RunRecord(
                uuid.uuid4(), name, "p", None, (), "running", now, None, host_name(), pid, None
            )
        )
    with pipeline_run("p", run_name="done"):
        pass
    client = zenmeta.Client(url)
    assert names(client, "status = 'crashed'") == ["dead"]
    assert names(client, "status = 'running'") == ["alive"]
    assert names(client, "not status = 'crashed'") == ["alive", "done"]
    assert names(client, "status != 'running'") == ["dead", "done"]
    assert names(client, "status in ('crashed', 'completed')") == ["dead", "done"]
    assert names(client, "not status in ('running')") == ["dead", "done"]
    assert [
        r.name
        for r in client.list_runs(where="status like 'run%' or name = 'done'", limit=1, offset=1)
    ] == ["alive"]


def test_a_filter_reads_the_json_the_store_wrote_in_plain_sql(tmp_path: FilePath) -> None:
    """Metadata documents are queryable with SQLite's JSON functions directly."""
    zenmeta.configure(store=f"sqlite:///{tmp_path}/j.db")
    with pipeline_run("sql"):
        log_metadata({"accuracy": 0.97})
    zenmeta.flush()
    with sqlite_file(tmp_path / "j.db") as connection:
        (value,) = connection.execute(
            "SELECT json_extract(document, '$.accuracy') FROM zenmeta_metadata "
            "WHERE entity_kind = 'run' AND source = 'user'"
        ).fetchone()
    assert value == 0.97


def test_steps_are_summarised_by_name_and_status_on_every_store(client: zenmeta.Client) -> None:
    """The same counts, in order of first start, from memory, SQLite and PostgreSQL."""
    summary = client.summarize_steps("r3")
    assert [(line.step_name, line.status, line.executions) for line in summary] == [
        ("train", "completed", 1),
        ("evaluate", "completed", 1),
    ]
    assert all(line.seconds >= 0 for line in summary)


@pytest.mark.parametrize(
    "where",
    [
        None,
        "user.accuracy >= 0.9",
        "tag = 'nightly' or status = 'failed'",
        "not status = 'crashed'",
    ],
)
def test_counting_runs_agrees_with_listing_them(client: zenmeta.Client, where: str | None) -> None:
    """count_runs (a COUNT where the store can) matches the listed runs, on every store."""
    assert client.count_runs(where=where) == len(client.list_runs(where=where))
    assert client.count_runs(where=where, pipeline="eval") == len(
        client.list_runs(where=where, pipeline="eval")
    )
