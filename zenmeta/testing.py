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

from . import _config
from ._store.memory import InMemoryStore

__all__ = ["InMemoryStore", "recording"]


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
