"""The dashboard's chosen metadata columns and its chart of one value over the runs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Any

import anyio
import httpx
import pytest
from conftest import fresh_store_url

import zenmeta
from zenmeta import StorageSize, Uri, log_metadata, pipeline_run, track_step
from zenmeta._store.sql import SQLStore
from zenmeta._ui import dashboard
from zenmeta.testing import InMemoryStore

HOSTILE = "<script>alert(1)</script>"


@track_step
def train(rows: int) -> None:
    log_metadata({"rows": rows, "checkpoint": StorageSize(rows * 1024)})


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path: FilePath) -> Iterator[zenmeta.Client]:
    """Five runs, oldest first: accuracies 0.5, 0.7, none, a boolean, 0.9; one with a
    nested config and a commit; read from memory, SQLite and PostgreSQL."""
    store: Any = InMemoryStore()
    if request.param != "memory":
        store = SQLStore(fresh_store_url(request, request.param, tmp_path))
    zenmeta.configure(store=store)
    values: list[dict[str, Any]] = [
        {"accuracy": 0.5, "config": {"lr": 0.01}, "size": StorageSize(2048)},
        {"accuracy": 0.7, "note": "x" * 300, "size": StorageSize(4096)},
        {"note": HOSTILE},
        {"accuracy": True},
        {"accuracy": 0.9, "link": Uri("https://example.com/a"), "size": StorageSize(1024)},
    ]
    for number, logged in enumerate(values):
        with pipeline_run("train", run_name=f"run-{number}"):
            log_metadata(logged)
            train(number + 1)
        time.sleep(0.002)
    zenmeta.flush()
    try:
        yield zenmeta.Client(store)
    finally:
        if request.param != "memory":
            store.close()


def fetch(client: zenmeta.Client, path: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=dashboard.create_app(client))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.get(path)

    return anyio.run(get)


def cells(html: str) -> list[str]:
    """The chosen columns' cells of a page, row by row."""
    return re.findall(r'<td class="chosen">(.*?)</td>', html, re.S)


def test_chosen_columns_show_metadata_beside_each_run(client: zenmeta.Client) -> None:
    """?columns=user.accuracy,user.config.lr: a heading each, a value per run, newest first;
    a run without the value has an empty cell."""
    page = fetch(client, "/?columns=user.accuracy,+user.config.lr")
    assert page.status_code == 200
    headings = '<th class="chosen">user.accuracy</th><th class="chosen">user.config.lr</th>'
    assert headings in page.text
    rows = cells(page.text)
    assert rows == ["0.9", "", "True", "", "", "", "0.7", "", "0.5", "0.01"]
    assert 'name="columns" value="user.accuracy, user.config.lr"' in page.text


def test_column_values_follow_the_shared_text_rules(client: zenmeta.Client) -> None:
    """A size reads 2.0 KiB with its bytes in a tooltip, long text is cut with the
    whole in a tooltip, a Uri is a link, and hostile text stays text."""
    page = fetch(client, "/?columns=user.size,user.note,user.link")
    rows = cells(page.text)
    assert rows[-3:] == ['<span title="2,048 bytes">2.0 KiB</span>', "", ""]
    assert rows[-5].startswith('<span title="xxxx') and rows[-5].endswith("x\u2026</span>")
    assert len(re.sub("<[^>]+>", "", rows[-5])) == 60
    assert rows[2] == '<a class="uri" href="https://example.com/a" rel="noopener noreferrer ' \
        'nofollow">https://example.com/a</a>'  # fmt: skip
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rows[7] and "<script" not in page.text


def test_an_unknown_column_is_empty_and_a_malformed_one_is_a_message(
    client: zenmeta.Client,
) -> None:
    """A field no run has gives empty cells; one that does not parse is a 400 page that
    names it and its position, still listing the runs, never a 500."""
    unknown = fetch(client, "/?columns=user.nothing_here")
    assert unknown.status_code == 200 and cells(unknown.text) == [""] * 5
    for bad, said in [
        ("user.", "expected a key after"),
        ("accuracy", "is not metadata"),
        ("user.accuracy,,user.x y", "column 3"),
        (HOSTILE, "column 1"),
    ]:
        page = fetch(client, f"/?{httpx.QueryParams({'columns': bad})}")
        assert page.status_code == 400, bad
        assert "That column cannot be read" in page.text and said in page.text
        assert "run-4" in page.text and "<script" not in page.text
    assert "user.accuracy" in fetch(client, "/?columns=user.accuracy,,user.x+y").text


def test_the_steps_table_takes_chosen_columns_too(client: zenmeta.Client) -> None:
    """?columns= on a run page adds the columns to its steps table and keeps them in links."""
    run = client.get_run("run-1")
    page = fetch(client, f"/runs/{run.id}?columns=user.rows,user.checkpoint,user.missing")
    assert page.status_code == 200
    assert cells(page.text) == ["2", '<span title="2,048 bytes">2.0 KiB</span>', ""]
    assert fetch(client, f"/runs/{run.id}?columns=user.").status_code == 400


def points(html: str) -> list[str]:
    """The chart's point labels, left to right."""
    chart = html[html.index('<svg class="chart"') : html.index("</svg>", html.index("chart"))]
    return re.findall(r"<circle [^>]*><title>([^<]*)</title>", chart)


def test_the_runs_page_charts_one_numeric_value_oldest_first(client: zenmeta.Client) -> None:
    """?chart=user.accuracy: a point per run with a number, in start order, each a link;
    the boolean and the missing value are left out and counted."""
    page = fetch(client, "/?chart=user.accuracy")
    assert page.status_code == 200
    assert points(page.text) == ["run-0: 0.5", "run-1: 0.7", "run-4: 0.9"]
    assert "2 runs have no numeric user.accuracy" in page.text
    assert page.text.count('<a href="/runs/') == 3
    assert "<script" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'; script-src")


def test_a_chart_of_sizes_plots_bytes_and_respects_the_filter(client: zenmeta.Client) -> None:
    """A StorageSize is plotted as its bytes (axis in binary units); only the runs the
    filter lists are charted."""
    page = fetch(client, "/?chart=user.size&where=user.size+%3E%3D+2048")
    assert points(page.text) == ["run-0: 2.0 KiB", "run-1: 4.0 KiB"]
    assert ">4.0 KiB</text>" in page.text and ">2.0 KiB</text>" in page.text
    assert "no numeric" not in page.text


def test_a_chart_with_nothing_to_draw_or_a_bad_field_says_so(client: zenmeta.Client) -> None:
    """A text value draws nothing and says why; a malformed field is a 400 message."""
    page = fetch(client, "/?chart=user.note")
    assert page.status_code == 200 and '<svg class="chart"' not in page.text
    assert "Nothing to chart" in page.text
    bad = fetch(client, "/?chart=user.")
    assert bad.status_code == 400 and "chart (&#39;user.&#39;)" in bad.text
