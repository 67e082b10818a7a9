"""The fan-out: configured record sinks get every run and step the store gets."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import zenmeta
from zenmeta import RunRecord, StepRecord, pipeline_run, track_step
from zenmeta.testing import InMemoryStore


class RecordingSink:
    """The test double of a sink: keeps every record and every call."""

    def __init__(self) -> None:
        self.records: list[RunRecord | StepRecord] = []
        self.flushed: list[int] = []
        self.shut = False

    def export(self, records: Sequence[RunRecord | StepRecord]) -> None:
        self.records.extend(records)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.flushed.append(timeout_millis)
        return True

    def shutdown(self) -> None:
        self.shut = True


class BrokenSink(RecordingSink):
    """A sink whose export always raises."""

    name = "broken"

    def export(self, records: Sequence[RunRecord | StepRecord]) -> None:
        raise ConnectionError("collector unreachable")


@track_step
def double(x: int) -> int:
    zenmeta.log_metadata({"x": x})
    return 2 * x


def test_sink_receives_the_records_the_store_gets() -> None:
    """Each finished step once, and the run's records ending with its final one."""
    sink, store = RecordingSink(), InMemoryStore()
    zenmeta.configure(store=store, exporters=[sink])
    with pipeline_run("p") as run:
        double(1)
        double(2)
    steps = [r for r in sink.records if isinstance(r, StepRecord)]
    runs = [r for r in sink.records if isinstance(r, RunRecord)]
    assert [s.name for s in steps] == ["double", "double_2"]
    assert steps[0].decoded_metadata() == {"user": {"x": 1}}
    assert runs[-1].status == "completed" and runs[-1].end_ns is not None
    assert all(r.run_id == run.id for r in runs)
    assert [s.id for s in store.list_steps(run.id)] == [s.step_run_id for s in steps]


def test_no_exporter_leaves_the_store_unwrapped() -> None:
    """With no sink configured a run writes straight to its store."""
    store = InMemoryStore()
    zenmeta.configure(store=store)
    with pipeline_run("p") as run:
        assert run._store is store


def test_failing_sink_is_warned_once_and_recorded_on_the_run(
    zenmeta_log: pytest.LogCaptureFixture,
) -> None:
    """A sink that raises breaks nothing: one warning, a fault on the run."""
    good, store = RecordingSink(), InMemoryStore()
    zenmeta.configure(store=store, exporters=[BrokenSink(), good])
    with pipeline_run("p") as run:
        assert [double(i) for i in range(3)] == [0, 2, 4]
    assert len(store.list_steps(run.id)) == 3
    assert len([r for r in good.records if isinstance(r, StepRecord)]) == 3
    faults = store.list_runs()[0].faults
    assert [(f.component, f.hook, f.error_type) for f in faults] == [
        ("exporter:broken", "export", "ConnectionError")
    ]
    warnings = [r for r in zenmeta_log.records if "exporter 'broken' failed" in r.getMessage()]
    assert len(warnings) == 1


def test_failing_sink_raises_in_strict_mode() -> None:
    """Strict mode, meant for tests, turns a sink's failure into a StoreError."""
    zenmeta.configure(store=InMemoryStore(), exporters=[BrokenSink()], strict=True)
    with pytest.raises(zenmeta.StoreError, match="collector unreachable"), pipeline_run("p"):
        pass


def test_flush_flushes_sinks_and_reset_shuts_them_down() -> None:
    """zenmeta.flush() flushes every sink used; closing the stores shuts them down."""
    sink = RecordingSink()
    zenmeta.configure(store=InMemoryStore(), exporters=[sink])
    with pipeline_run("p"):
        double(1)
    assert sink.flushed == []  # a run's end never waits for an exporter
    zenmeta.flush(timeout_millis=1234)
    assert sink.flushed == [1234]
    zenmeta.testing.reset()
    assert sink.shut


def test_unknown_exporter_name_is_warned_and_skipped(
    monkeypatch: pytest.MonkeyPatch, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """ZENMETA_EXPORTERS naming nothing installed warns and the run goes on."""
    monkeypatch.setenv("ZENMETA_EXPORTERS", "nosuch")
    store = InMemoryStore()
    zenmeta.configure(store=store)
    with pipeline_run("p"):
        double(1)
    assert len(store.list_runs()) == 1
    assert any("unknown exporter 'nosuch'" in r.getMessage() for r in zenmeta_log.records)


def test_configuration_reports_exporters_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_configuration() names the sinks: given objects, or ZENMETA_EXPORTERS's names."""
    monkeypatch.setenv("ZENMETA_EXPORTERS", "otlp, other")
    assert zenmeta.get_configuration().exporters == ("otlp", "other")
    zenmeta.configure(exporters=[BrokenSink(), RecordingSink()])
    assert zenmeta.get_configuration().exporters == ("broken", "RecordingSink")
    zenmeta.configure(exporters="otlp")  # one name, not its letters
    assert zenmeta.get_configuration().exporters == ("otlp",)


def test_decoded_metadata_is_what_the_store_returns() -> None:
    """A sink reads each record's metadata with the same types a store gives back."""
    sink, store = RecordingSink(), InMemoryStore()
    zenmeta.configure(store=store, exporters=[sink])
    values = {"uri": zenmeta.Uri("s3://b/k"), "size": zenmeta.StorageSize(3), "pair": (1, 2)}
    values |= {"far": float("inf"), "nested": {"a": [1]}, "none": None, "flag": True}

    class Plain(zenmeta.StackComponent):
        def get_step_run_metadata(self, info: zenmeta.StepRunInfo) -> dict[str, object]:
            return {"plain": 1.5, "text": zenmeta.Path("/tmp")}  # scalars only

    @track_step
    def rich() -> None:
        zenmeta.log_metadata(values)

    with pipeline_run("p", components=[Plain()]) as run:
        rich()
    [step] = [r for r in sink.records if isinstance(r, StepRecord)]
    decoded = step.decoded_metadata()
    assert decoded == store.list_steps(run.id)[0].metadata
    assert type(decoded["user"]["uri"]) is zenmeta.Uri
    assert type(decoded["user"]["pair"]) is tuple
    assert type(decoded["plain"]["text"]) is zenmeta.Path
