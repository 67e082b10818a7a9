"""What the tracking core hands to a store, and what readers get back.

The core writes immutable snapshots (``RunRecord``, ``StepRecord``) holding
already-encoded metadata, so a background writer never touches live user
objects. Readers get ``RecordedRun``/``RecordedStep`` with types restored.
Every store implements ``RecordStore`` (writing) and ``RecordReader``
(reading); ``Client`` and the CLI only ever use the reading side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from ._filters import Filter
    from ._values import MetadataType

from ._codec import MetadataSet, restore_value, round_trip_sets
from ._export import export_metadata

__all__ = [
    "Status",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "INTERRUPTED",
    "CRASHED",
    "STATUSES",
    "USER_SOURCE",
    "ComponentFault",
    "DroppedValue",
    "RunRecord",
    "StepRecord",
    "RecordStore",
    "RecordSink",
    "RecordReader",
    "RunQuery",
    "RunDeleter",
    "ALL_RUNS",
    "StepSummary",
    "summarize",
    "TaskSummary",
    "summarize_tasks",
    "MetadataRewrite",
    "MessageRewrite",
    "MetadataRewriter",
    "RecordedRun",
    "RecordedStep",
    "RunList",
    "StepList",
    "flatten_metadata",
    "decode_sets",
]

Status = Literal["running", "completed", "failed", "interrupted", "crashed"]
RUNNING: Status = "running"
COMPLETED: Status = "completed"
FAILED: Status = "failed"
INTERRUPTED: Status = "interrupted"
CRASHED: Status = "crashed"
STATUSES: tuple[Status, ...] = (RUNNING, COMPLETED, FAILED, INTERRUPTED, CRASHED)
"""Every status a run or step can read, in the order screens list them."""

USER_SOURCE = "user"
"""The source name of metadata logged by user code with ``log_metadata``."""

EncodedSets = Mapping[str, MetadataSet]
"""Metadata by source, then by key."""
_NO_METADATA: EncodedSets = MappingProxyType({})

# Records are named tuples, not dataclasses: as immutable, far cheaper to
# build on the step path, and ~1 ms less import time per class.


class ComponentFault(NamedTuple):
    """A component hook that raised; kept with the run or step it hit."""

    component: str
    hook: str
    error_type: str
    message: str


class DroppedValue(NamedTuple):
    """A metadata key that was not stored, and why."""

    source: str
    key: str
    reason: str


class RunRecord(NamedTuple):
    """A snapshot of a run, written at its start, on changes and at its end."""

    run_id: UUID
    name: str
    pipeline_name: str
    parent_run_id: UUID | None
    tags: tuple[str, ...]
    status: Status
    start_ns: int
    end_ns: int | None
    host: str
    pid: int
    process_start: float | None
    error_type: str | None = None
    error_message: str | None = None
    metadata: EncodedSets = _NO_METADATA
    faults: tuple[ComponentFault, ...] = ()
    dropped: tuple[DroppedValue, ...] = ()
    process_id: str | None = None
    """The owning process's minted id (``_process.PROCESS_ID``): a ``running``
    run is judged by that process's record, where the store has one."""

    def decoded_metadata(self) -> dict[str, dict[str, MetadataType]]:
        """The metadata by source, types restored, as a store would give it back."""
        return decode_sets(self.metadata)


class StepRecord(NamedTuple):
    """A finished step, written once with everything it collected; or, for a
    remote step (``save_step_started``), its *started* record: status
    ``running``, ``end_ns`` equal to ``start_ns``, superseded by the finished one."""

    step_run_id: UUID
    run_id: UUID
    parent_step_run_id: UUID | None
    name: str
    step_name: str
    status: Status
    start_ns: int
    end_ns: int
    error_type: str | None = None
    error_message: str | None = None
    metadata: EncodedSets = _NO_METADATA
    faults: tuple[ComponentFault, ...] = ()
    dropped: tuple[DroppedValue, ...] = ()
    process_id: str | None = None
    """The executing process's minted id; set for remote steps, whose unfinished
    record is judged by that process's liveness."""
    task_key: str | None = None
    """The engine's name for the task this execution belongs to (a Dask key)."""
    attempt: int | None = None
    """Which execution of that task this is, where the engine says."""

    def decoded_metadata(self) -> dict[str, dict[str, MetadataType]]:
        """The metadata by source, types restored, as a store would give it back."""
        return decode_sets(self.metadata)


