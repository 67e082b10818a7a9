"""The dashboard when text, hosts, ports or the store are not what they should be."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path as FilePath
from typing import Any

import anyio
import httpx
import pytest

import zenmeta
from zenmeta import log_metadata, pipeline_run, track_step
from zenmeta._ui import dashboard
from zenmeta.testing import InMemoryStore

SPOOF = "invoice\u202egpj.exe"


def fetch(app: Any, path: str, headers: Mapping[str, str] | None = None) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path, headers=headers)

    return anyio.run(send)


def test_bidirectional_controls_are_shown_not_obeyed(store: InMemoryStore) -> None:
    """`invoice\\u202egpj.exe` appears with a visible, marked \\u202e; no raw control remains."""

    @track_step(name=SPOOF)
    def attach() -> None:
        log_metadata({SPOOF: SPOOF, "link": zenmeta.Uri("https://x.example/" + SPOOF)})

    with pipeline_run(SPOOF, tags=[SPOOF]):
        attach()
    app = dashboard.create_app(zenmeta.Client(store))
    run = store.list_runs()[0]
    step = store.list_steps(run.id)[0]
    for path in ("/", f"/runs/{run.id}", f"/steps/{step.id}"):
        html = fetch(app, path).text
        assert "\u202e" not in html, path
        assert '<span class="control"' in html and "invoice" in html
        assert "\\u202e</span>gpj.exe" in html, path


def test_controls_inside_attributes_stay_inside_them() -> None:
    """A control in a tooltip becomes plain text there, never markup."""
    page = '<span title="a\u202eb">c\x1bd</span>'
    shown = dashboard.show_controls(page)
    assert shown.startswith('<span title="a\\u202eb">')
    assert 'c<span class="control"' in shown and "\\x1b</span>d" in shown


def test_bound_to_every_address_the_host_header_is_still_checked() -> None:
    """With 0.0.0.0 this machine's names and addresses pass; a rebinding name does not."""
    allowed = dashboard.served_hosts("0.0.0.0")
    assert {"localhost", "127.0.0.1", socket.gethostname().lower()} <= set(allowed)
    app = dashboard.create_app(zenmeta.Client(InMemoryStore()), allowed_hosts=allowed)
    assert fetch(app, "/", {"host": f"{socket.gethostname()}:8765"}).status_code == 200
    assert fetch(app, "/", {"host": "127.0.0.1:8765"}).status_code == 200
    assert fetch(app, "/", {"host": "rebind.attacker.example"}).status_code == 400
    extra = dashboard.served_hosts("0.0.0.0", ["proxy.example"])
    assert "proxy.example" in extra and "proxy.example" not in allowed


def test_a_port_in_use_is_one_line(tmp_path: FilePath) -> None:
    """`zenmeta ui --port P` with P taken: one line naming the port, exit 1, no traceback."""
    zenmeta.configure(store=str(tmp_path / "runs.db"))
    with pipeline_run("p"):
        pass
    zenmeta.flush()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "zenmeta", "ui", "--port", str(port),
             "--store", str(tmp_path / "runs.db")],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("ZENMETA_")},
        )  # fmt: skip
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["text file", "folder"])
def test_ui_over_a_store_that_is_not_one_is_one_line(tmp_path: FilePath, kind: str) -> None:
    """`zenmeta ui --store` a non-database: one line and exit 1 before serving."""
    target = tmp_path / "bad.db"
    if kind == "folder":
        target.mkdir()
    else:
        target.write_text("not a database\n" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "zenmeta", "ui", "--port", "0", "--store", str(target)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and str(target) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_store_that_breaks_while_served_is_an_error_page(tmp_path: FilePath) -> None:
    """The file turning into garbage under the dashboard: a 503 page, no traceback."""
    path = tmp_path / "runs.db"
    zenmeta.configure(store=str(path))
    with pipeline_run("p"):
        pass
    zenmeta._store.close_stores()
    app = dashboard.create_app(zenmeta.Client(str(path)))
    assert fetch(app, "/").status_code == 200
    app = dashboard.create_app(zenmeta.Client(str(path)))
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"runs.db{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"garbage" * 1000)
    response = fetch(app, "/")
    assert response.status_code == 503 and "could not be read" in response.text
    assert "Traceback" not in response.text


def test_a_completed_run_with_a_failed_step_says_so(store: InMemoryStore) -> None:
    """The runs page notes "1 failed step" on a run that completed anyway."""

    @track_step
    def flaky() -> None:
        raise ValueError("transient")

    with pipeline_run("resilient"), contextlib.suppress(ValueError):
        flaky()
    (run,) = store.list_runs()
    assert run.status == "completed" and run.failed_step_count == 1
    html = fetch(dashboard.create_app(zenmeta.Client(store)), "/").text
    assert "1 failed step" in html


def test_failed_steps_are_counted_by_the_sql_store_too(tmp_path: FilePath) -> None:
    """The SQL store reads the same failed-step count as the memory store."""

    @track_step
    def flaky(fail: bool) -> None:
        if fail:
            raise ValueError("transient")

    zenmeta.configure(store=str(tmp_path / "runs.db"))
    with pipeline_run("resilient"):
        for fail in (True, False, True):
            with contextlib.suppress(ValueError):
                flaky(fail)
    zenmeta.flush()
    (run,) = zenmeta.Client(str(tmp_path / "runs.db")).list_runs()
    assert (run.status, run.step_count, run.failed_step_count) == ("completed", 3, 2)


def test_an_empty_store_page_names_the_store(tmp_path: FilePath) -> None:
    """ "No runs yet" says which store was read."""
    store = InMemoryStore("memory://empty-named")
    html = fetch(dashboard.create_app(zenmeta.Client(store)), "/").text
    assert "No runs yet in <code>memory://empty-named</code>" in html


def test_badges_and_error_names_do_not_wrap() -> None:
    """The stylesheet keeps status badges, notes and error names on one line."""
    css = (FilePath(dashboard.__file__).parent / "static" / "dashboard.css").read_text()
    assert ".status, .note, .error-type, .tag { white-space: nowrap; }" in css
