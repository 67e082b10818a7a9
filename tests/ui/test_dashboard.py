"""The local dashboard over HTTP: every page, every error path, hostile metadata.

Requests go through httpx's ASGI transport (Starlette's TestClient warns
that it now wants ``httpx2``), against stores filled by real tracked
pipelines or by records saved directly.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from importlib import import_module
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from conftest import fresh_store_url

import zenmeta
from zenmeta import (
    DType,
    Path,
    StackComponent,
    StepRunInfo,
    StorageSize,
    Uri,
    log_metadata,
    pipeline_run,
    track_step,
)
from zenmeta._codec import encode_metadata
from zenmeta._records import RecordedRun, RecordedStep, RunRecord, StepRecord
from zenmeta._store.sql import SQLStore
from zenmeta._ui import dashboard
from zenmeta._ui.cli import ui
from zenmeta._ui.dashboard import render
from zenmeta.testing import InMemoryStore, recording

HOSTILE = "<script>alert('owned')</script>"


# helpers -----------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[InMemoryStore]:
    """The store the pages read and every run of the test goes to: in memory,
    or a real SQLite or PostgreSQL store (typed as the in-memory one, whose
    methods it shares)."""
    if request.param == "memory":
        with recording(strict=False) as memory:
            yield memory
        return
    real = SQLStore(fresh_store_url(request, request.param, tmp_path), durability="batched")
    zenmeta.configure(store=real)
    try:
        yield real  # type: ignore[misc]
    finally:
        real.close()


def fetch(
    app: Any, path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """One request to the app, as a browser on loopback would send it."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8765"
        ) as client:
            return await client.request(method, path, headers=headers)

    return anyio.run(send)


def app_for(store: InMemoryStore) -> Any:
    store.flush()  # records saved directly to a real store are then readable
    return dashboard.create_app(zenmeta.Client(store))


def anchors(html: str) -> list[str]:
    """The href of every link in a page."""
    return re.findall(r'<a [^>]*href="([^"]*)"', html)


def step_rows(html: str) -> list[tuple[int, str]]:
    """(depth, name) of each row of a run page's steps table, in page order."""
    rows = re.findall(
        r'class="step depth-(\d+)".*?class="step-link" href="[^"]+">([^<]+)</a>', html, re.S
    )
    return [(int(depth), name) for depth, name in rows]


def save_run(
    store: InMemoryStore,
    name: str,
    *,
    start_ns: int,
    status: Any = "completed",
    pipeline: str = "p",
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> uuid.UUID:
    run_id = uuid.uuid4()
    encoded = {source: encode_metadata(values)[0] for source, values in (metadata or {}).items()}
    end_ns = None if status == "running" else start_ns + 1_500_000_000
    store.save_run(
        RunRecord(run_id, name, pipeline, None, (), status, start_ns, end_ns, "host", 1, None,
                  metadata=encoded)
    )  # fmt: skip
    return run_id


def save_step(
    store: InMemoryStore,
    run_id: uuid.UUID,
    name: str,
    *,
    start_ns: int,
    parent: uuid.UUID | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> uuid.UUID:
    step_id = uuid.uuid4()
    encoded = {"user": encode_metadata(metadata)[0]} if metadata else {}
    store.save_step(
        StepRecord(step_id, run_id, parent, name, name, "completed", start_ns, start_ns + 1000,
                   metadata=encoded)
    )  # fmt: skip
    return step_id


# a real tracked pipeline ---------------------------------------------------


class Tracker(StackComponent):
    """Like an experiment tracker: links, sizes and types for every step."""

    flavor = "tracker"

    def get_pipeline_run_metadata(self, run_id: uuid.UUID) -> dict[str, Any]:
        return {
            "experiment_url": Uri("https://tracking.example/#/experiments/7"),
            "artifact_root": Path("/srv/artifacts/7"),
        }

    def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, Any]:
        return {
            "run_url": Uri(f"https://tracking.example/runs/{info.pipeline_step_name}"),
            "model_size": StorageSize(1_572_864),
            "weights_dtype": DType("float32"),
        }


class Flaky(StackComponent):
    """A component whose step hook always fails."""

    flavor = "flaky"

    def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, Any]:
        raise RuntimeError("flaky backend is down")


