"""Every test starts from zenmeta's defaults, in its own working folder; store
tests run against SQLite and a real PostgreSQL server started here."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path as FilePath

import pytest
from _postgres import PostgresServer, UnavailableError

from zenmeta.testing import InMemoryStore, recording, reset

_ENV = (
    "ZENMETA_STORE",
    "ZENMETA_STRICT",
    "ZENMETA_IMPLICIT_RUNS",
    "ZENMETA_DURABILITY",
    "ZENMETA_COMPONENTS",
    "ZENMETA_EXPORTERS",
    "ZENMETA_REDACT",
)


@pytest.fixture(autouse=True)
def _isolated_zenmeta(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Defaults restored, no inherited settings, the default store under tmp."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    reset()
    yield
    reset()


@pytest.fixture
def store() -> Iterator[InMemoryStore]:
    """An in-memory store receiving every run of the test (not strict)."""
    with recording(strict=False) as memory:
        yield memory


@pytest.fixture
def zenmeta_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures zenmeta's warnings."""
    caplog.set_level(logging.WARNING, logger="zenmeta")
    return caplog


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole session, stopped at its end.

    Skipped only where PostgreSQL is not installed at all (``make test``
    installs it); on CI (``CI`` set) that is a failure, not a skip."""
    try:
        server = PostgresServer()
    except UnavailableError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_database(postgres_server: PostgresServer) -> str:
    """A database of its own for each test module (``createdb``); its URL."""
    return postgres_server.create_database()


def fresh_store_url(request: pytest.FixtureRequest, backend: str, tmp_path: FilePath) -> str:
    """A fresh, empty store on ``backend``: a SQLite file under ``tmp_path``, or
    the test module's PostgreSQL database with every table dropped."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/store/zenmeta.db"
    url: str = request.getfixturevalue("postgres_database")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    server.empty_database(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: FilePath) -> str:
    """A fresh, empty store, once on SQLite and once on PostgreSQL."""
    return fresh_store_url(request, request.param, tmp_path)
