"""``Client``: the public read API over any store.

The CLI, the dashboard and notebooks read only through this class, so every
reader sees the same statuses (a dead writer's run reads ``crashed``) and
the same restored types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

from .._config import settings
from .._errors import RunNotFoundError, StoreError
from .._filters import Compare, Field, Filter
from .._records import RecordedRun, RecordedStep, RecordReader, RunList, RunQuery, StepList
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

    ``store`` is a URL (``sqlite:///path/zenmeta.db``), a store object, or
    ``None`` for the store new runs would write to now.
    """

    def __init__(self, store: str | RecordReader | None = None) -> None:
        chosen = settings.store() if store is None else store
        if isinstance(chosen, str):
            from .._store import open_store

            chosen = open_store(chosen)
        if not isinstance(chosen, RecordReader):
            raise StoreError(f"{chosen!r} cannot be read: it is not a RecordReader")
        self.reader: RecordReader = chosen
        self.url: str = getattr(chosen, "url", repr(chosen))

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
        return RunList(self._with_steps(run) for run in self.reader.list_runs(query))

    def get_run(self, ref: RunRef) -> RecordedRun:
        """A run by id, unique id prefix or name (or a run object); ambiguity raises."""
        from uuid import UUID  # loaded on first read, not with zenmeta

        if isinstance(ref, RecordedRun) or isinstance(getattr(ref, "id", None), UUID):
            ref = ref.id  # a run as read, or the handle a `with pipeline_run()` gave
        text = str(ref).strip()
        if not text:
            raise RunNotFoundError("an empty run reference matches nothing")
        matches = self.reader.find_runs(text)
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
        return StepList(self.reader.list_steps(run_id, limit=limit, offset=offset, where=parsed))

    def find_steps(self, where: str, *, limit: int | None = None, offset: int = 0) -> StepList:
        """Steps of every run that pass ``where``, newest first: which step wrote
        MLflow run Y? ``find_steps("mlflow.mlflow_run_id = 'Y'")``."""
        parsed = parse_filter(where, steps=True)
        return StepList(self.reader.find_steps(parsed, limit=limit, offset=offset))

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
        recorded = self.reader.get_step(key)
        if recorded is None:
            raise RunNotFoundError(f"no step has the id {step}")
        return recorded

    def _with_steps(self, run: RecordedRun) -> RecordedRun:
        return run._replace(steps=RunSteps(self.reader, run.id, run.step_count))

    def export_run(self, ref: RunRef) -> dict[str, Any]:
        """A run and all its steps as JSON-ready data (see ``RecordedRun.to_dict``)."""
        run = ref if isinstance(ref, RecordedRun) else self.get_run(ref)
        exported = run.to_dict()
        exported["steps"] = [step.to_dict() for step in self.list_steps(run)]
        return exported

    def store_info(self) -> dict[str, Any]:
        """Where the store is and what it holds: URL, kind, schema version, counts."""
        describe = getattr(self.reader, "describe", None)
        if callable(describe):
            return dict(describe())
        runs = self.reader.list_runs()
        return {
            "url": self.url,
            "backend": type(self.reader).__name__,
            "runs": len(runs),
            "steps": sum(run.step_count for run in runs),
        }
