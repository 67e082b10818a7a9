"""Runs and steps as OpenTelemetry spans, sent over real OTLP/HTTP, and the
active span recorded on each run and step."""

from __future__ import annotations

import http.server
import json
import logging
import platform
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import zenmeta
from zenmeta import RunRecord, StepRecord, Uri, pipeline_run, track_step
from zenmeta.integrations.environment import EnvironmentComponent
from zenmeta.integrations.opentelemetry import OpenTelemetryComponent, OpenTelemetrySink
from zenmeta.testing import InMemoryStore


class RecordingSink:
    """The test double of a sink: keeps every record it is given."""

    def __init__(self) -> None:
        self.records: list[RunRecord | StepRecord] = []

    def export(self, records: Sequence[RunRecord | StepRecord]) -> None:
        self.records.extend(records)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass

    def final(self) -> list[RunRecord | StepRecord]:
        """Steps, and each run's last record."""
        last = {r.run_id: r for r in self.records if isinstance(r, RunRecord)}
        return [r for r in self.records if isinstance(r, StepRecord)] + list(last.values())


class Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1: keeps each decoded POST /v1/traces."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.append(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real OTLP/HTTP receiver, stopped after the test."""
    server = Receiver()
    yield server
    server.close()


@track_step
def load(rows: int) -> int:
    zenmeta.log_metadata(
        {
            "rows": rows,
            "loss": 0.25,
            "sizes": [1, 2, 3],
            "params": {"lr": 0.1},
            "uri": Uri("s3://b/k"),
        }
    )
    return rows


@track_step
def train(rows: int) -> int:
    return load(rows) * 2


@track_step
def evaluate() -> None:
    raise ValueError("accuracy too low")


def _pipeline() -> zenmeta.PipelineRun:
    with pipeline_run("training", components=[EnvironmentComponent(packages=())]) as run:
        train(10)
        with pytest.raises(ValueError):
            evaluate()
    return run