@runtime_checkable
class RecordStore(Protocol):
    """The writing side of a store; the core's only dependency on storage."""

    url: str

    def save_run(self, record: RunRecord) -> None:
        """Insert or replace a run and its run-level metadata."""

    def save_step(self, record: StepRecord) -> None:
        """Insert a finished step with its metadata."""

    # Optional (both built-in stores have it): ``save_step_started(record)``
    # keeps a remote step's started record until its finished one arrives, so
    # that a step whose process dies reads ``crashed`` instead of vanishing.

    def flush(self) -> None:
        """Block until every accepted record is stored."""

    def close(self) -> None:
        """Flush and release resources; the store is not used afterwards."""


@runtime_checkable
class RecordSink(Protocol):
    """Anything that also receives the records a store gets, such as an exporter.

    Three methods, the shape of OpenTelemetry's ``SpanExporter``. ``export``
    is called on the step's own thread with each record as it is saved (a
    run several times: at its start, on changes and at its end, with
    ``end_ns`` set), so it must only hand the records on, never do slow work.
    """

    def export(self, records: Sequence[RunRecord | StepRecord]) -> None:
        """Take records; queue them for work elsewhere."""

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver everything taken so far, within the timeout; true on success."""

    def shutdown(self) -> None:
        """Deliver what is left and release resources; not used afterwards."""


class MetadataRewrite(NamedTuple):
    """One stored metadata set to replace (``zenmeta store scan --fix``), and
    the notes to add to its run's or step's dropped list."""

    kind: Literal["run", "step"]
    entity_id: UUID
    source: str
    metadata: MetadataSet
    notes: tuple[DroppedValue, ...] = ()


class MessageRewrite(NamedTuple):
    """A run's or step's error message and fault messages to replace (``store scan --fix``)."""

    kind: Literal["run", "step"]
    entity_id: UUID
    error_message: str | None
    faults: tuple[ComponentFault, ...]


@runtime_checkable
class MetadataRewriter(Protocol):
    """A store that can rewrite what it already holds (both built-in stores can)."""

    def rewrite_metadata(
        self, run_id: UUID, rewrites: Sequence[MetadataRewrite | MessageRewrite]
    ) -> None:
        """Replace the given metadata sets and messages of one run and its steps,
        in one transaction."""


class RecordedStep(NamedTuple):
    """A step as read back from a store, its metadata types restored."""

    id: UUID
    run_id: UUID
    parent_step_run_id: UUID | None
    name: str
    step_name: str
    status: Status
    start_time: datetime
    end_time: datetime
    error_type: str | None
    error_message: str | None
    metadata: Mapping[str, Mapping[str, MetadataType]]
    faults: tuple[ComponentFault, ...]
    dropped: tuple[DroppedValue, ...]
    process_id: str | None = None
    """The process that executed it (remote steps), as ``_process.PROCESS_ID`` there."""
    task_key: str | None = None
    """The engine's task this execution belongs to; executions of one task share it."""
    attempt: int | None = None
    """Which execution of its task this is, where the engine says."""
    late: bool = False
    """It finished after its run had ended: accepted and shown, the run not reopened."""

    @property
    def duration(self) -> float:
        """Seconds between start and end."""
        return (self.end_time - self.start_time).total_seconds()

    @property
    def flat_metadata(self) -> dict[str, MetadataType]:
        """All sources in one dict; a key several sources share appears as ``source.key``."""
        return flatten_metadata(self.metadata)

    def to_dict(self) -> dict[str, Any]:
        """This step as JSON-ready data, for exports and ``--json``.

        Ids are text, times ISO 8601 in UTC, durations seconds. ``metadata``
        holds JSON-safe values (tuples and sets as lists, a ``Uri`` as its
        text; NaN and infinities as the strings ``"NaN"``, ``"Infinity"`` and
        ``"-Infinity"``) and ``metadata_types`` each value's type name, so
        ``json.dumps(step.to_dict(), allow_nan=False)`` always succeeds.
        """
        values, types = export_metadata(self.metadata)
        return {
            "id": str(self.id),
            "run_id": str(self.run_id),
            "parent_step_run_id": _text_or_none(self.parent_step_run_id),
            "name": self.name,
            "step_name": self.step_name,
            "status": self.status,
            "start_time": self.start_time.isoformat(),
            "end_time": self.end_time.isoformat(),
            "duration": self.duration,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "metadata": values,
            "metadata_types": types,
            "faults": [fault._asdict() for fault in self.faults],
            "dropped": [drop._asdict() for drop in self.dropped],
            **self._remote_fields(),
        }

    def _remote_fields(self) -> dict[str, Any]:
        """``process_id``, ``task_key``, ``attempt`` for a step that ran remotely,
        ``late`` for one that finished after its run; nothing for the others, so
        exports of local runs read as they always have."""
        fields: dict[str, Any] = {}
        if self.process_id is not None or self.task_key is not None:
            fields.update(process_id=self.process_id, task_key=self.task_key, attempt=self.attempt)
        if self.late:
            fields["late"] = True
        return fields

    def _repr_html_(self) -> str:
        from ._ui.notebook import step_html

        return step_html(self)


