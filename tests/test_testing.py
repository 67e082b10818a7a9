"""``zenmeta.testing``: the one public reset, and recording into memory."""

from __future__ import annotations

import logging

import pytest

import zenmeta
from zenmeta.testing import InMemoryStore, recording, reset


class Probe(zenmeta.StackComponent):
    """A component whose run metadata shows whether it was still registered."""

    def get_pipeline_run_metadata(self, run_id: object) -> dict[str, zenmeta.MetadataType]:
        return {"registered": True}


def test_reset_returns_every_piece_of_process_state_to_its_defaults(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Registry, flavors, notebook runs, stores, warnings and configuration all go back."""
    store = InMemoryStore()
    zenmeta.configure(store=store, strict=False, durability="immediate")
    zenmeta.register_component(Probe("probe"))
    run = zenmeta.start_run("notebook")
    caplog.set_level(logging.WARNING, logger="zenmeta")
    zenmeta.log_metadata({"odd": object()})  # converted with a warning, remembered once
    reset()
    assert zenmeta.get_configuration() == zenmeta.get_configuration()._replace(
        strict=False, implicit_runs=True, durability="batched"
    )
    assert zenmeta.get_configuration().store.endswith("zenmeta.db")
    with recording(strict=False) as fresh:
        with zenmeta.pipeline_run("after") as later:
            assert later.parent_run_id is None  # the notebook run was forgotten
            zenmeta.log_metadata({"odd": object()})
        recorded = fresh.list_runs()[0]
    assert set(recorded.metadata) == {"user"}  # the probe component is gone
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 2
    assert store.list_runs()[0].id == run.id and store.list_runs()[0].status == "running"
