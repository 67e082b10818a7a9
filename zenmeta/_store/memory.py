"""A store that keeps records in memory, for tests and throwaway sessions.

It still encodes every metadata set to JSON text and decodes it on read, so
a test sees exactly the types a database store would give back.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from uuid import UUID

from .._codec import round_trip_sets
from .._filters import Filter, matches
from .._info import utc_from_ns
from .._records import (
    ALL_RUNS,
    MessageRewrite,
    MetadataRewrite,
    RecordedRun,
    RecordedStep,
    RunQuery,
    RunRecord,
    StepRecord,
    StepSummary,
    summarize,
)

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
    """Records runs and steps in this process's memory; readable at once."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._runs: dict[UUID, RunRecord] = {}
        self._steps: dict[UUID, list[StepRecord]] = {}
        self._lock = threading.Lock()

    # writing -----------------------------------------------------------
    def save_run(self, record: RunRecord) -> None:
        with self._lock:
            self._runs[record.run_id] = record
            self._steps.setdefault(record.run_id, [])

    def save_step(self, record: StepRecord) -> None:
        with self._lock:
            self._steps.setdefault(record.run_id, []).append(record)

    def flush(self) -> None:
        """Nothing is queued: every record is stored when it is saved."""

    def close(self) -> None:
        """Memory needs no closing; records stay readable."""

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()
            self._steps.clear()

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
            and (query.status is None or r.status == query.status)
            and (since is None or utc_from_ns(r.start_ns) >= since)
        ]
        found = [self._run(r) for r in chosen]  # the filter reads restored types
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
            records = sorted(self._steps.get(run_id, []), key=lambda s: s.start_ns)
        return _page([self._step(s) for s in records], limit, offset, where)

    def summarize_steps(self, run_id: UUID) -> list[StepSummary]:
        """A run's steps counted by name and status, in order of first start."""
        with self._lock:
            records = sorted(self._steps.get(run_id, []), key=lambda s: s.start_ns)
        return summarize((s.step_name, s.status, (s.end_ns - s.start_ns) / 1e9) for s in records)

    def find_steps(
        self, where: Filter | None = None, *, limit: int | None = None, offset: int = 0
    ) -> list[RecordedStep]:
        with self._lock:
            records = [step for steps in self._steps.values() for step in steps]
        records.sort(key=lambda s: s.start_ns, reverse=True)
        return _page([self._step(s) for s in records], limit, offset, where)

    def get_step(self, step_run_id: UUID) -> RecordedStep | None:
        with self._lock:
            for steps in self._steps.values():
                for step in steps:
                    if step.step_run_id == step_run_id:
                        return self._step(step)
        return None

    def _run(self, r: RunRecord) -> RecordedRun:
        return RecordedRun(
            id=r.run_id,
            name=r.name,
            pipeline_name=r.pipeline_name,
            parent_run_id=r.parent_run_id,
            tags=r.tags,
            status=r.status,
            start_time=utc_from_ns(r.start_ns),
            end_time=None if r.end_ns is None else utc_from_ns(r.end_ns),
            host=r.host,
            pid=r.pid,
            error_type=r.error_type,
            error_message=r.error_message,
            metadata=round_trip_sets(r.metadata),
            faults=r.faults,
            dropped=r.dropped,
            step_count=len(self._steps.get(r.run_id, ())),
            failed_step_count=sum(s.status == "failed" for s in self._steps.get(r.run_id, ())),
        )

    @staticmethod
    def _step(s: StepRecord) -> RecordedStep:
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
        )


def _page(
    found: list[RecordedStep], limit: int | None, offset: int, where: Filter | None
) -> list[RecordedStep]:
    if where is not None:
        found = [step for step in found if matches(where, step)]
    return found[offset : None if limit is None else offset + limit]
