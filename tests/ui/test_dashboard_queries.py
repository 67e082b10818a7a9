"""The dashboard's filter box speaks the where language; runs open by prefix or name."""

from __future__ import annotations

import time

import httpx
import pytest

import zenmeta
from zenmeta import log_metadata, pipeline_run
from zenmeta._ui import dashboard
from zenmeta.testing import InMemoryStore


@pytest.fixture
def client() -> zenmeta.Client:
    store = InMemoryStore()
    zenmeta.configure(store=store)
    for number, accuracy in enumerate((0.5, 0.95, 0.91)):
        with pipeline_run("train", run_name=f"run-{number}", tags=["nightly"] if number else []):
            log_metadata({"accuracy": accuracy})
        time.sleep(0.002)
    return zenmeta.Client(store)


def fetch(client: zenmeta.Client, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=dashboard.create_app(client))

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.get(path)

    import asyncio

    return asyncio.run(get())


def test_the_filter_box_selects_runs_by_metadata(client: zenmeta.Client) -> None:
    """?where=... lists exactly the runs the filter selects, and keeps the text in the box."""
    page = fetch(client, "/?where=user.accuracy+%3E%3D+0.9+and+tag+%3D+%27nightly%27")
    assert page.status_code == 200
    assert "run-1" in page.text and "run-2" in page.text and "run-0" not in page.text
    assert 'value="user.accuracy &gt;= 0.9 and tag = &#39;nightly&#39;"' in page.text


def test_a_bad_filter_shows_its_error_not_a_500(client: zenmeta.Client) -> None:
    """A filter that does not parse is a 400 page that says where, with the form kept."""
    page = fetch(client, "/?where=user.accuracy+%3E")
    assert page.status_code == 400
    assert "cannot be read" in page.text and "position 15" in page.text
    assert "<script" not in fetch(client, "/?where=%3Cscript%3E").text


def test_a_run_opens_by_id_prefix_or_name(client: zenmeta.Client) -> None:
    """/runs/<prefix or name>, as the CLI accepts; an unknown one is a 404."""
    run = client.get_run("run-1")
    assert "run-1" in fetch(client, f"/runs/{run.id.hex[:10]}").text
    assert fetch(client, "/runs/run-2").status_code == 200
    assert fetch(client, "/runs/no-such-run").status_code == 404


def test_a_run_page_draws_its_steps_as_a_timeline(tmp_path: object) -> None:
    """Nested and parallel steps as SVG bars, a failed one marked, names escaped."""
    import threading

    store = InMemoryStore()
    zenmeta.configure(store=store)

    @zenmeta.track_step
    def leaf(name: str) -> None:
        time.sleep(0.01)

    @zenmeta.track_step(name="<b>outer</b>")
    def outer() -> None:
        workers = [
            threading.Thread(target=zenmeta.carry_context(leaf), args=(str(n),)) for n in range(2)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    @zenmeta.track_step
    def broken() -> None:
        raise RuntimeError("no")

    with pipeline_run("timeline", run_name="timeline"):
        outer()
        with pytest.raises(RuntimeError):
            broken()
    client = zenmeta.Client(store)
    page = fetch(client, "/runs/timeline")
    svg = page.text[page.text.index("<svg") : page.text.index("</svg>")]
    assert svg.count("<rect") == 4 and svg.count('class="bar bad"') == 1
    assert "&lt;b&gt;outer&lt;/b&gt;" in svg and "<b>" not in svg
    leaves = [s for s in client.list_steps("timeline") if s.step_name == "leaf"]
    assert leaves[0].start_time < leaves[1].end_time and leaves[1].start_time < leaves[0].end_time
    assert "script" not in svg


def test_the_compare_page_shows_what_differs_between_runs(client: zenmeta.Client) -> None:
    """Two or more runs picked on the runs page, side by side, differences only by default."""
    runs_page = fetch(client, "/").text
    assert 'action="/compare"' in runs_page and 'name="run"' in runs_page
    page = fetch(client, "/compare?run=run-0&run=run-1&run=run-2")
    assert page.status_code == 200 and "Compare 3 runs" in page.text
    assert "accuracy" in page.text and "0.95" in page.text and "nightly" in page.text
    assert "pipeline" not in page.text.split("<h2>Run</h2>", 1)[-1].split("</table>", 1)[0]
    assert fetch(client, "/compare?run=run-0").status_code == 404
    assert fetch(client, "/compare?run=run-0&run=nope").status_code == 404
