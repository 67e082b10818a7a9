"""Turning zenmeta records into OpenTelemetry spans, on the processor's thread.

``SpanBuilder`` is the ``SpanExporter`` that ``BatchSpanProcessor`` drains
into: it receives the queued records, builds one ``ReadableSpan`` per
finished run or step, and passes them to the user's exporter. Records arrive
in the order they were saved, so a run's start record (which carries the
active span recorded by the ``opentelemetry`` component, and its
environment) is always seen before its steps. Imported only when a sink is
created: it imports the OpenTelemetry SDK.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

import zenmeta
from zenmeta import MetadataType, RunRecord, StepRecord

from .opentelemetry import span_id_of, trace_id_of

__all__ = ["SAMPLED", "SpanBuilder", "attribute_value"]

SAMPLED = SpanContext(0, 0, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
_FLAGS = TraceFlags(TraceFlags.SAMPLED)
_SCOPE = InstrumentationScope("zenmeta", zenmeta.__version__)
_UNSET = Status(StatusCode.UNSET)
_INT64 = (-(2**63), 2**63 - 1)
_REMEMBERED_RUNS = 4096

# environment component key -> OpenTelemetry resource semantic convention
_RESOURCE_KEYS = {
    "hostname": "host.name",
    "machine": "host.arch",
    "platform": "os.description",
    "python_implementation": "process.runtime.name",
    "python_version": "process.runtime.version",
    "executable": "process.executable.path",
    "user": "process.owner",
    "git_commit": "vcs.ref.head.revision",
    "git_branch": "vcs.ref.head.name",
    "git_remote": "vcs.repository.url.full",
    "zenmeta_version": "zenmeta.version",
}

Failed = Callable[[str, BaseException, int], None]


def _scalar(value: object) -> bool | int | float | str | None:
    """The attribute form of a scalar, or ``None`` when it has none."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if _INT64[0] <= value <= _INT64[1] else None
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)  # a Uri or Path travels as plain text
    return None


def _json_default(value: object) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def attribute_value(value: MetadataType) -> Any:
    """An OpenTelemetry attribute for a metadata value: itself when it is a
    str, bool, int or float, a tuple for a homogeneous sequence of those,
    JSON text otherwise (``None``, mappings, mixed or nested sequences)."""
    scalar = _scalar(value)
    if scalar is not None:
        return scalar
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        converted = tuple(_scalar(item) for item in items)
        kinds = {type(item) for item in converted}
        if len(kinds) <= 1 and type(None) not in kinds:
            return converted
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _attributes(into: dict[str, Any], metadata: Mapping[str, Mapping[str, MetadataType]]) -> None:
    for source, values in metadata.items():
        for key, value in values.items():
            into[f"zenmeta.{source}.{key}"] = attribute_value(value)


def _events(record: RunRecord | StepRecord, end_ns: int) -> list[Event]:
    events = []
    if record.error_type is not None:
        attributes = {"exception.type": record.error_type}
        if record.error_message:
            attributes["exception.message"] = record.error_message
        events.append(Event("exception", attributes, end_ns))
    for fault in record.faults:
        fault_attributes = {
            "zenmeta.component": fault.component,
            "zenmeta.hook": fault.hook,
            "exception.type": fault.error_type,
            "exception.message": fault.message,
        }
        events.append(Event("zenmeta.component_fault", fault_attributes, end_ns))
    for drop in record.dropped:
        drop_attributes = {
            "zenmeta.source": drop.source,
            "zenmeta.key": drop.key,
            "zenmeta.reason": drop.reason,
        }
        events.append(Event("zenmeta.dropped_value", drop_attributes, end_ns))
    return events


def _status(record: RunRecord | StepRecord) -> Status:
    if record.status == "completed":
        return _UNSET  # instrumentation leaves OK to the application
    return Status(StatusCode.ERROR, record.error_message or record.error_type or record.status)


def _active_span(values: Mapping[str, MetadataType] | None) -> tuple[int, int] | None:
    """The (trace id, span id) the ``opentelemetry`` component recorded, if valid."""
    if not values:
        return None
    trace_text, span_text = values.get("trace_id"), values.get("span_id")
    if not isinstance(trace_text, str) or not isinstance(span_text, str):
        return None
    try:
        trace_id, span_id = int(trace_text, 16), int(span_text, 16)
    except ValueError:
        return None
    if not (0 < trace_id < 2**128 and 0 < span_id < 2**64):
        return None
    return trace_id, span_id