class RecordedRun(NamedTuple):
    """A run as read back from a store, its metadata types restored."""

    id: UUID
    name: str
    pipeline_name: str
    parent_run_id: UUID | None
    tags: tuple[str, ...]
    status: Status
    start_time: datetime
    end_time: datetime | None
    host: str
    pid: int
    error_type: str | None
    error_message: str | None
    metadata: Mapping[str, Mapping[str, MetadataType]]
    faults: tuple[ComponentFault, ...]
    dropped: tuple[DroppedValue, ...]
    step_count: int = 0
    failed_step_count: int = 0
    """Steps that raised: a run can complete although some of its steps failed."""
    steps: Mapping[str, RecordedStep] = MappingProxyType({})
    """Its steps by invocation name, in execution order (``run.steps["train"]``,
    as in ZenML); read from the store on first use. ``Client`` fills it in."""

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or ``None`` while the run has no end."""
        if self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()

    @property
    def flat_metadata(self) -> dict[str, MetadataType]:
        """All sources in one dict; a key several sources share appears as ``source.key``."""
        return flatten_metadata(self.metadata)

    def to_dict(self) -> dict[str, Any]:
        """This run as JSON-ready data, for exports and ``--json``.

        The same conventions as ``RecordedStep.to_dict``: ids as text, ISO
        8601 times, JSON-safe metadata (NaN and infinities as the strings
        ``"NaN"``, ``"Infinity"``, ``"-Infinity"``) with ``metadata_types``.
        """
        values, types = export_metadata(self.metadata)
        return {
            "id": str(self.id),
            "name": self.name,
            "pipeline_name": self.pipeline_name,
            "parent_run_id": _text_or_none(self.parent_run_id),
            "tags": list(self.tags),
            "status": self.status,
            "start_time": self.start_time.isoformat(),
            "end_time": None if self.end_time is None else self.end_time.isoformat(),
            "duration": self.duration,
            "host": self.host,
            "pid": self.pid,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "step_count": self.step_count,
            "metadata": values,
            "metadata_types": types,
            "faults": [fault._asdict() for fault in self.faults],
            "dropped": [drop._asdict() for drop in self.dropped],
        }

    def _repr_html_(self) -> str:
        from ._ui.notebook import run_html

        return run_html(self)


class RunList(list[RecordedRun]):
    """A plain list of runs, shown as a table in Jupyter."""

    store_url: str = ""
    """The store it was read from, named when the list is empty; set by ``Client``."""

    def _repr_html_(self) -> str:
        from ._ui.notebook import runs_table_html

        return runs_table_html(self)


class StepList(list[RecordedStep]):
    """A plain list of steps, shown as a table in Jupyter."""

    def _repr_html_(self) -> str:
        from ._ui.notebook import steps_table_html

        return steps_table_html(self)


class RunQuery(NamedTuple):
    """Which runs a reader wants, as one value every store understands.

    ``Client.list_runs`` builds it from its keyword arguments; stores push it
    into their own query language. Filters to come (metadata queries) are
    new fields here, not new parameters in every store's signature.
    """

    pipeline: str | None = None
    status: str | None = None
    """``crashed`` finds runs whose process died while they ran."""
    since: datetime | None = None
    limit: int | None = None
    offset: int = 0
    where: Filter | None = None
    """A parsed ``where`` filter (``Client`` parses the text)."""
    with_metadata: bool = True
    """False when only the runs' own fields are wanted (pruning 50,000 runs)."""