@track_step
def load_data() -> None:
    log_metadata(
        {
            "rows": 150,
            "accuracy": 0.1 + 0.2,
            "loss": math.nan,
            "best": math.inf,
            "worst": -math.inf,
            "params": {"lr": 0.01, "layers": [64, 32]},
            "too_big": "y" * 1_000_000,
        }
    )


@track_step
def train() -> None:
    load_data()
    log_metadata({"epochs": 3})


@track_step
def evaluate() -> None:
    raise ValueError("accuracy below threshold")


@pytest.fixture
def training(store: InMemoryStore) -> RecordedRun:
    """A completed run with nested steps, a failed step, faults and a dropped key."""
    with pipeline_run("training", run_name="nightly-1", components=[Tracker(), Flaky()],
                      tags=["nightly"]):  # fmt: skip
        train()
        with pytest.raises(ValueError):
            evaluate()
    return zenmeta.Client(store).get_run("nightly-1")


@pytest.fixture
def failed_etl(store: InMemoryStore, training: RecordedRun) -> RecordedRun:
    """A later run of another pipeline that failed."""
    with pytest.raises(KeyError), pipeline_run("etl", run_name="etl-1"):
        raise KeyError("missing column")
    return zenmeta.Client(store).get_run("etl-1")


# the runs page -------------------------------------------------------------


