"""Helpers for users' own tests: run a pipeline, assert on what it recorded.

For example, in a test module:

    from zenmeta.testing import recording

    def test_training_records_accuracy():
        with recording() as store:
            train_pipeline()
        run = store.list_runs()[0]
        assert run.status == "completed"
        step = store.list_steps(run.id)[0]
        assert step.metadata["user"]["accuracy"] > 0.9
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from . import _config, _store
from ._store.memory import InMemoryStore
from ._tracking import components as _components
from ._tracking import context as _context

__all__ = ["InMemoryStore", "recording", "reset"]


def reset() -> None:
    """Back to zenmeta's defaults: configuration forgotten, registered
    components removed, runs left open by ``start_run()`` dropped, every
    store flushed and closed and every exporter shut down."""
    _config.reset_configuration()
    _components.clear_components()
    for run in _context.detached_runs():
        _context.remove_detached(run)
    _store.close_stores()


@contextmanager
def recording(*, strict: bool = True) -> Iterator[InMemoryStore]:
    """Send every run started inside the block to a fresh in-memory store.

    Strict by default: in a test, a failing component or a dropped value
    should fail loudly. The previous store and strictness are restored after.
    """
    previous = (_config._configured.store, _config._configured.strict)
    store = InMemoryStore()
    _config.configure(store=store, strict=strict)
    try:
        yield store
    finally:
        _config.configure(store=previous[0], strict=previous[1])