class StepSummary(NamedTuple):
    """One step name's executions in a run with one status: how many, how long in all."""

    step_name: str
    status: str
    executions: int
    seconds: float


def summarize(steps: Iterable[tuple[str, str, float]]) -> list[StepSummary]:
    """``(step name, status, seconds)`` in start order, counted by name and
    status in order of first start: what a store without SQL reports."""
    totals: dict[tuple[str, str], list[float]] = {}
    for name, status, seconds in steps:
        total = totals.setdefault((name, status), [0, 0.0])
        total[0] += 1
        total[1] += seconds
    return [StepSummary(name, status, int(n), t) for (name, status), (n, t) in totals.items()]


class TaskSummary(NamedTuple):
    """The executions of one task (one task key) in a run: Dask recomputes and
    retries, so one call can be several steps, each with its own status."""

    task_key: str
    step_name: str
    executions: int
    statuses: tuple[tuple[str, int], ...]
    """How many executions ended in each status, in order of first appearance."""


def summarize_tasks(steps: Iterable[tuple[str | None, str, str]]) -> list[TaskSummary]:
    """``(task key, step name, status)`` in start order, grouped by task key in
    order of first execution; steps without a task key are left out."""
    grouped: dict[str, tuple[str, dict[str, int]]] = {}
    for task_key, step_name, status in steps:
        if task_key is None:
            continue
        counts = grouped.setdefault(task_key, (step_name, {}))[1]
        counts[status] = counts.get(status, 0) + 1
    return [
        TaskSummary(key, name, sum(counts.values()), tuple(counts.items()))
        for key, (name, counts) in grouped.items()
    ]


ALL_RUNS = RunQuery()
"""Every run, newest first: the default query."""


@runtime_checkable
class RecordReader(Protocol):
    """The reading side of a store, used by ``Client``, the CLI and the UI."""

    def list_runs(self, query: RunQuery = ALL_RUNS) -> list[RecordedRun]:
        """Runs matching ``query``, newest first."""

    def find_runs(self, ref: str) -> list[RecordedRun]:
        """Runs whose id, id prefix or name match ``ref``."""

    def list_steps(
        self,
        run_id: UUID,
        *,
        limit: int | None = None,
        offset: int = 0,
        where: Filter | None = None,
    ) -> list[RecordedStep]:
        """A run's steps in execution (start) order."""

    def find_steps(
        self, where: Filter | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[RecordedStep]:
        """Steps of every run, newest first."""

    def get_step(self, step_run_id: UUID) -> RecordedStep | None:
        """One step by id."""


_SCALAR_TYPES = (str, int, float, bool, type(None))


def decode_sets(sets: EncodedSets) -> dict[str, dict[str, MetadataType]]:
    """Metadata sets by source with types restored: scalars directly (they are
    immutable), any set holding a container through its JSON and back, so
    that the caller never shares a list or dict with the record."""
    decoded: dict[str, dict[str, MetadataType]] = {}
    for source, values in sets.items():
        if all(type(value) in _SCALAR_TYPES for value in values.values.values()):
            types = values.types
            decoded[source] = {
                key: restore_value(value, types.get(key, ""))
                for key, value in values.values.items()
            }
        else:
            decoded.update(round_trip_sets({source: values}))
    return decoded


@runtime_checkable
class RunDeleter(Protocol):
    """A store that can prune runs (``Client.delete_runs``, ``zenmeta store gc``)."""

    def delete_runs(self, run_ids: Sequence[UUID]) -> int:
        """Delete runs with their steps, metadata and child runs, all at once; how many."""

    def vacuum(self) -> None:
        """Give freed space back, where the store can."""


def _text_or_none(value: object | None) -> str | None:
    return None if value is None else str(value)


def flatten_metadata(grouped: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One dict of all sources; a key several sources share is qualified.

    A key that only one source has appears as is; a key that several have
    appears once per source as ``"source.key"``, so a collision hides nothing.
    """
    owners: dict[str, int] = {}
    for values in grouped.values():
        for key in values:
            owners[key] = owners.get(key, 0) + 1
    flat: dict[str, Any] = {}
    for source, values in grouped.items():
        for key, value in values.items():
            flat[key if owners[key] == 1 else f"{source}.{key}"] = value
    return flat
