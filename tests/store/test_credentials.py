"""A store URL's password is used to connect and shown nowhere: not by the CLI,
the dashboard, the ``ui`` banner, warnings, errors or exported JSON."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from _postgres import PostgresServer
from click.testing import CliRunner

import zenmeta
from zenmeta import log_metadata, pipeline_run, track_step
from zenmeta._redact import masked_url
from zenmeta._store import close_stores
from zenmeta._store.sql import SQLStore
from zenmeta._ui import dashboard
from zenmeta._ui.cli import cli

PASSWORD = "Tr0ub4dor-and-3"


@pytest.fixture(scope="module")
def secret_url(postgres_server: PostgresServer) -> str:
    """A database reachable only with PASSWORD (scram-sha-256, not trust)."""
    return postgres_server.create_role_with_password("alice", PASSWORD)


@pytest.fixture
def everything_logged() -> Iterator[list[logging.LogRecord]]:
    """Every record any logger emits during the test, at every level."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@track_step
def train(epochs: int) -> int:
    log_metadata({"epochs": epochs})
    return epochs


def _fetch(app: Any, path: str) -> str:
    async def send() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return (await client.get(path)).text

    return anyio.run(send)


def test_masked_url_hides_the_password_and_keeps_where_the_store_is() -> None:
    """User, host, port and database stay; a password in the user part or the query goes."""
    shown = masked_url("postgresql+psycopg://alice:p@ss/w0rd@127.0.0.1:5432/db?password=x&a=1")
    assert shown == "postgresql+psycopg://alice:***@127.0.0.1:5432/db?password=***&a=1"
    assert masked_url("postgresql://alice@db.example/zen") == "postgresql://alice@db.example/zen"
    assert masked_url("sqlite:////data/a:b@c/zenmeta.db") == "sqlite:////data/a:b@c/zenmeta.db"


def test_the_password_connects_and_appears_in_no_output(
    secret_url: str,
    everything_logged: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A pipeline written with the password; every CLI output, dashboard page,
    ``ui`` banner, log record, repr, thread name and export is free of it."""
    assert PASSWORD in secret_url
    zenmeta.configure(store=secret_url)
    with pipeline_run("training", run_name="secret-run") as run:
        train(1)
        train(2)
        seen = [thread.name for thread in threading.enumerate()]
    outputs: list[str] = [repr(zenmeta.Client()), zenmeta.Client().url, *seen]
    runner = CliRunner()
    for command in (
        ["store", "info"],
        ["store", "info", "--json"],
        ["runs", "list"],
        ["runs", "list", "--json"],
        ["runs", "show", "secret-run"],
        ["runs", "show", "secret-run", "--json"],
        ["runs", "export", "secret-run"],
    ):
        result = runner.invoke(cli, ["--store", secret_url, *command])
        assert result.exit_code == 0, result.output
        outputs += [result.output, result.stderr]
    info = json.loads(runner.invoke(cli, ["--store", secret_url, "store", "info", "--json"]).output)
    assert info["url"] == masked_url(secret_url) and info["runs"] == 1
    exported = zenmeta.Client().export_run(str(run.id))
    outputs.append(json.dumps(exported))
    outputs.append(json.dumps(zenmeta.Client().store_info()))
    app = dashboard.create_app(zenmeta.Client(secret_url))
    pages = [_fetch(app, "/"), _fetch(app, f"/runs/{run.id}")]
    assert "secret-run" in pages[0] and masked_url(secret_url) in pages[0]
    outputs += pages
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: None)
    dashboard.serve(store=secret_url)
    banner = capsys.readouterr()
    assert "reading" in banner.err
    outputs += [banner.out, banner.err]
    # A store that fails after opening: its writer's warning names the store.
    writer = SQLStore(secret_url, durability="batched")
    outputs.append(repr(writer))
    with writer.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE zenmeta_steps CASCADE")
    zenmeta.configure(store=writer)
    with pipeline_run("broken"):
        train(3)
    writer.close()
    close_stores()
    messages = [record.getMessage() for record in everything_logged]
    assert any("cannot write" in message for message in messages)
    outputs += messages
    leaked = [text for text in outputs if PASSWORD in text]
    assert not leaked


def test_a_store_that_cannot_be_opened_is_reported_without_its_password(
    postgres_server: PostgresServer, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """A wrong database name: the warning and the strict error name the store, masked."""
    url = postgres_server.url("no_such_db", user="alice", password=PASSWORD)
    zenmeta.configure(store=url)
    with pipeline_run("p"):
        train(1)
    messages = [record.getMessage() for record in zenmeta_log.records]
    assert any("cannot open store" in message and "alice:***@" in message for message in messages)
    assert not any(PASSWORD in message for message in messages)
    zenmeta.configure(strict=True)
    with pytest.raises(zenmeta.StoreError) as raised, pipeline_run("p"):
        pass
    assert PASSWORD not in str(raised.value) and "alice:***@" in str(raised.value)
    result = CliRunner().invoke(cli, ["--store", url, "runs", "list"])
    assert result.exit_code == 1 and PASSWORD not in result.output + result.stderr
