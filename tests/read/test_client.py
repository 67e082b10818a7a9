"""The read API: the same answers from the in-memory and the SQLite store."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path as FilePath

import pytest

import zenmeta
from zenmeta import (
    Client,
    DType,
    StorageSize,
    Uri,
    log_metadata,
    pipeline_run,
    track_step,
)
from zenmeta._records import RunList, StepList
from zenmeta._store import open_store
from zenmeta.testing import InMemoryStore


@pytest.fixture(params=["memory", "sqlite"])
def client(request: pytest.FixtureRequest, tmp_path: FilePath) -> Client:
    """A client over the store every run of the test writes to."""
    if request.param == "memory":
        memory = InMemoryStore()
        zenmeta.configure(store=memory)
        return Client(memory)
    url = f"sqlite:///{tmp_path}/zenmeta.db"
    zenmeta.configure(store=url)
    return Client(open_store(url))  # created as a writer would: readers create nothing


@track_step
def train(epochs: int) -> int:
    log_metadata({"epochs": epochs, "rows": 100})
    return epochs


@track_step
def outer() -> int:
    return train(1) + train(2)


class Rows:
    """A component that also logs `rows`, so the key collides with the user's."""

    name = "rows"

    def get_step_run_metadata(self, info: object) -> dict[str, object]:
        return {"rows": 7, "size": StorageSize(2048)}


def test_runs_are_listed_newest_first_and_filtered(client: Client) -> None:
    """Filter by pipeline, status and start time; limit and offset page."""
    with pipeline_run("a", run_name="a1"):
        pass
    time.sleep(0.01)
    middle = datetime.now(timezone.utc)
    with pytest.raises(ValueError), pipeline_run("b", run_name="b1"):
        raise ValueError("no")
    with pipeline_run("a", run_name="a2"):
        pass
    assert [r.name for r in client.list_runs()] == ["a2", "b1", "a1"]
    assert [r.name for r in client.list_runs(pipeline="a")] == ["a2", "a1"]
    assert [r.name for r in client.list_runs(status="failed")] == ["b1"]
    assert [r.name for r in client.list_runs(since=middle)] == ["a2", "b1"]
    assert [r.name for r in client.list_runs(limit=1, offset=1)] == ["b1"]
    assert client.list_runs(status="crashed") == []
    failed = client.get_run("b1")
    assert (failed.error_type, failed.error_message) == ("ValueError", "no")


def test_a_run_is_found_by_id_prefix_or_name(client: Client) -> None:
    """Full id (text or UUID), a unique prefix with or without dashes, or the name."""
    with pipeline_run("p", run_name="named") as run:
        pass
    with pipeline_run("p", run_name="other"):
        pass
    assert client.get_run(run.id).id == run.id
    assert client.get_run(str(run.id)).id == run.id
    assert client.get_run("named").id == run.id
    assert client.get_run(run.id.hex[:28]).id == run.id
    assert client.get_run(str(run.id)[:33]).id == run.id


def test_unknown_and_ambiguous_references_raise_clearly(client: Client) -> None:
    """No match and several matches are RunNotFoundError (a LookupError)."""
    with pipeline_run("p", run_name="same"):
        pass
    with pipeline_run("p", run_name="same"):
        pass
    with pytest.raises(zenmeta.RunNotFoundError, match="no run"):
        client.get_run("missing")
    with pytest.raises(LookupError, match="matches 2 runs"):
        client.get_run("same")
    with pytest.raises(zenmeta.RunNotFoundError):
        client.get_step("not-an-id")


def test_steps_come_in_execution_order_with_their_parents(client: Client) -> None:
    """A step called inside a step records it as its parent."""
    with pipeline_run("p") as run:
        outer()
    steps = client.list_steps(str(run.id))
    assert [s.name for s in steps] == ["outer", "train", "train_2"]
    assert steps[1].parent_step_run_id == steps[0].id == steps[2].parent_step_run_id
    assert steps[0].parent_step_run_id is None
    assert client.get_step(steps[1].id) == steps[1]
    assert client.get_step(str(steps[2].id)).metadata == {"user": {"epochs": 2, "rows": 100}}
    assert [s.name for s in client.list_steps(client.get_run(str(run.id)), limit=1, offset=1)] == [
        "train"
    ]


def test_flat_metadata_qualifies_keys_that_sources_share(client: Client) -> None:
    """A key two sources logged appears once per source; nothing is hidden."""
    with pipeline_run("p", components=[Rows()]) as run:
        train(3)
    step = client.list_steps(run.id)[0]
    assert step.metadata == {
        "user": {"epochs": 3, "rows": 100},
        "rows": {"rows": 7, "size": 2048},
    }
    assert step.flat_metadata == {"epochs": 3, "user.rows": 100, "rows.rows": 7, "size": 2048}
    assert type(step.flat_metadata["size"]) is StorageSize


