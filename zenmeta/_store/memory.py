"""A store that keeps records in memory, for tests and throwaway sessions.

It still encodes every metadata set to JSON text and decodes it on read, so
a test sees exactly the types a database store would give back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from uuid import UUID

from .. import _process
from .._codec import round_trip_sets
from .._filters import Filter, matches
from .._info import utc_from_ns
from .._records import (
    ALL_RUNS,
    CRASHED,
    RUNNING,
    MessageRewrite,
    MetadataRewrite,
    RecordedRun,
    RecordedStep,
    RunQuery,
    RunRecord,
    StepRecord,
    StepSummary,
    TaskSummary,
    summarize,
    summarize_tasks,
)
from .liveness import ProcessFacts, own_facts, process_is_gone

__all__ = ["InMemoryStore"]

_Record = TypeVar("_Record", RunRecord, StepRecord)


def _rewritten(record: _Record, change: MetadataRewrite | MessageRewrite) -> _Record:
    """A record with one metadata set, or its messages, replaced."""
    if isinstance(change, MessageRewrite):
        return record._replace(error_message=change.error_message, faults=change.faults)
    metadata = {**record.metadata, change.source: change.metadata.copy()}
    dropped = record.dropped + tuple(n for n in change.notes if n not in record.dropped)
    return record._replace(metadata=metadata, dropped=dropped)


class InMemoryStore:
    """Records runs and steps in this process's memory; readable at once.

    As the SQL stores do, it keeps the started records of remote steps until
    their finished ones arrive, and the facts of the process that wrote them:
    a started step whose process is gone (here: this store was closed, which
    records the clean exit) reads ``crashed``, and so does a ``running`` run.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._runs: dict[UUID, RunRecord] = {}
        self._steps: dict[UUID, list[StepRecord]] = {}
        self._started: dict[UUID, StepRecord] = {}
        self._processes: dict[str, ProcessFacts] = {}
        self._lock = threading.Lock()

    # writing -----------------------------------------------------------
    def save_run(self, record: RunRecord) -> None:
        with self._lock:
            self._runs[record.run_id] = record
            self._steps.setdefault(record.run_id, [])
            self._know(record.process_id)

    def save_step(self, record: StepRecord) -> None:
        with self._lock:
            self._steps.setdefault(record.run_id, []).append(record)
            if record.process_id is not None:
                self._started.pop(record.step_run_id, None)

    def save_step_started(self, record: StepRecord) -> None:
        """Keep a remote step's started record until its finished one arrives."""
        with self._lock:
            self._started[record.step_run_id] = record
            self._know(record.process_id)

    def _know(self, process_id: str | None) -> None:
        """Record this process the first time one of its records names it."""
        if process_id == _process.PROCESS_ID and process_id not in self._processes:
            self._processes[process_id] = own_facts(time.time_ns())

    def flush(self) -> None:
        """Nothing is queued: every record is stored when it is saved."""

    def close(self) -> None:
        """Memory needs no closing; records stay readable. This process's
        clean exit is recorded, as a SQL store records it."""
        with self._lock:
            own = self._processes.get(_process.PROCESS_ID)
            if own is not None and own.exit_ns is None:
                self._processes[own.process_id] = own._replace(exit_ns=time.time_ns())

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()
            self._steps.clear()
            self._started.clear()
            self._processes.clear()

    def delete_runs(self, run_ids: Sequence[UUID]) -> int:
        """Delete runs with their steps and child runs, at once."""
        with self._lock:
            doomed = set(run_ids)
            while True:
                children = {
                    r.run_id for r in self._runs.values() if r.parent_run_id in doomed
                } - doomed
                if not children:
                    break
                doomed |= children
            for run_id in doomed:
                self._runs.pop(run_id, None)
                self._steps.pop(run_id, None)
            for step_id, started in list(self._started.items()):
                if started.run_id in doomed:
                    del self._started[step_id]
        return len(doomed)

    def vacuum(self) -> None:
        """Memory has nothing to give back."""

    def rewrite_metadata(
        self, run_id: UUID, rewrites: Sequence[MetadataRewrite | MessageRewrite]
    ) -> None:
        """Replace metadata sets and messages of one run and its steps, at once."""
        with self._lock:
            for change in rewrites:
                if change.kind == "run":
                    run = self._runs[run_id]
                    self._runs[run_id] = _rewritten(run, change)
                    continue
                steps = self._steps.get(run_id, [])
                for index, step in enumerate(steps):
                    if step.step_run_id == change.entity_id:
                        steps[index] = _rewritten(step, change)

    # reading -----------------------------------------------------------
    def list_runs(self, query: RunQuery = ALL_RUNS) -> list[RecordedRun]:
        with self._lock:
            records = list(self._runs.values())
        records.sort(key=lambda r: r.start_ns, reverse=True)
        since = query.since
        chosen = [
            r
            for r in records
            if (query.pipeline is None or r.pipeline_name == query.pipeline)
            and (since is None or utc_from_ns(r.start_ns) >= since)
        ]
        found = [self._run(r) for r in chosen]  # the filter reads restored types
        if query.status is not None:  # as read: a dead owner's run is crashed
            found = [run for run in found if run.status == query.status]
        if query.where is not None:
            found = [run for run in found if matches(query.where, run)]
        end = None if query.limit is None else query.offset + query.limit
        return found[query.offset : end]

    def find_runs(self, ref: str) -> list[RecordedRun]:
        with self._lock:
            records = list(self._runs.values())
        exact = [r for r in records if str(r.run_id) == ref or r.name == ref]
        if exact:
            return [self._run(r) for r in exact]
        prefix = ref.lower().replace("-", "")
        return [self._run(r) for r in records if prefix and r.run_id.hex.startswith(prefix)]

    def list_steps(
        self,
        run_id: UUID,
        *,
        limit: int | None = None,
        offset: int = 0,
        where: Filter | None = None,
    ) -> list[RecordedStep]:
        with self._lock:
            records = self._with_started(self._steps.get(run_id, []), run_id)
        records.sort(key=lambda s: s.start_ns)
        return self._page(records, limit, offset, where)

    def summarize_steps(self, run_id: UUID) -> list[StepSummary]:
        """A run's steps counted by name and status, in order of first start."""
        with self._lock:
            records = self._with_started(self._steps.get(run_id, []), run_id)
        records.sort(key=lambda s: s.start_ns)
        return summarize((s.step_name, s.status, (s.end_ns - s.start_ns) / 1e9) for s in records)

    def summarize_tasks(self, run_id: UUID) -> list[TaskSummary]:
        """A run's executions grouped by task key, in order of first execution."""
        with self._lock:
            keyed = [s for s in self._steps.get(run_id, ()) if s.task_key is not None]
            records = self._with_started(keyed, run_id)
        records.sort(key=lambda s: s.start_ns)
        return summarize_tasks((s.task_key, s.step_name, s.status) for s in records)

    def find_steps(
        self, where: Filter | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[RecordedStep]:
        with self._lock:
            records = [step for steps in self._steps.values() for step in steps]
            records += self._with_started([], None)
        records.sort(key=lambda s: s.start_ns, reverse=True)
        return self._page(records, limit, offset, where)

    def get_step(self, step_run_id: UUID) -> RecordedStep | None:
        with self._lock:
            for steps in self._steps.values():
                for step in steps:
                    if step.step_run_id == step_run_id:
                        return self._step(step)
            started = self._started.get(step_run_id)
            if started is not None:
                return self._step(self._judged(started))
        return None

    def _page(
        self, records: list[StepRecord], limit: int | None, offset: int, where: Filter | None
    ) -> list[RecordedStep]:
        """One page of steps as read; without a filter, only that page is built."""
        end = None if limit is None else offset + limit
        if where is None:
            return [self._step(s) for s in records[offset:end]]
        found = [step for step in (self._step(s) for s in records) if matches(where, step)]
        return found[offset:end]

    def _with_started(self, records: list[StepRecord], run_id: UUID | None) -> list[StepRecord]:
        """``records`` and the unfinished started steps (of one run, or all),
        each ``running`` or, when its process is gone, ``crashed``. Under the lock."""
        return list(records) + [
            self._judged(started)
            for started in self._started.values()
            if run_id is None or started.run_id == run_id
        ]

    def _judged(self, started: StepRecord) -> StepRecord:
        if self._gone(started.process_id):
            return started._replace(status=CRASHED)
        return started

    def _gone(self, process_id: str | None) -> bool:
        facts = None if process_id is None else self._processes.get(process_id)
        return facts is not None and process_is_gone(facts, time.time_ns())

    def _run(self, r: RunRecord) -> RecordedRun:
        status = r.status
        if status == RUNNING and self._gone(r.process_id):
            status = CRASHED
        started = sum(s.run_id == r.run_id for s in self._started.values())
        return RecordedRun(
            id=r.run_id,
            name=r.name,
            pipeline_name=r.pipeline_name,
            parent_run_id=r.parent_run_id,
            tags=r.tags,
            status=status,
            start_time=utc_from_ns(r.start_ns),
            end_time=None if r.end_ns is None else utc_from_ns(r.end_ns),
            host=r.host,
            pid=r.pid,
            error_type=r.error_type,
            error_message=r.error_message,
            metadata=round_trip_sets(r.metadata),
            faults=r.faults,
            dropped=r.dropped,
            step_count=len(self._steps.get(r.run_id, ())) + started,
            failed_step_count=sum(s.status == "failed" for s in self._steps.get(r.run_id, ())),
        )

    def _step(self, s: StepRecord) -> RecordedStep:
        run = self._runs.get(s.run_id)
        late = run is not None and run.end_ns is not None and s.end_ns > run.end_ns
        return RecordedStep(
            id=s.step_run_id,
            run_id=s.run_id,
            parent_step_run_id=s.parent_step_run_id,
            name=s.name,
            step_name=s.step_name,
            status=s.status,
            start_time=utc_from_ns(s.start_ns),
            end_time=utc_from_ns(s.end_ns),
            error_type=s.error_type,
            error_message=s.error_message,
            metadata=round_trip_sets(s.metadata),
            faults=s.faults,
            dropped=s.dropped,
            process_id=s.process_id,
            task_key=s.task_key,
            attempt=s.attempt,
            late=late and s.status not in (RUNNING, CRASHED),
        )