def test_pipeline_exports_its_span_tree_over_otlp_http(receiver: Receiver) -> None:
    """Run and step spans reach a real OTLP receiver with the records' tree,
    times, statuses, attributes and resource; re-exporting gives the same ids."""
    sink = OpenTelemetrySink(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces", timeout=5))
    recorder = RecordingSink()
    zenmeta.configure(store=InMemoryStore(), exporters=[sink, recorder])
    run = _pipeline()
    zenmeta.flush()
    spans = {span.name: (resource, span) for resource, span in receiver.spans()}
    assert set(spans) == {"training", "train", "load", "evaluate"}
    records = {getattr(r, "step_name", "training"): r for r in recorder.final()}

    resource, run_span = spans["training"]
    assert run_span.trace_id == run.id.bytes
    assert run_span.parent_span_id == b""
    assert (run_span.start_time_unix_nano, run_span.end_time_unix_nano) == (
        records["training"].start_ns,
        records["training"].end_ns,
    )
    assert resource["service.name"] == "training"
    assert resource["process.runtime.version"] == platform.python_version()
    assert resource["host.name"] == socket.gethostname()
    attributes = _attributes(run_span.attributes)
    assert attributes["zenmeta.run_id"] == str(run.id)
    assert attributes["zenmeta.environment.python_version"] == platform.python_version()

    _, train_span = spans["train"]
    _, load_span = spans["load"]
    _, evaluate_span = spans["evaluate"]
    assert {s.trace_id for _, s in spans.values()} == {run.id.bytes}
    assert train_span.parent_span_id == run_span.span_id
    assert evaluate_span.parent_span_id == run_span.span_id
    assert load_span.parent_span_id == train_span.span_id  # nested steps stay nested
    for name in ("train", "load", "evaluate"):
        span, record = spans[name][1], records[name]
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (
            record.start_ns,
            record.end_ns,
        )
    assert evaluate_span.status.code == 2  # STATUS_CODE_ERROR
    assert evaluate_span.status.message == "accuracy too low"
    assert [event.name for event in evaluate_span.events] == ["exception"]
    assert train_span.status.code == 0  # unset
    assert (
        _attributes(load_span.attributes).items()
        >= {
            "zenmeta.user.rows": 10,
            "zenmeta.user.loss": 0.25,
            "zenmeta.user.sizes": (1, 2, 3),
            "zenmeta.user.params": json.dumps({"lr": 0.1}),
            "zenmeta.user.uri": "s3://b/k",
            "zenmeta.step_name": "load",
        }.items()
    )

    again = InMemorySpanExporter()
    second = OpenTelemetrySink(again)
    second.export(recorder.records)
    second.force_flush()
    second.shutdown()
    ids = {s.name: (s.context.trace_id, s.context.span_id) for s in again.get_finished_spans()}
    assert ids == {
        name: (int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big"))
        for name, (_, span) in spans.items()
    }


@pytest.fixture(params=["refused", "hangs"])
def bad_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """A closed port, or a port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if request.param == "refused":
        listener.close()
    else:
        listener.listen(16)  # the kernel completes handshakes; nobody ever reads
    yield f"http://127.0.0.1:{port}/v1/traces"
    listener.close()


@track_step
def work(x: int) -> int:
    time.sleep(0.002)
    return x


def _timed_steps(count: int) -> float:
    with pipeline_run("timed"):
        start = time.perf_counter()
        for i in range(count):
            work(i)
        return time.perf_counter() - start


def test_failing_exporter_never_slows_or_breaks_steps(
    bad_endpoint: str, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """Against a refusing or silent receiver, steps take their usual time,
    nothing is raised, and the failure is warned about and kept."""
    zenmeta.configure(store=InMemoryStore())
    baseline = min(_timed_steps(40) for _ in range(2))
    sink = OpenTelemetrySink(
        OTLPSpanExporter(endpoint=bad_endpoint, timeout=0.5),
        schedule_delay_millis=10,
        max_export_batch_size=64,
        max_queue_size=256,
    )
    zenmeta.configure(exporters=[sink])
    exporting = min(_timed_steps(40) for _ in range(2))
    began = time.perf_counter()
    sink.force_flush()
    sink.shutdown()
    assert time.perf_counter() - began < 10
    assert exporting / baseline < 2.0, (exporting, baseline)
    assert sink.faults and sink.failed_spans > 0
    assert any("exporting spans" in r.getMessage() for r in zenmeta_log.records)


def test_step_in_an_active_span_records_it_and_the_run_span_is_its_child() -> None:
    """Inside tracer.start_as_current_span, the component records that span's
    ids, and the exported run span becomes its child in its trace."""
    tracer = TracerProvider().get_tracer("app")
    memory = InMemorySpanExporter()
    sink = OpenTelemetrySink(memory)
    store = InMemoryStore()
    zenmeta.configure(store=store, exporters=[sink])
    served = pipeline_run("served", components=[OpenTelemetryComponent()])
    with tracer.start_as_current_span("request") as outer, served as run:
        load(3)
    context = outer.get_span_context()
    step = store.list_steps(run.id)[0]
    assert step.metadata["opentelemetry"] == {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }
    assert store.list_runs()[0].metadata["opentelemetry"]["span_id"] == f"{context.span_id:016x}"
    zenmeta.flush()
    spans = {span.name: span for span in memory.get_finished_spans()}
    assert spans["served"].parent is not None
    assert spans["served"].parent.span_id == context.span_id
    assert {s.context.trace_id for s in spans.values()} == {context.trace_id}
    assert spans["load"].parent.span_id == spans["served"].context.span_id


def test_component_records_nothing_outside_any_span() -> None:
    """With no active span, the component adds no keys."""
    store = InMemoryStore()
    zenmeta.configure(store=store)
    with pipeline_run("plain", components=[OpenTelemetryComponent()]) as run:
        load(1)
    assert not store.list_steps(run.id)[0].metadata.get("opentelemetry")


def test_component_is_a_configured_flavor(monkeypatch: pytest.MonkeyPatch) -> None:
    """ZENMETA_COMPONENTS=opentelemetry records the active span on each step."""
    monkeypatch.setenv("ZENMETA_COMPONENTS", "opentelemetry")
    store = InMemoryStore()
    zenmeta.configure(store=store)
    tracer = TracerProvider().get_tracer("app")
    with tracer.start_as_current_span("job") as span, pipeline_run("flavored") as run:
        load(1)
    recorded = store.list_steps(run.id)[0].metadata["opentelemetry"]
    assert recorded["trace_id"] == f"{span.get_span_context().trace_id:032x}"


def test_otlp_by_name_follows_opentelemetry_variables(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZENMETA_EXPORTERS=otlp builds an OTLP/HTTP exporter from OTEL_EXPORTER_OTLP_*."""
    monkeypatch.setenv("ZENMETA_EXPORTERS", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nightly")
    zenmeta.configure(store=InMemoryStore())
    with pipeline_run("by-name") as run:
        load(2)
    zenmeta.flush()
    received = receiver.spans()
    assert {span.name for _, span in received} == {"by-name", "load"}
    assert {resource["service.name"] for resource, _ in received} == {"nightly"}
    assert {span.trace_id for _, span in received} == {run.id.bytes}


def test_nested_run_joins_its_parent_runs_trace() -> None:
    """A run opened inside a run is a child span of the outer run, same trace."""
    memory = InMemorySpanExporter()
    zenmeta.configure(store=InMemoryStore(), exporters=[OpenTelemetrySink(memory)])
    with pipeline_run("outer") as outer, pipeline_run("inner"):
        load(1)
    zenmeta.flush()
    spans = {span.name: span for span in memory.get_finished_spans()}
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert {s.context.trace_id for s in spans.values()} == {outer.id.int}


def test_values_become_attribute_types_or_json() -> None:
    """Scalars and homogeneous sequences keep their type; the rest is JSON text."""
    from zenmeta.integrations._otel_spans import attribute_value

    assert attribute_value(Uri("s3://x")) == "s3://x"
    assert type(attribute_value(Uri("s3://x"))) is str
    assert attribute_value(True) is True
    assert attribute_value(3) == 3
    assert attribute_value(("a", "b")) == ("a", "b")
    assert attribute_value({2, 1}) == (1, 2)
    assert attribute_value([1, "a"]) == '[1, "a"]'
    assert attribute_value(None) == "null"
    assert attribute_value({"k": [1]}) == '{"k": [1]}'
    assert attribute_value(2**70) == str(2**70)


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the OpenTelemetry SDK, creating a sink says to install zenmeta[otel]."""
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)
    with pytest.raises(zenmeta.MissingExtraError, match=r"zenmeta\[otel\]"):
        OpenTelemetrySink(InMemorySpanExporter())


def test_unused_sink_warns_about_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A sink created and shut down without records logs no warning."""
    caplog.set_level(logging.WARNING)
    sink = OpenTelemetrySink(InMemorySpanExporter())
    assert sink.force_flush()
    sink.shutdown()
    assert not caplog.records


EXITING_SCRIPT = """
import zenmeta

@zenmeta.track_step
def load():
    return 1

with zenmeta.pipeline_run("script"):
    load()
# no flush: the spans still queued are sent when the interpreter exits
"""


def test_spans_still_queued_are_sent_at_exit(receiver: Receiver, tmp_path: Any) -> None:
    """A script configured by variables alone delivers its spans as it exits."""
    import os
    import subprocess

    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ZENMETA_", "OTEL_"))},
        "ZENMETA_EXPORTERS": "otlp",
        "ZENMETA_STORE": "memory://",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # nothing leaves before the exit
    }
    subprocess.run(
        [sys.executable, "-c", EXITING_SCRIPT],
        env=environment,
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    assert sorted(span.name for _, span in receiver.spans()) == ["load", "script"]


def test_importing_the_integration_loads_no_opentelemetry() -> None:
    """Registering the component or naming the exporter costs nothing until used."""
    import subprocess

    code = (
        "import sys, zenmeta.integrations.opentelemetry; "
        "print([m for m in sys.modules if m.split('.')[0] == 'opentelemetry'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
