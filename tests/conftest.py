"""Every test starts from zenmeta's defaults, in its own working folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import zenmeta
from zenmeta import _store
from zenmeta._tracking import components as _components
from zenmeta._tracking import context as _context
from zenmeta.testing import InMemoryStore, recording

_ENV = (
    "ZENMETA_STORE",
    "ZENMETA_STRICT",
    "ZENMETA_IMPLICIT_RUNS",
    "ZENMETA_DURABILITY",
    "ZENMETA_COMPONENTS",
    "ZENMETA_REDACT",
)


def _reset() -> None:
    zenmeta.reset_configuration()
    _components.clear_components()
    for run in _context.detached_runs():
        _context.remove_detached(run)
    _store.close_stores()


@pytest.fixture(autouse=True)
def _isolated_zenmeta(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Defaults restored, no inherited settings, the default store under tmp."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    _reset()
    yield
    _reset()


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
