"""zenmeta's pytest plugin: tests never write to the real store, and can read
what they recorded.

pytest loads it in every project where zenmeta is installed (entry point
``pytest11``), so it imports only pytest, ``zenmeta`` and ``zenmeta.testing``,
all light. What it does:

- For the whole session, runs go to an in-memory store: the plugin sets
  ``ZENMETA_STORE=memory://pytest`` unless ``ZENMETA_STORE`` is already set
  or ``--zenmeta-store URL`` names another store. An environment variable,
  not ``configure()``: a test or a conftest that resets zenmeta's
  configuration keeps the protection, and subprocesses inherit it. It is
  restored when the session ends.
- The ``zenmeta_records`` fixture sends the test's runs to a fresh in-memory
  store, lets the test read them by pipeline and by step name, and resets
  zenmeta (``zenmeta.testing.reset()``) after the test.
- ``@pytest.mark.zenmeta(strict=True)`` turns strict mode on (component,
  metadata and store faults raise) for the body of one test.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import zenmeta
import zenmeta.testing

if TYPE_CHECKING:
    from uuid import UUID

__all__ = ["ZenmetaRecords", "SESSION_STORE"]

SESSION_STORE = "memory://pytest"
"""Where runs go under pytest when nothing else is configured."""

_SAVED: list[str | None] = []  # ZENMETA_STORE before the session, to restore


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zenmeta")
    group.addoption(
        "--zenmeta-store",
        metavar="URL",
        default=None,
        help=f"store the tests' zenmeta runs in URL (default {SESSION_STORE}, in memory)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "zenmeta(strict=True): run this test with zenmeta's strict mode on or off"
    )
    url = config.getoption("zenmeta_store", None)
    previous = os.environ.get("ZENMETA_STORE")
    _SAVED.append(previous)
    if url:
        os.environ["ZENMETA_STORE"] = url
    elif not previous:
        os.environ["ZENMETA_STORE"] = SESSION_STORE


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _SAVED:
        return
    previous = _SAVED.pop()
    if previous is None:
        os.environ.pop("ZENMETA_STORE", None)
    else:
        os.environ["ZENMETA_STORE"] = previous


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Apply the marker around the test's body, after every fixture's setup
    (an autouse fixture that resets zenmeta cannot undo it)."""
    marker = item.get_closest_marker("zenmeta")
    if marker is None:
        yield
        return
    unknown = set(marker.kwargs) - {"strict"}
    if marker.args or unknown:
        raise pytest.UsageError(
            "@pytest.mark.zenmeta takes only strict=True/False, "
            f"not {marker.args or sorted(unknown)}"
        )
    zenmeta.configure(strict=bool(marker.kwargs.get("strict", True)))
    try:
        yield
    finally:
        zenmeta.configure(strict=None)


class ZenmetaRecords:
    """The runs and steps a test recorded, read back as a store would give them.

    ``runs`` and ``steps`` are in start order; ``pipeline(name)`` gives the
    runs of one pipeline; ``step(name)`` the one step with that step name or
    invocation name (``train``, ``train_2``), ``steps_named(name)`` all of
    them. Each has ``metadata`` by source (``step.metadata["user"]["loss"]``).
    """

    def __init__(self, store: zenmeta.testing.InMemoryStore) -> None:
        self.store = store

    @property
    def runs(self) -> list[zenmeta.RecordedRun]:
        return sorted(self.store.list_runs(), key=lambda run: run.start_time)

    @property
    def steps(self) -> list[zenmeta.RecordedStep]:
        steps = [step for run in self.runs for step in self.store.list_steps(run.id)]
        return sorted(steps, key=lambda step: step.start_time)

    def pipeline(self, name: str) -> list[zenmeta.RecordedRun]:
        """The runs of pipeline ``name``, in start order."""
        return [run for run in self.runs if run.pipeline_name == name]

    def run(self, pipeline: str | None = None) -> zenmeta.RecordedRun:
        """The one run (of ``pipeline``); fails the test when there are none or several."""
        runs = self.runs if pipeline is None else self.pipeline(pipeline)
        run: zenmeta.RecordedRun = _one(runs, f"run of {pipeline!r}" if pipeline else "run")
        return run

    def steps_of(self, run: zenmeta.RecordedRun | UUID) -> list[zenmeta.RecordedStep]:
        """A run's steps, in start order."""
        return self.store.list_steps(getattr(run, "id", run))  # type: ignore[arg-type]

    def steps_named(self, name: str) -> list[zenmeta.RecordedStep]:
        """Every step whose step name or invocation name is ``name``."""
        return [step for step in self.steps if name in (step.step_name, step.name)]

    def step(self, name: str) -> zenmeta.RecordedStep:
        """The one step named ``name``; fails the test when there are none or several."""
        step: zenmeta.RecordedStep = _one(self.steps_named(name), f"step named {name!r}")
        return step

    def clear(self) -> None:
        """Forget what was recorded so far."""
        self.store.clear()

    def __len__(self) -> int:
        return len(self.store.list_runs())

    def __repr__(self) -> str:
        return f"<ZenmetaRecords {len(self)} run(s), {len(self.steps)} step(s)>"


def _one(found: list[Any], what: str) -> Any:
    if len(found) != 1:
        pytest.fail(f"expected one {what}, found {len(found)}", pytrace=False)
    return found[0]


@pytest.fixture
def zenmeta_records() -> Iterator[ZenmetaRecords]:
    """The runs and steps this test records; zenmeta is reset afterwards."""
    store = zenmeta.testing.InMemoryStore()
    zenmeta.configure(store=store)
    try:
        yield ZenmetaRecords(store)
    finally:
        zenmeta.testing.reset()
