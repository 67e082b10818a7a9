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

from . import _config, _log, _store
from ._store.memory import InMemoryStore
from ._tracking import attach, components, context, metadata

__all__ = ["InMemoryStore", "recording", "reset"]


def reset() -> None:
    """Return all of zenmeta's process state to its defaults, in this order:

    1. runs started with ``start_run()`` and not ended are forgotten (not ended:
       ending them would write to a store the next test may not want);
    2. every open store is flushed and closed, and its remembered faults forgotten;
       every exporter used is shut down;
    3. registered components and the instances of configured flavors are dropped;
    4. remembered warnings are forgotten, so the next dropped value (or store
       fault) warns again;
    5. everything given to ``zenmeta.configure()`` is undone.

    Stores come before configuration so that queued records still reach the
    store they were queued for. This package's tests call it around every
    test, and so does the pytest plugin.
    """
    context.forget_detached()
    attach.forget_attachments()
    context.set_task_source(None)
    _store.close_stores()
    components.clear_components()
    metadata.forget_warnings()
    _log.forget_warnings()
    _config.reset_configuration()


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