def test_runs_page_lists_runs_newest_first_with_status_and_duration(
    store: InMemoryStore, failed_etl: RecordedRun, training: RecordedRun
) -> None:
    """Each run links to its page and shows status, duration and step count."""
    response = fetch(app_for(store), "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    assert html.index("etl-1") < html.index("nightly-1")
    assert f"/runs/{training.id}" in anchors(html) and f"/runs/{failed_etl.id}" in anchors(html)
    assert '<span class="status status-failed">failed</span>' in html
    assert '<span class="status status-completed">completed</span>' in html
    assert "KeyError" in html
    assert re.search(r'<td class="num">\d+(\.\d+)? (µs|ms|s)</td>', html)
    assert 'http-equiv="refresh"' not in html


def test_runs_page_filters_by_pipeline_and_status(
    store: InMemoryStore, failed_etl: RecordedRun
) -> None:
    """The pipeline and status filters each narrow the list; no match says so."""
    app = app_for(store)
    by_pipeline = fetch(app, "/?pipeline=training").text
    assert "nightly-1" in by_pipeline and "etl-1" not in by_pipeline
    assert 'value="training"' in by_pipeline
    by_status = fetch(app, "/runs?status=failed").text
    assert "etl-1" in by_status and "nightly-1" not in by_status
    assert '<option value="failed" selected>' in by_status
    nothing = fetch(app, "/?pipeline=training&status=failed")
    assert nothing.status_code == 200 and "No runs match these filters." in nothing.text


def test_runs_page_paginates_and_keeps_filters(store: InMemoryStore) -> None:
    """50 runs a page, links to older and newer pages, filters carried along."""
    for number in range(120):
        save_run(store, f"run-{number:03d}", start_ns=1_700_000_000_000_000_000 + number)
    app = app_for(store)
    first = fetch(app, "/?pipeline=p").text
    assert first.count('class="run-link"') == 50
    assert "run-119" in first and "run-070" in first and "run-069" not in first
    assert "/?pipeline=p&amp;page=2" in first
    third = fetch(app, "/?pipeline=p&page=3").text
    assert third.count('class="run-link"') == 20 and "run-000" in third
    assert 'rel="next"' not in third and "/?pipeline=p&amp;page=2" in third
    assert fetch(app, "/?pipeline=p&page=4").status_code == 404


def test_pages_refresh_themselves_while_a_run_is_running(store: InMemoryStore) -> None:
    """A running run adds a meta refresh to the runs page and its own page only."""
    running = save_run(store, "live", start_ns=time.time_ns(), status="running")
    done = save_run(store, "done", start_ns=time.time_ns() - 10**9)
    app = app_for(store)
    assert '<meta http-equiv="refresh" content="5">' in fetch(app, "/").text
    live_page = fetch(app, f"/runs/{running}").text
    assert '<meta http-equiv="refresh" content="5">' in live_page and "so far" in live_page
    assert 'http-equiv="refresh"' not in fetch(app, f"/runs/{done}").text
    assert 'http-equiv="refresh"' not in fetch(app, "/?status=completed").text


def test_empty_store_says_how_to_record_a_run(store: InMemoryStore) -> None:
    """With no runs the page explains itself instead of showing an empty table."""
    response = fetch(app_for(store), "/")
    assert response.status_code == 200 and "No runs yet" in response.text


# the run page ---------------------------------------------------------------


def test_run_page_groups_run_metadata_by_component_and_renders_types(
    store: InMemoryStore, training: RecordedRun
) -> None:
    """Run metadata appears under each component; a Uri is a link, a Path code."""
    html = fetch(app_for(store), f"/runs/{training.id}").text
    assert "<h3>tracker" in html
    assert (
        '<a class="uri" href="https://tracking.example/#/experiments/7" '
        'rel="noopener noreferrer nofollow">https://tracking.example/#/experiments/7</a>'
    ) in html
    assert '<code class="path">/srv/artifacts/7</code>' in html
    assert '<span class="tag">nightly</span>' in html
    assert training.host in html


def test_run_page_shows_steps_as_a_tree_with_status_and_errors(
    store: InMemoryStore, training: RecordedRun
) -> None:
    """A step called inside a step is indented under it; a failed step shows its error."""
    html = fetch(app_for(store), f"/runs/{training.id}").text
    assert step_rows(html) == [(0, "train"), (1, "load_data"), (0, "evaluate")]
    assert '<span class="error-type">ValueError</span>: accuracy below threshold' in html
    assert "1\u20133 of 3" in html
    assert html.count("1 component error") == 3


def test_run_page_shows_component_errors_and_dropped_keys(store: InMemoryStore) -> None:
    """Faults and dropped keys recorded on a run are listed plainly."""

    class BrokenAtStart(StackComponent):
        flavor = "broken"

        def get_pipeline_run_metadata(self, run_id: uuid.UUID) -> dict[str, Any]:
            raise ConnectionError("tracking server unreachable")

    with pipeline_run("p", run_name="faulty", components=[BrokenAtStart()]):
        log_metadata({"blob": "z" * 70_000, "kept": 1})
    run = zenmeta.Client(store).get_run("faulty")
    html = fetch(app_for(store), f"/runs/{run.id}").text
    assert "Component errors" in html and "tracking server unreachable" in html
    assert "<code>get_pipeline_run_metadata</code>" in html and "ConnectionError" in html
    assert "Dropped keys" in html
    assert re.search(r'<th scope="row" class="key">blob</th><td class="message">[^<]*limit', html)
    assert '<th scope="row" class="key">kept</th>' in html
    assert "This run recorded no steps." in html


def test_run_page_lists_redacted_values_apart_from_dropped_keys(store: InMemoryStore) -> None:
    """A masked secret is shown as redacted, with its rule, not as a dropped key."""
    with pipeline_run("p", run_name="masked"):
        log_metadata({"db": "postgresql://alice:pw123456@db/app", "kept": 1})
    run = zenmeta.Client(store).get_run("masked")
    html = fetch(app_for(store), f"/runs/{run.id}").text
    assert "Redacted values" in html and "Dropped keys" not in html
    assert re.search(r'class="key">db</th><td class="message">url credentials</td>', html)
    assert "pw123456" not in html
    listing = fetch(app_for(store), "/").text
    assert "1 redacted</span>" in listing and "dropped</span>" not in listing


def test_step_pages_mark_steps_whose_parent_is_on_an_earlier_page(
    store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps are paginated; a child on a later page than its parent says so."""
    monkeypatch.setattr(dashboard, "STEPS_PER_PAGE", 2)
    run_id = save_run(store, "paged", start_ns=10**18)
    root = save_step(store, run_id, "root", start_ns=10**18 + 1)
    save_step(store, run_id, "a", start_ns=10**18 + 2, parent=root)
    save_step(store, run_id, "b", start_ns=10**18 + 3, parent=root)
    save_step(store, run_id, "c", start_ns=10**18 + 4)
    app = app_for(store)
    first = fetch(app, f"/runs/{run_id}").text
    assert step_rows(first) == [(0, "root"), (1, "a")]
    assert "page 1 of 2" in first and f"/runs/{run_id}?page=2" in anchors(first)
    second = fetch(app, f"/runs/{run_id}?page=2").text
    assert step_rows(second) == [(0, "b"), (0, "c")]
    assert "its parent step is on an earlier page" in second
    assert "3\u20134 of 4" in second
    assert fetch(app, f"/runs/{run_id}?page=3").status_code == 404


def test_run_page_accepts_an_upper_case_id(store: InMemoryStore, training: RecordedRun) -> None:
    """Any spelling of the UUID reaches the run."""
    assert fetch(app_for(store), f"/runs/{str(training.id).upper()}").status_code == 200


# the step page --------------------------------------------------------------


def test_step_page_groups_metadata_by_source_and_renders_types(
    store: InMemoryStore, training: RecordedRun
) -> None:
    """A step shows user and component metadata apart, each value by its type."""
    steps = {s.name: s for s in zenmeta.Client(store).list_steps(training)}
    html = fetch(app_for(store), f"/steps/{steps['load_data'].id}").text
    assert "<h3>user" in html and "<h3>tracker" in html
    assert '<span class="size" title="1,572,864 bytes">1.5 MiB</span>' in html
    assert '<span class="badge dtype">float32</span>' in html
    assert 'href="https://tracking.example/runs/load_data"' in html
    assert '<span class="number" title="0.30000000000000004">0.3</span>' in html
    assert '<span class="number">NaN</span>' in html
    assert '<span class="number">Infinity</span>' in html
    assert '<span class="number">-Infinity</span>' in html
    assert '<details class="json"><summary>dict · 2 keys</summary><pre>{' in html
    assert "&#34;layers&#34;: [\n    64," in html
    assert "flaky backend is down" in html
    assert re.search(r'class="key">too_big</th><td class="message">[^<]*65536', html)
    assert f"/runs/{training.id}" in anchors(html)
    assert f"/steps/{steps['train'].id}" in anchors(html)  # called from


def test_step_page_shows_the_error_of_a_failed_step(
    store: InMemoryStore, training: RecordedRun
) -> None:
    """The error type and message of a failed step are on its page."""
    evaluate_step = zenmeta.Client(store).list_steps(training)[-1]
    html = fetch(app_for(store), f"/steps/{evaluate_step.id}").text
    assert '<span class="status status-failed">failed</span>' in html
    assert "<strong>ValueError</strong>" in html and "accuracy below threshold" in html


def test_step_of_a_missing_run_still_renders(store: InMemoryStore) -> None:
    """A step whose run record is gone still shows, saying the run was not found."""
    orphan = save_step(store, uuid.uuid4(), "lonely", start_ns=10**18)
    response = fetch(app_for(store), f"/steps/{orphan}")
    assert response.status_code == 200 and "(not found)" in response.text


# errors and safety ------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/runs/not-a-uuid",
        f"/runs/{uuid.uuid4()}",
        "/runs/" + "a" * 5000,
        "/runs/%00",
        "/runs/{RUN}/extra",
        "/steps/123",
        f"/steps/{uuid.uuid4()}",
        "/static/../pyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/other.css",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/?page=-1",
        "/?page=0",
        "/?page=abc",
        "/?page=1.5",
        "/?page=%EF%BC%92",  # a full-width digit two
        "/?page=99999999999999999999999999",
        "/?page=2",
        "/?status=exploded",
        "/?pipeline=" + "x" * 60_000,
        "/runs/{RUN}?page=-3",
        "/runs/{RUN}?page=9",
        "/runs/{RUN}?page=" + "9" * 10_000,
    ],
)
def test_unknown_ids_and_odd_paths_answer_a_404_page(
    store: InMemoryStore, training: RecordedRun, path: str
) -> None:
    """Never a traceback: a styled 404 page with the security headers."""
    response = fetch(app_for(store), path.replace("{RUN}", str(training.id)))
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == dashboard.CONTENT_SECURITY_POLICY
    assert "<h1>Not found" in response.text and "Traceback" not in response.text


def test_every_response_carries_the_security_headers(
    store: InMemoryStore, training: RecordedRun
) -> None:
    """Pages, the stylesheet, 404 and 405 answers all carry the CSP."""
    app = app_for(store)
    step = zenmeta.Client(store).list_steps(training)[0]
    responses = [
        fetch(app, "/"),
        fetch(app, f"/runs/{training.id}"),
        fetch(app, f"/steps/{step.id}"),
        fetch(app, "/static/dashboard.css"),
        fetch(app, "/missing"),
        fetch(app, "/", method="POST"),
        fetch(app, "/", method="HEAD"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 405, 200]
    for response in responses:
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert responses[3].headers["content-type"].startswith("text/css")
    assert "<h1>Method Not Allowed" in responses[5].text


class ExplodingReader:
    """A store whose every read fails in an unexpected way."""

    url = "exploding://"

    def list_runs(self, query: Any = None) -> list[RecordedRun]:
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    def find_runs(self, ref: str) -> list[RecordedRun]:
        raise zenmeta.StoreError("database is locked")

    def list_steps(self, run_id: uuid.UUID, **page: Any) -> list[RecordedStep]:
        raise RuntimeError("unreachable")

    def get_step(self, step_run_id: uuid.UUID) -> RecordedStep | None:
        raise RuntimeError("unreachable")

    def find_steps(self, where: Any = None, **page: Any) -> list[RecordedStep]:
        raise RuntimeError("unreachable")


def test_an_unexpected_failure_is_a_plain_500_page_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The traceback goes to the log; the page shows neither it nor the message."""
    app = dashboard.create_app(zenmeta.Client(ExplodingReader()))  # type: ignore[arg-type]
    response = fetch(app, "/")
    assert response.status_code == 500
    assert "The dashboard failed" in response.text
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert response.headers["content-security-policy"] == dashboard.CONTENT_SECURITY_POLICY
    assert "hunter2" in caplog.text


def test_a_store_error_is_a_503_page(caplog: pytest.LogCaptureFixture) -> None:
    """A store that cannot be read right now says so, with the security headers."""
    app = dashboard.create_app(zenmeta.Client(ExplodingReader()))  # type: ignore[arg-type]
    response = fetch(app, f"/runs/{uuid.uuid4()}")
    assert response.status_code == 503 and "could not be read" in response.text
    assert "content-security-policy" in response.headers


def test_trusted_hosts_refuse_a_foreign_host_header(store: InMemoryStore) -> None:
    """Bound to loopback, a page reached through DNS rebinding gets nothing."""
    app = dashboard.create_app(zenmeta.Client(store), allowed_hosts=["127.0.0.1", "localhost"])
    assert fetch(app, "/").status_code == 200
    refused = fetch(app, "/", headers={"host": "attacker.example"})
    assert refused.status_code == 400 and "No runs" not in refused.text
    assert "content-security-policy" in refused.headers


def deep(levels: int, leaf: Any) -> Any:
    value = leaf
    for level in range(levels):
        value = {f"level{level}": value}
    return value


def test_hostile_metadata_renders_inert(store: InMemoryStore) -> None:
    """Markup, script URLs, huge and deep values are escaped, shown as text or dropped."""

    class Hostile(StackComponent):
        def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, Any]:
            return {HOSTILE: HOSTILE}

    @track_step(name="<img src=x onerror=alert(1)>")
    def hostile_step() -> None:
        log_metadata(
            {
                "js": Uri("javascript:alert(1)"),
                "js_mixed_case": Uri("JaVaScRiPt:alert(1)"),
                "js_leading_space": Uri(" javascript:alert(1)"),
                "js_tab": Uri("java\tscript:alert(1)"),
                "http_with_tab": Uri("ht\ttp://x.example"),
                "data": Uri("data:text/html,<script>alert(1)</script>"),
                "vbscript": Uri("vbscript:msgbox(1)"),
                "relative": Uri("//evil.example/x"),
                "quoted": Uri('https://ok.example/"onmouseover="alert(1)'),
                "sixty_kb": HOSTILE + "a" * 60_000,
                "one_mb": "b" * 1_000_000,
                "nested": deep(30, HOSTILE),
                "too_deep": deep(40, "x"),
                "surrogate": "a\udc80b",
            }
        )
        raise RuntimeError(HOSTILE)

    with pytest.raises(RuntimeError), pipeline_run(
        HOSTILE, run_name=HOSTILE, tags=[HOSTILE], components=[Hostile(name=HOSTILE)]
    ):  # fmt: skip
        hostile_step()
    run = store.list_runs()[0]
    step = store.list_steps(run.id)[0]
    app = app_for(store)
    pages = [fetch(app, "/"), fetch(app, f"/runs/{run.id}"), fetch(app, f"/steps/{step.id}")]
    for page in pages:
        assert page.status_code == 200
        html = page.text.lower()
        assert "<script" not in html and "<img" not in html and 'onmouseover="' not in html
        for href in anchors(page.text):
            assert href.startswith(("/", "https://ok.example/")), href
        assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in page.text
    step_html = pages[2].text
    assert '<span class="uri-text" title="not a web or file link">javascript:alert(1)' in step_html
    assert step_html.count('class="uri-text"') == 8
    assert 'href="https://ok.example/&#34;onmouseover=&#34;alert(1)"' in step_html
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" + "a" * 60_000 in step_html
    assert f"({len(HOSTILE) + 60_000:,} characters)" in step_html
    assert re.search(r'class="key">one_mb</th><td class="message">[^<]*limit', step_html)
    assert "b" * 1000 not in step_html
    assert re.search(r'class="key">too_deep</th><td class="message">[^<]*nested deeper', step_html)
    assert '<th scope="row" class="key">nested</th><td class="type">dict</td>' in step_html
    assert "a\\udc80b" in step_html  # shown escaped, not a UnicodeEncodeError


def test_a_50000_step_run_renders_within_two_seconds(
    store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only one page of steps is read; the first and the last page are both fast."""
    run_id = save_run(store, "huge", start_ns=10**18)
    metadata = encode_metadata({"loss": 0.25, "batch": 7})[0]
    parent = None
    for number in range(50_000):
        step_id = uuid.uuid4()
        store.save_step(
            StepRecord(step_id, run_id, parent if number % 10 else None, f"step_{number}", "step",
                       "completed", 10**18 + number, 10**18 + number + 500,
                       metadata={"user": metadata})
        )  # fmt: skip
        if number % 10 == 0:
            parent = step_id
    limits: list[int | None] = []
    original = store.list_steps

    def recording_list_steps(
        run: uuid.UUID, *, limit: int | None = None, offset: int = 0, where: Any = None
    ) -> list[RecordedStep]:
        limits.append(limit)
        return original(run, limit=limit, offset=offset, where=where)

    monkeypatch.setattr(store, "list_steps", recording_list_steps)
    app = app_for(store)
    fetch(app, "/")  # compile templates, start the thread pool
    timings = {}
    for page in (1, 500):
        started = time.perf_counter()
        response = fetch(app, f"/runs/{run_id}?page={page}")
        timings[page] = time.perf_counter() - started
        assert response.status_code == 200
        assert "of 50000" in response.text and response.text.count('class="step-link"') == 100
    assert max(timings.values()) < 2.0, timings
    assert "step_49999" in response.text and "page 500 of 500" in response.text
    assert all(limit is not None and limit <= dashboard.STEPS_PER_PAGE + 1 for limit in limits)


# rendering rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        (0.5, "0.5"),
        (0.1 + 0.2, "0.3"),
        (1234567.891234, "1234568"),
        (1e-10, "1e-10"),
        (1.2345678901234e20, "1.23457e+20"),
        (-0.0, "-0.0"),
    ],
)
def test_floats_read_easily_and_non_finite_ones_by_name(value: float, shown: str) -> None:
    """About six significant digits, exact value in the tooltip, NaN and infinities named."""
    assert render.readable_float(value) == shown


def test_values_of_every_type_render_escaped() -> None:
    """Markup in any value type comes out escaped."""
    values: list[Any] = [HOSTILE, Path(HOSTILE), DType(HOSTILE), Uri(HOSTILE), [HOSTILE]]
    values += [{HOSTILE: 1}, (HOSTILE,), {HOSTILE}, "x" * 300 + HOSTILE, HOSTILE + "\n" + HOSTILE]
    for value in values:
        assert "<script" not in render.render_value(value)
    assert render.render_value(True) == '<span class="literal">true</span>'
    assert render.render_value(None) == '<span class="literal">None</span>'
    assert render.render_value({1, 2}).startswith('<details class="json"><summary>set · 2 items')


def test_step_tree_survives_parent_cycles_and_deep_chains() -> None:
    """Corrupt parent links still show each step once; 5000 levels do not recurse."""

    def step(step_id: uuid.UUID, parent: uuid.UUID | None, start: int) -> RecordedStep:
        moment = datetime.fromtimestamp(start, tz=timezone.utc)
        return RecordedStep(step_id, uuid.uuid4(), parent, "s", "s", "completed", moment, moment,
                            None, None, {}, (), ())  # fmt: skip

    a, b = uuid.uuid4(), uuid.uuid4()
    cycle = [step(a, b, 1), step(b, a, 2)]
    assert [row.step.id for row in render.step_tree(cycle)] == [a, b]
    chain: list[RecordedStep] = []
    parent = None
    for number in range(5000):
        chain.append(step(uuid.uuid4(), parent, number))
        parent = chain[-1].id
    rows = render.step_tree(chain)
    assert [row.depth for row in rows] == list(range(5000))
    assert rows[-1].indent == render.MAX_INDENT


# serving and the command ------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """What serve() hands to uvicorn's server (its real bound socket), without serving."""
    import uvicorn

    calls: dict[str, Any] = {}

    def fake_run(server: Any, sockets: list[Any] | None = None) -> None:
        config = server.config
        calls.update(host=config.host, port=config.port, app=config.app, sockets=sockets)
        calls["bound"] = [sock.getsockname() for sock in sockets or []]

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    yield calls


def test_serve_binds_loopback_and_accepts_only_local_host_names(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The default host is loopback, with no warning and a Host check."""
    dashboard.serve(store="memory://serve-test")
    assert served["host"] == "127.0.0.1" and served["port"] == 8765
    err = capsys.readouterr().err
    assert "warning" not in err and "http://127.0.0.1:8765/" in err
    assert fetch(served["app"], "/", headers={"host": "localhost:8765"}).status_code == 200
    assert fetch(served["app"], "/", headers={"host": "rebind.example"}).status_code == 400


def test_serve_warns_when_told_another_host(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Binding beyond loopback works, with a warning that anyone can read the runs."""
    dashboard.serve("0.0.0.0", 0, "memory://serve-test")
    assert served["host"] == "0.0.0.0" and served["bound"][0][0] == "0.0.0.0"
    assert "warning: serving on 0.0.0.0, not on loopback" in capsys.readouterr().err
    name = socket.gethostname()
    assert fetch(served["app"], "/", headers={"host": f"{name}:9000"}).status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
     ("example.com", False)],
)  # fmt: skip
def test_loopback_hosts_are_recognised(host: str, loopback: bool) -> None:
    """Only addresses that stay on this machine count as loopback."""
    assert dashboard.is_loopback(host) is loopback


def test_ui_command_passes_its_options_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """`zenmeta ui --host --port --store` reach serve() unchanged."""
    calls: list[tuple[str, int, str | None]] = []
    monkeypatch.setattr(
        dashboard,
        "serve",
        lambda host, port, store, allow_hosts: calls.append((host, port, store)),
    )
    runner = CliRunner()
    assert runner.invoke(ui, []).exit_code == 0
    result = runner.invoke(ui, ["--host", "0.0.0.0", "--port", "9001", "--store", "memory://x"])
    assert result.exit_code == 0, result.output
    assert calls == [("127.0.0.1", 8765, None), ("0.0.0.0", 9001, "memory://x")]
    assert runner.invoke(ui, ["--port", "70000"]).exit_code == 2
    assert "loopback" in runner.invoke(ui, ["--help"]).output


def test_missing_dashboard_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Starlette, importing the dashboard raises MissingExtraError."""
    for name in [n for n in sys.modules if n == "starlette" or n.startswith("starlette.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.delitem(sys.modules, "zenmeta._ui.dashboard")
    with pytest.raises(zenmeta.MissingExtraError) as raised:
        import_module("zenmeta._ui.dashboard")
    assert (raised.value.library, raised.value.extra) == ("starlette", "dashboard")
    result = CliRunner().invoke(ui, [])
    assert result.exit_code == 1 and "pip install 'zenmeta[dashboard]'" in result.output


def test_importing_zenmeta_and_the_ui_command_loads_no_web_framework() -> None:
    """The web stack is imported only when the dashboard is served."""
    code = (
        "import sys, zenmeta, zenmeta._ui.cli\n"
        "web = {'starlette', 'jinja2', 'uvicorn', 'markupsafe'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in web))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"
