"""The dashboard end to end: a real uvicorn, a real headless Chromium.

Debian's ``chromium`` package provides the browser (``make test`` installs
it on CI); Playwright only drives it and never downloads one. Without
``/usr/bin/chromium`` the test is skipped locally but fails on CI, where a
missing browser is a broken setup, not a reason to pass.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

import zenmeta
from zenmeta import (
    StackComponent,
    StepRunInfo,
    StorageSize,
    Uri,
    log_metadata,
    pipeline_run,
    track_step,
)
from zenmeta._ui.dashboard import create_app
from zenmeta.testing import InMemoryStore

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXPERIMENT = "https://tracking.example/#/experiments/7"
PWN = '<img src=x onerror="window.__pwned = 1">'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="no /usr/bin/chromium: install Debian's chromium package (apt-get install -y "
        "chromium) to run the browser test; on CI it always runs",
    ),
]


class Tracker(StackComponent):
    flavor = "tracker"

    def get_pipeline_run_metadata(self, run_id: UUID) -> dict[str, Any]:
        return {"experiment_url": Uri(EXPERIMENT), "sneaky": Uri("javascript:alert(1)")}

    def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, Any]:
        return {"model_size": StorageSize(1_572_864), "note": PWN}


@track_step
def preprocess() -> None:
    log_metadata({"rows": 150, "params": {"lr": 0.01, "layers": [64, 32]}})


@track_step
def train() -> None:
    preprocess()
    log_metadata({"accuracy": 0.1 + 0.2, "loss": float("nan")})


@pytest.fixture
def served(store: InMemoryStore) -> Iterator[str]:
    """The dashboard on a real uvicorn, on a free loopback port, in a thread."""
    import uvicorn

    with pipeline_run("training", run_name="nightly-1", components=[Tracker()], tags=[PWN]):
        train()
    with pipeline_run("etl", run_name="etl-1"):
        pass
    app = create_app(zenmeta.Client(store), allowed_hosts=["127.0.0.1"])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def test_browser_follows_a_run_link_and_finds_the_uri_link(
    served: str, store: InMemoryStore, tmp_path: pathlib.Path
) -> None:
    """Runs page → run page in Chromium: the Uri is a link, hostile text stays inert."""
    from playwright.sync_api import sync_playwright

    run = zenmeta.Client(store).get_run("nightly-1")
    problems: list[str] = []
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            page.on("console", lambda message: problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))

            def only_local(route: Any) -> None:
                url = route.request.url
                if url.startswith((served, "data:")):
                    route.continue_()
                else:
                    outside.append(url)
                    route.abort()

            page.route("**/*", only_local)

            page.goto(served + "/")
            assert page.title() == "Runs · zenmeta"
            page.screenshot(path=str(tmp_path / "runs-page.png"), full_page=True)
            page.get_by_role("link", name="nightly-1").click()
            page.wait_for_url(f"{served}/runs/{run.id}")

            link = page.locator("a.uri", has_text=EXPERIMENT)
            assert link.count() == 1
            assert link.get_attribute("href") == EXPERIMENT
            assert page.locator("span.uri-text", has_text="javascript:alert(1)").count() == 1
            hrefs = page.eval_on_selector_all("a", "links => links.map(a => a.href)")
            assert all(href.startswith((served, "https://tracking.example/")) for href in hrefs)
            assert page.evaluate("() => window.__pwned") is None
            assert page.locator("img").count() == 0
            assert page.get_by_text(PWN).count() == 1  # the tag, shown as text
            # The stylesheet loaded under the CSP: the header has its dark background.
            header_colour = page.eval_on_selector(
                "header.top", "e => getComputedStyle(e).backgroundColor"
            )
            assert header_colour == "rgb(29, 35, 48)"
            page.screenshot(path=str(tmp_path / "run-page.png"), full_page=True)
            timeline = page.locator("svg.timeline")
            box = timeline.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 20
            timeline.screenshot(path=str(tmp_path / "timeline.png"))

            page.get_by_role("link", name="preprocess").click()
            page.locator("details.json > summary").first.click()
            size = page.locator("span.size").first
            assert size.inner_text() == "1.5 MiB"
            assert size.get_attribute("title") == "1,572,864 bytes"
            assert page.evaluate("() => window.__pwned") is None
            page.screenshot(path=str(tmp_path / "step-page.png"), full_page=True)
        finally:
            browser.close()
    assert outside == [], "the dashboard must not reach the network"
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    print(f"screenshots in {tmp_path}")


class ServiceTemporarilyUnavailableBecauseTheUpstreamRefusedError(RuntimeError):
    """An error name as long as real ones get."""


def test_badges_and_error_names_stay_whole_at_1280_px(served: str, store: InMemoryStore) -> None:
    """On a crowded runs page at 1280 px, no badge, note or error name breaks mid-word."""
    from playwright.sync_api import sync_playwright

    @track_step
    def flaky() -> None:
        raise ServiceTemporarilyUnavailableBecauseTheUpstreamRefusedError("upstream refused")

    for number in range(3):
        tags = [f"tag-number-{i}-with-a-long-name" for i in range(6)]
        pipeline = "a-pipeline-with-a-rather-long-descriptive-name"
        with pipeline_run(pipeline, tags=tags), contextlib.suppress(RuntimeError):
            flaky()
        if number:
            with pytest.raises(RuntimeError), pipeline_run("broken" * 8):
                raise ServiceTemporarilyUnavailableBecauseTheUpstreamRefusedError("down")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served + "/")
            assert page.get_by_text("1 failed step").count() == 3
            broken = page.eval_on_selector_all(
                ".status, .note, .error-type, .tag",
                """elements => elements
                    .filter(e => e.getClientRects().length > 1
                                 || e.getBoundingClientRect().height > 24)
                    .map(e => e.className + ': ' + e.textContent)""",
            )
            assert broken == []
        finally:
            browser.close()


@track_step
def shard(number: int) -> None:
    time.sleep(0.05)
    log_metadata({"shard": number})


@track_step
def fan_out() -> None:
    workers = [
        threading.Thread(target=zenmeta.carry_context(shard), args=(number,)) for number in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_browser_filters_runs_shows_a_chosen_column_and_charts_it(
    served: str, store: InMemoryStore, tmp_path: pathlib.Path
) -> None:
    """The runs form in Chromium: a filter, a metadata column and a chart of it, all
    drawn by the server; then the timeline of a run whose steps ran side by side."""
    from playwright.sync_api import sync_playwright

    for number, accuracy in enumerate((0.61, 0.74, 0.69, 0.88)):
        with pipeline_run("scoring", run_name=f"scored-{number}"):
            log_metadata({"accuracy": accuracy, "commit": f"c{number}"})
        time.sleep(0.002)
    with pipeline_run("scoring", run_name="unscored"):
        pass
    with pipeline_run("fan", run_name="parallel"):
        fan_out()
    parallel = zenmeta.Client(store).get_run("parallel")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text))
            page.goto(served + "/")
            page.fill("input[name=where]", "pipeline = 'scoring'")
            page.fill("input[name=columns]", "user.accuracy, user.commit")
            page.fill("input[name=chart]", "user.accuracy")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**/?*chart=user.accuracy*")

            names = page.locator("a.run-link").all_inner_texts()
            assert names == ["unscored", "scored-3", "scored-2", "scored-1", "scored-0"]
            headings = page.locator("table.runs th.chosen").all_inner_texts()
            assert headings == ["user.accuracy", "user.commit"]
            assert page.locator("table.runs td.chosen").all_inner_texts()[:4] == [
                "", "", "0.88", "c3"]  # fmt: skip
            chart = page.locator("svg.chart")
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            assert chart.locator("circle.point").count() == 4
            heights = [
                point.bounding_box()["y"]  # type: ignore[index]
                for point in chart.locator("circle.point").all()
            ]
            assert heights.index(min(heights)) == 3  # 0.88, the newest, is highest
            assert page.get_by_text("1 run has no numeric user.accuracy").count() == 1
            page.screenshot(path=str(tmp_path / "runs-filtered-chart.png"), full_page=True)
            chart.screenshot(path=str(tmp_path / "chart.png"))

            page.goto(f"{served}/runs/{parallel.id}")
            timeline = page.locator("svg.timeline")
            bars = timeline.locator("g.bar rect")
            assert bars.count() == 4
            spans = [bar.bounding_box() for bar in bars.all()]
            shards = [(b["x"], b["x"] + b["width"]) for b in spans[1:] if b is not None]
            assert len(shards) == 3
            assert max(start for start, _ in shards) < min(end for _, end in shards)  # overlap
            timeline.screenshot(path=str(tmp_path / "timeline-parallel.png"))
        finally:
            browser.close()
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    print(f"screenshots in {tmp_path}")
