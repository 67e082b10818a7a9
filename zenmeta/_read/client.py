"""``Client``: the public read API over any store.

The CLI, the dashboard and notebooks read only through this class, so every
reader sees the same statuses (a dead writer's run reads ``crashed``) and
the same restored types.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime, timedelta
    from uuid import UUID

    from .diff import RunDiff
    from .scan import SecretFinding

from .._config import settings
from .._errors import RunNotFoundError, RunStateError, StoreError
from .._filters import And, Compare, Field, Filter, ns_of
from .._records import (
    RUNNING,
    RecordedRun,
    RecordedStep,
    RecordReader,
    RunDeleter,
    RunList,
    RunQuery,
    StepList,
    StepSummary,
    TaskSummary,
    summarize,
    summarize_tasks,
)
from .._redact import masked_url
from .query import parse_filter

__all__ = ["Client"]


RunRef = Any
"""A run: its id (``UUID`` or text), a unique id prefix, its name, a
``RecordedRun``, or the handle a ``with pipeline_run()`` block gave."""


class RunSteps(Mapping[str, RecordedStep]):
    """A run's steps by invocation name, read when first asked for.

    One step by name is one query; iterating reads them all once, in
    execution order, and keeps them.
    """

    def __init__(self, reader: RecordReader, run_id: UUID, count: int) -> None:
        self._reader, self._run_id, self._count = reader, run_id, count
        self._all: dict[str, RecordedStep] | None = None

    def _load(self) -> dict[str, RecordedStep]:
        if self._all is None:
            self._all = {step.name: step for step in self._reader.list_steps(self._run_id)}
        return self._all

    def __getitem__(self, name: str) -> RecordedStep:
        if self._all is not None:
            return self._all[name]
        found = self._reader.list_steps(self._run_id, where=_named(name), limit=1)
        if not found:
            raise KeyError(name)
        return found[0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._all) if self._all is not None else self._count

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RunSteps):
            return self._run_id == other._run_id and self._reader is other._reader
        return Mapping.__eq__(self, other)

    def __hash__(self) -> int:
        return hash(self._run_id)

    def __repr__(self) -> str:
        return f"<steps of run {self._run_id}: {len(self)}>"


def _named(name: str) -> Filter:
    return Compare(Field("name"), "=", name)


class Client:
    """Read runs and steps from a store: the configured one by default.

    ``store`` is a path to a SQLite file, a store URL
    (``sqlite:///path/zenmeta.db``, ``postgresql://…``), a store object, or
    ``None`` for the store new runs would write to now. A store named by
    text is opened read-only: a missing one raises ``StoreNotFoundError``
    (nothing is created), an unreadable one ``StoreError``.
    """

    def __init__(self, store: str | RecordReader | None = None) -> None:
        chosen = settings.store() if store is None else store
        if isinstance(chosen, str):
            from .._store import open_reader

            chosen = open_reader(chosen)
        else:
            from .._store import readable  # a store still opening is read once open

            chosen = readable(chosen)
        self.reader: RecordReader = chosen
        # What the CLI and the dashboard show: a team store's URL holds its password.
        self.url: str = masked_url(str(getattr(chosen, "url", repr(chosen))))
        """Where the reader reads, as it may be printed (no password)."""

    def _read(self) -> RecordReader:
        """The reader, once this process's queued records for it are written:
        a run read inside its own ``with`` block is found."""
        from .._store import flush_for_reading

        flush_for_reading(self.reader)
        return self.reader

    def list_runs(
        self,
        *,
        where: str | None = None,
        pipeline: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> RunList:
        """Runs newest first, optionally filtered.

        ``where`` is the filter language (``"user.accuracy >= 0.9 and
        environment.git_commit = 'abc123'"``, see the guide), run by the store
        itself; ``status="crashed"`` finds runs whose process died mid-run. A
        filter that does not parse raises ``QueryError`` naming the position.
        """
        parsed = None if where is None else parse_filter(where)
        query = RunQuery(pipeline, status, since, limit, offset, parsed)
        found = RunList(self._with_steps(run) for run in self._read().list_runs(query))
        found.store_url = self.url
        return found

    def count_runs(
        self,
        *,
        where: str | None = None,
        pipeline: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
    ) -> int:
        """How many runs ``list_runs`` would give with no limit (for "20 of 31")."""
        parsed = None if where is None else parse_filter(where)
        query = RunQuery(pipeline, status, since, None, 0, parsed, with_metadata=False)
        reader = self._read()
        count = getattr(reader, "count_runs", None)  # the SQL store counts in the database
        return int(count(query)) if callable(count) else len(reader.list_runs(query))

    def get_run(self, ref: RunRef) -> RecordedRun:
        """A run by id, unique id prefix or name (or a run object); ambiguity raises."""
        from uuid import UUID  # loaded on first read, not with zenmeta

        if isinstance(ref, RecordedRun) or isinstance(getattr(ref, "id", None), UUID):
            ref = ref.id  # a run as read, or the handle a `with pipeline_run()` gave
        text = str(ref).strip()
        if not text:
            raise RunNotFoundError("an empty run reference matches nothing")
        matches = self._read().find_runs(text)
        if not matches:
            raise RunNotFoundError(f"no run has the id, id prefix or name {text!r}")
        if len(matches) > 1:
            shown = ", ".join(f"{r.name} ({r.id})" for r in matches[:5])
            raise RunNotFoundError(
                f"{text!r} matches {len(matches)} runs: {shown}; give more of the id"
            )
        return self._with_steps(matches[0])

    def list_steps(
        self,
        run: RunRef,
        *,
        where: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> StepList:
        """A run's steps in execution order, each with its parent step's id;
        ``where`` filters them (``"status = 'failed' or user.loss > 1"``)."""
        run_id = run.id if isinstance(run, RecordedRun) else self.get_run(run).id
        parsed = None if where is None else parse_filter(where, steps=True)
        return StepList(self._read().list_steps(run_id, limit=limit, offset=offset, where=parsed))

    def summarize_steps(self, run: RunRef) -> list[StepSummary]:
        """A run's steps by name and status: how many and how long in all, in
        order of first start; read as a few rows, whatever the run's size."""
        found = run if isinstance(run, RecordedRun) else self.get_run(run)
        counted = getattr(self._read(), "summarize_steps", None)
        if callable(counted):
            return list(counted(found.id))
        steps = self._read().list_steps(found.id)  # a store that cannot count: read them
        return summarize((step.step_name, step.status, step.duration) for step in steps)

    def summarize_tasks(self, run: RunRef) -> list[TaskSummary]:
        """A run's executions grouped by task key: a task Dask recomputed or
        retried is one entry with several executions (``train \\u00d72 (1 crashed)``);
        steps with no task key (local ones) are left out."""
        found = run if isinstance(run, RecordedRun) else self.get_run(run)
        counted = getattr(self._read(), "summarize_tasks", None)
        if callable(counted):
            return list(counted(found.id))
        steps = self._read().list_steps(found.id)
        return summarize_tasks((step.task_key, step.step_name, step.status) for step in steps)

    def find_steps(self, where: str, *, limit: int | None = None, offset: int = 0) -> StepList:
        """Steps of every run that pass ``where``, newest first: which step wrote
        MLflow run Y? ``find_steps("mlflow.mlflow_run_id = 'Y'")``."""
        parsed = parse_filter(where, steps=True)
        return StepList(self._read().find_steps(parsed, limit=limit, offset=offset))

    def get_step(self, step: RunRef, name: str | None = None) -> RecordedStep:
        """One step: by its full id, or by run and invocation name
        (``get_step(run, "train")``, ``get_step(run, "train_2")``)."""
        if name is not None:
            found = self.get_run(step).steps.get(name)
            if found is None:
                raise RunNotFoundError(f"run {step!r} has no step named {name!r}")
            return found
        from uuid import UUID  # loaded on first read, not with zenmeta

        if isinstance(step, RecordedStep):
            step = step.id
        try:
            key = step if isinstance(step, UUID) else UUID(str(step))
        except ValueError:
            raise RunNotFoundError(f"{step!r} is not a step id") from None
        recorded = self._read().get_step(key)
        if recorded is None:
            raise RunNotFoundError(f"no step has the id {step}")
        return recorded

    def diff_runs(self, a: RunRef, b: RunRef, *more: RunRef, everything: bool = False) -> RunDiff:
        """What differs between two or more runs: fields, metadata by source
        (packages added, removed, changed), steps; ``everything`` keeps equal
        values too. ``.to_markdown()`` pastes into a pull request."""
        from .diff import diff_runs

        runs = [self.get_run(ref) for ref in (a, b, *more)]
        steps = [self._read().list_steps(run.id) for run in runs]
        return diff_runs(runs, steps, everything=everything)

    def delete_runs(self, *runs: RunRef) -> int:
        """Delete runs for good, each with its steps, metadata and child runs in one
        transaction; how many runs went. A run whose process is alive is refused."""
        found = [self.get_run(ref) for ref in runs]
        for run in found:
            if run.status == RUNNING:
                raise RunStateError(
                    f"run {run.name!r} is still running (pid {run.pid} on {run.host}); "
                    "it can be deleted once it ends or its process is gone",
                    run_id=run.id,
                )
        return self._deleter().delete_runs([run.id for run in found]) if found else 0

    def gc(
        self,
        *,
        older_than: timedelta | None = None,
        status: Iterable[str] | None = None,
        keep_last: int | None = None,
        where: str | None = None,
        dry_run: bool = False,
        vacuum: bool = False,
    ) -> list[RecordedRun]:
        """Delete the runs every given rule selects; the runs deleted (or, with
        ``dry_run``, those that would be).

        ``older_than`` started longer ago; ``status`` one of those statuses
        (``crashed`` included); ``keep_last`` keeps each pipeline's N newest
        runs whatever else is said; ``where`` the filter language. A run
        tagged ``pinned`` is never collected, nor one whose process is alive.
        """
        from datetime import datetime, timezone  # loaded on first use, not with zenmeta

        terms: list[Filter] = []
        if older_than is not None:
            cutoff = ns_of(datetime.now(timezone.utc) - older_than)
            terms.append(Compare(Field("start_time"), "<", cutoff))
        if status is not None:
            terms.append(Compare(Field("status"), "in", tuple(status)))
        if where is not None:
            terms.append(parse_filter(where))
        if not terms and keep_last is None:
            raise ValueError("say what to collect: older_than, status, keep_last or where")
        query = RunQuery(where=And(tuple(terms)) if terms else None, with_metadata=False)
        chosen = [
            run
            for run in self._read().list_runs(query)
            if run.status != RUNNING and "pinned" not in run.tags
        ]
        if keep_last is not None:
            kept = {
                run.id
                for pipeline in {run.pipeline_name for run in chosen}
                for run in self.reader.list_runs(
                    RunQuery(pipeline=pipeline, limit=keep_last, with_metadata=False)
                )
            }
            chosen = [run for run in chosen if run.id not in kept]
        if not dry_run and chosen:
            deleter = self._deleter()
            # One call: the store deletes in batches of its own (the SQL store,
            # a few hundred runs per transaction) and then cleans its indexes once.
            deleter.delete_runs([run.id for run in chosen])
            if vacuum:
                deleter.vacuum()
        return chosen

    def _deleter(self) -> RunDeleter:
        if not isinstance(self.reader, RunDeleter):
            raise StoreError(f"the store {self.url} cannot delete runs")
        return self.reader

    def _with_steps(self, run: RecordedRun) -> RecordedRun:
        return run._replace(steps=RunSteps(self.reader, run.id, run.step_count))

    def export_run(self, ref: RunRef) -> dict[str, Any]:
        """A run and all its steps as JSON-ready data (see ``RecordedRun.to_dict``)."""
        run = ref if isinstance(ref, RecordedRun) else self.get_run(ref)
        exported = run.to_dict()
        exported["steps"] = [step.to_dict() for step in self.list_steps(run)]
        return exported

    def scan_secrets(self, *, fix: bool = False) -> list[SecretFinding]:
        """Stored values the redaction rules would mask, as (run, step, source,
        key, rule), in metadata and in error and fault messages; with
        ``fix=True`` they are masked in place, one transaction per run (each
        masked metadata value with a ``redacted:`` note).

        The rules are the configured ones (``configure(redact=...)``,
        ``ZENMETA_REDACT``); switched off, the built-in rules are used, since
        a scan for nothing would be no scan.
        """
        from .._redaction import DEFAULT_RULES
        from .scan import scan_store

        rules = settings.redaction()
        return scan_store(self._read(), rules if rules.enabled else DEFAULT_RULES, fix=fix)

    def store_info(self) -> dict[str, Any]:
        """Where the store is and what it holds: URL, kind, schema version, counts."""
        describe = getattr(self._read(), "describe", None)
        if callable(describe):
            return {**describe(), "url": self.url}
        runs = self.reader.list_runs()
        return {
            "url": self.url,
            "backend": type(self.reader).__name__,
            "runs": len(runs),
            "steps": sum(run.step_count for run in runs),
        }