def test_to_dict_is_json_safe_and_keeps_the_type_names(client: Client) -> None:
    """NaN and infinities become strings, containers lists, ids and times text."""
    values = {
        "nan": math.nan,
        "inf": math.inf,
        "minus_inf": -math.inf,
        "tuple": (1, 2),
        "set": {"b", "a"},
        "uri": Uri("https://x.org"),
        "size": StorageSize(10),
        "dtype": DType("int8"),
        "nested": {"v": [math.nan]},
    }
    with pipeline_run("p", tags=["t"]) as run:
        log_metadata(values)

        @track_step
        def step() -> None:
            log_metadata(values)

        step()
    recorded = client.get_run(str(run.id))
    for exported in (recorded.to_dict(), client.list_steps(recorded)[0].to_dict()):
        text = json.dumps(exported, allow_nan=False)
        back = json.loads(text)
        assert back["metadata"]["user"] == {
            "nan": "NaN",
            "inf": "Infinity",
            "minus_inf": "-Infinity",
            "tuple": [1, 2],
            "set": ["a", "b"],
            "uri": "https://x.org",
            "size": 10,
            "dtype": "int8",
            "nested": {"v": ["NaN"]},
        }
        assert back["metadata_types"]["user"]["uri"] == "Uri"
        assert back["metadata_types"]["user"]["nan"] == "float"
        assert back["metadata_types"]["user"]["tuple"] == "tuple"
        datetime.fromisoformat(back["start_time"])
    assert recorded.to_dict()["id"] == str(run.id)
    assert client.list_steps(recorded)[0].to_dict()["run_id"] == str(run.id)
    assert recorded.to_dict()["tags"] == ["t"]
    assert recorded.to_dict()["step_count"] == 1


def test_html_escapes_everything_and_links_only_safe_uris(client: Client) -> None:
    """Jupyter output: logged text is escaped; javascript: URIs are not links."""
    with pipeline_run("<b>p</b>", run_name="<script>alert(1)</script>") as run:
        log_metadata(
            {
                "<key>": "<img src=x onerror=alert(1)>",
                "good": Uri('https://example.org/?a=1&b="2"'),
                "evil": Uri("javascript:alert(1)"),
                "sneaky": Uri("java\tscript:alert(1)"),
                "file": Uri("file:///tmp/model.pkl"),
                "size": StorageSize(3 * 1024**3),
            }
        )
    html = client.get_run(str(run.id))._repr_html_()
    assert "<script>" not in html and "<img" not in html and "<key>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;key&gt;" in html
    assert 'href="https://example.org/?a=1&amp;b=&quot;2&quot;"' in html
    assert 'href="file:///tmp/model.pkl"' in html
    assert 'href="javascript' not in html and 'href="java\tscript' not in html
    assert html.count("<a ") == 2
    assert "3.0 GiB" in html and 'title="3221225472 bytes"' in html


def test_step_html_shows_its_metadata_and_error(client: Client) -> None:
    """A step renders its status, error and metadata by source."""
    with pytest.raises(RuntimeError), pipeline_run("p") as run:

        @track_step
        def broken() -> None:
            log_metadata({"x": 1})
            raise RuntimeError("<bad>")

        broken()
    html = client.list_steps(run.id)[0]._repr_html_()
    assert "failed" in html and "RuntimeError: &lt;bad&gt;" in html and "<code>x</code>" in html


def test_run_list_is_a_list_that_renders_as_a_table(client: Client) -> None:
    """Client.list_runs returns a list; Jupyter shows it as one table."""
    with pipeline_run("p", run_name="<first>"):
        pass
    runs = client.list_runs()
    assert isinstance(runs, list) and isinstance(runs, RunList) and len(runs) == 1
    html = runs._repr_html_()
    assert html.startswith("<table") and "&lt;first&gt;" in html
    assert "no runs" in RunList()._repr_html_()


def test_step_list_renders_as_a_table_with_escaped_metadata(client: Client) -> None:
    """Client.list_steps returns a list that Jupyter shows as one table."""

    @track_step
    def tagged() -> None:
        log_metadata({"<k>": "<script>x</script>", "link": Uri("https://example.org")})

    with pipeline_run("p") as run:
        tagged()
    steps = client.list_steps(run.id)
    assert isinstance(steps, StepList) and len(steps) == 1
    html = steps._repr_html_()
    assert html.startswith("<table") and "<script>" not in html and "&lt;k&gt;" in html
    assert 'href="https://example.org"' in html
    assert "no steps" in StepList()._repr_html_()


def test_export_run_holds_the_run_and_every_step(client: Client) -> None:
    """One JSON-ready document per run, steps included, for `zenmeta runs export`."""
    with pipeline_run("p") as run:
        train(1)
        train(2)
    exported = client.export_run(str(run.id))
    assert exported["id"] == str(run.id)
    assert [s["name"] for s in exported["steps"]] == ["train", "train_2"]
    json.dumps(exported, allow_nan=False)


def test_store_info_reports_what_the_store_holds(client: Client) -> None:
    """Counts for every store; SQLite adds its file, size and schema version."""
    with pipeline_run("p"):
        train(1)
    info = client.store_info()
    assert info["runs"] == 1 and info["steps"] == 1
    if client.url.startswith("sqlite"):
        assert info["schema_version"] == 3 and info["path"].endswith("zenmeta.db")
        assert info["size_bytes"] > 0