class SpanBuilder(SpanExporter):
    """Builds spans from queued records and hands them to ``exporter``."""

    def __init__(
        self,
        exporter: SpanExporter,
        failed: Failed,
        resource: Resource | None,
        context_source: str,
        environment_source: str,
    ) -> None:
        self.exporter = exporter
        self._failed = failed
        self._context_source = context_source
        self._environment_source = environment_source
        base = resource if resource is not None else Resource.create()
        self._overrides = {
            key: value
            for key, value in base.attributes.items()
            if not (key == "service.name" and str(value).startswith("unknown_service"))
        }
        self._fallback = Resource({"service.name": "zenmeta", **self._overrides})
        # by run id: (trace id, resource), for the steps that follow; bounded
        self._runs: OrderedDict[Any, tuple[int, Resource]] = OrderedDict()

    # -- SpanExporter ---------------------------------------------------------
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        built: list[ReadableSpan] = []
        for pending in spans:
            try:
                span = self._build(pending.record)
            except Exception as error:  # one odd record never loses the batch
                self._failed("build", error, 1)
                continue
            if span is not None:
                built.append(span)
        if not built:
            return SpanExportResult.SUCCESS
        try:
            result = self.exporter.export(built)
        except Exception as error:
            self._failed("export", error, len(built))
            return SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._failed("export", RuntimeError(f"the exporter returned {result}"), len(built))
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.exporter.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self.exporter.shutdown()

    # -- records to spans -----------------------------------------------------
    def _build(self, record: RunRecord | StepRecord) -> ReadableSpan | None:
        if isinstance(record, StepRecord):
            return self._step(record)
        return self._run(record)

    def _remember(self, run_id: Any, trace_id: int, resource: Resource) -> None:
        self._runs[run_id] = (trace_id, resource)
        self._runs.move_to_end(run_id)
        if len(self._runs) > _REMEMBERED_RUNS:
            self._runs.popitem(last=False)

    def _run(self, record: RunRecord) -> ReadableSpan | None:
        metadata = record.decoded_metadata()
        active = _active_span(metadata.get(self._context_source))
        parent_span: int | None = None
        if record.parent_run_id is not None:
            known = self._runs.get(record.parent_run_id)
            if known is not None:
                trace_id = known[0]
            elif active is not None:
                trace_id = active[0]
            else:
                trace_id = trace_id_of(record.parent_run_id)
            parent_span = span_id_of(record.parent_run_id)
        elif active is not None:
            trace_id, parent_span = active
        else:
            trace_id = trace_id_of(record.run_id)
        resource = self._resource(record, metadata.get(self._environment_source, {}))
        self._remember(record.run_id, trace_id, resource)
        if record.end_ns is None:
            return None  # a running run's span is sent once, when it ends
        attributes: dict[str, Any] = {
            "zenmeta.run_id": str(record.run_id),
            "zenmeta.run_name": record.name,
            "zenmeta.pipeline": record.pipeline_name,
            "zenmeta.status": record.status,
        }
        if record.tags:
            attributes["zenmeta.tags"] = tuple(record.tags)
        if record.parent_run_id is not None:
            attributes["zenmeta.parent_run_id"] = str(record.parent_run_id)
        if record.error_type is not None:
            attributes["zenmeta.error_type"] = record.error_type
        _attributes(attributes, metadata)
        return self._span(
            record.pipeline_name,
            trace_id,
            span_id_of(record.run_id),
            parent_span,
            resource,
            attributes,
            record,
            record.end_ns,
        )

    def _step(self, record: StepRecord) -> ReadableSpan:
        known = self._runs.get(record.run_id)
        if known is None:
            trace_id, resource = trace_id_of(record.run_id), self._fallback
        else:
            trace_id, resource = known
        parent = record.parent_step_run_id
        attributes: dict[str, Any] = {
            "zenmeta.run_id": str(record.run_id),
            "zenmeta.step_run_id": str(record.step_run_id),
            "zenmeta.step_name": record.step_name,
            "zenmeta.invocation": record.name,
            "zenmeta.status": record.status,
        }
        if record.error_type is not None:
            attributes["zenmeta.error_type"] = record.error_type
        _attributes(attributes, record.decoded_metadata())
        parent_span = span_id_of(record.run_id if parent is None else parent)
        return self._span(
            record.step_name,
            trace_id,
            span_id_of(record.step_run_id),
            parent_span,
            resource,
            attributes,
            record,
            record.end_ns,
        )

    @staticmethod
    def _span(
        name: str,
        trace_id: int,
        span_id: int,
        parent_span: int | None,
        resource: Resource,
        attributes: dict[str, Any],
        record: RunRecord | StepRecord,
        end_ns: int,
    ) -> ReadableSpan:
        parent = None
        if parent_span is not None:
            parent = SpanContext(trace_id, parent_span, is_remote=False, trace_flags=_FLAGS)
        return ReadableSpan(
            name,
            context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=_FLAGS),
            parent=parent,
            resource=resource,
            attributes=attributes,
            events=_events(record, end_ns),
            kind=SpanKind.INTERNAL,
            status=_status(record),
            start_time=record.start_ns,
            end_time=end_ns,
            instrumentation_scope=_SCOPE,
        )

    def _resource(self, record: RunRecord, environment: Mapping[str, MetadataType]) -> Resource:
        """The run's environment as resource attributes; configured ones win."""
        attributes: dict[str, Any] = {
            "service.name": record.pipeline_name,
            "host.name": record.host,
            "process.pid": record.pid,
        }
        for key, name in _RESOURCE_KEYS.items():
            value = _scalar(environment.get(key))
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                attributes[name] = value
        attributes.update(self._overrides)
        return Resource(attributes)
