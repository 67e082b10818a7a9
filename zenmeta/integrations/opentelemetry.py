"""OpenTelemetry both ways: runs and steps exported as spans, and the active
trace recorded on each run and step.

- ``OpenTelemetrySink`` is a record sink (``zenmeta.configure(exporters=[...])``)
  that hands runs and steps to any ``SpanExporter`` through OpenTelemetry's
  own ``BatchSpanProcessor``: a bounded queue drained by its own thread. The
  step's thread only appends the record to that queue; the span is built on
  the processor's thread, just before export, so a slow, failing or hanging
  exporter never slows or breaks a step.
- ``OpenTelemetryComponent`` (flavor ``opentelemetry``) records the trace id
  and span id active when each run starts and each step runs, so a zenmeta
  record leads to its trace, and so the exported run span becomes a child of
  the span that was active when the run started.

This module imports only the public ``zenmeta`` API; OpenTelemetry itself is
imported when a sink or a component is created (extra ``zenmeta[otel]``).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from zenmeta import (
    ComponentFault,
    ConfigurationError,
    MetadataType,
    MissingExtraError,
    RunRecord,
    StackComponent,
    StepRecord,
    StepRunInfo,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "OpenTelemetrySink",
    "OpenTelemetryComponent",
    "otlp_sink",
    "trace_id_of",
    "span_id_of",
    "CONTEXT_SOURCE",
]

CONTEXT_SOURCE = "opentelemetry"
"""The metadata source under which the component records the active span."""

_logger = logging.getLogger("zenmeta")


def _require(module: str, package: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError(package, "otel")


def trace_id_of(run_id: UUID) -> int:
    """The trace id of a run that started outside any span: its 128-bit id."""
    return run_id.int


def span_id_of(record_id: UUID) -> int:
    """The span id of a run or step: the low 64 bits of its id, never zero
    (a UUID's variant bits live there)."""
    return record_id.int & 0xFFFF_FFFF_FFFF_FFFF


class _Pending:
    """A record waiting in the processor's queue; the processor reads only
    ``context.trace_flags.sampled`` before queueing it."""

    __slots__ = ("record",)
    context: Any = None  # a sampled SpanContext, set when the first sink is created

    def __init__(self, record: RunRecord | StepRecord) -> None:
        self.record = record


class OpenTelemetrySink:
    """Export finished runs and steps as OpenTelemetry spans to ``exporter``.

    A run is a span whose children are its steps (a step called inside a
    step is nested under it); a failed or interrupted one has status
    ``ERROR`` with its error message and an ``exception`` event. Metadata
    become attributes ``zenmeta.<source>.<key>``; the run's environment
    becomes the resource (``service.name`` is the pipeline's name unless
    ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` or ``resource`` say
    otherwise). The trace id is the run id, so exporting the same records
    twice gives the same trace; a run that started inside an active span
    (recorded by ``OpenTelemetryComponent``) joins that span's trace as its
    child, and a nested run joins its parent run's trace.

    The queue options are ``BatchSpanProcessor``'s (and its ``OTEL_BSP_*``
    variables). When the queue is full the oldest spans are dropped, with
    OpenTelemetry's warning. An export that raises or fails is warned about
    once and kept in ``faults``; ``failed_spans`` counts the spans it lost.
    """

    name = "opentelemetry"

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        resource: Resource | None = None,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
        context_source: str = CONTEXT_SOURCE,
        environment_source: str = "environment",
    ) -> None:
        _require("opentelemetry.sdk", "opentelemetry-sdk")
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from . import _otel_spans

        if _Pending.context is None:
            _Pending.context = _otel_spans.SAMPLED
        self.exporter = exporter
        self.faults: list[ComponentFault] = []
        self.failed_spans = 0
        self._lock = threading.Lock()
        builder = _otel_spans.SpanBuilder(
            exporter, self._failed, resource, context_source, environment_source
        )
        self._processor = BatchSpanProcessor(
            builder,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
        )
        self._on_end = self._processor.on_end

    def export(self, records: Sequence[RunRecord | StepRecord]) -> None:
        """Queue the records; the spans are built and sent on the processor's thread."""
        on_end = self._on_end
        for record in records:
            on_end(_Pending(record))  # type: ignore[arg-type]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Build and export everything queued so far."""
        return bool(self._processor.force_flush(timeout_millis))

    def shutdown(self) -> None:
        """Export what is left, then shut the exporter down."""
        self._processor.shutdown()  # type: ignore[no-untyped-call]

    def _failed(self, hook: str, error: BaseException, spans: int) -> None:
        """Called on the processor's thread: warn once per cause, keep the fault."""
        fault = ComponentFault(f"exporter:{self.name}", hook, type(error).__name__, str(error))
        with self._lock:
            self.failed_spans += spans
            if fault in self.faults:
                return
            if len(self.faults) < 100:
                self.faults.append(fault)
        _logger.warning(
            "zenmeta: exporting spans to %s failed (%s: %s); %d span(s) lost, "
            "records are still stored",
            type(self.exporter).__name__,
            fault.error_type,
            fault.message,
            spans,
        )


def otlp_sink() -> OpenTelemetrySink:
    """An ``OpenTelemetrySink`` over OTLP/HTTP, configured by OpenTelemetry's
    own ``OTEL_EXPORTER_OTLP_*`` variables; what ``ZENMETA_EXPORTERS=otlp`` builds."""
    import os

    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol.strip().lower() == "grpc":
        raise ConfigurationError(
            "ZENMETA_EXPORTERS=otlp sends OTLP over HTTP (http/protobuf); for gRPC, build "
            "OpenTelemetrySink(OTLPSpanExporter()) from opentelemetry-exporter-otlp-proto-grpc"
        )
    _require("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OpenTelemetrySink(OTLPSpanExporter())


class OpenTelemetryComponent(StackComponent):
    """Record the active OpenTelemetry trace on each run and step.

    Under the source ``opentelemetry``: ``trace_id`` (32 hex digits) and
    ``span_id`` (16 hex digits) of the span active when the run started or
    the step ran; nothing when no span is active. ``OpenTelemetrySink``
    reads the run's pair to make the run span a child of that span.
    """

    flavor = CONTEXT_SOURCE

    def __init__(self, name: str | None = None) -> None:
        _require("opentelemetry.trace", "opentelemetry-api")
        from opentelemetry import trace

        super().__init__(name)
        self._current_span = trace.get_current_span

    def _active(self) -> dict[str, MetadataType]:
        context = self._current_span().get_span_context()
        if not context.is_valid:
            return {}
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}

    def get_pipeline_run_metadata(self, run_id: UUID) -> dict[str, MetadataType]:
        """The span active when the run starts."""
        return self._active()

    def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, MetadataType]:
        """The span active around the step (spans the step opened have ended)."""
        return self._active()
