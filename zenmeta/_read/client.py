"""``Client``: the public read API over any store.

The CLI, the dashboard and notebooks read only through this class, so every
reader sees the same statuses (a dead writer's run reads ``crashed``) and
the same restored types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from .scan import SecretFinding

from .._config import settings
from .._errors import RunNotFoundError, StoreError
from .._records import RecordedRun, RecordedStep, RecordReader, RunList, StepList

__all__ = ["Client"]


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
        rules = settings.redaction()
        url = str(getattr(chosen, "url", repr(chosen)))
        # What the CLI and the dashboard show: a team store's URL holds its password.
        self.url: str = rules.mask_text(url)[0] if rules.enabled else url

    def list_runs(
        self,
        *,
        pipeline: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> RunList:
        """Runs newest first, optionally filtered by pipeline, status and start.

        ``status="crashed"`` finds runs whose process died while they ran.
        """
        return RunList(
            self.reader.list_runs(
                pipeline=pipeline, status=status, since=since, limit=limit, offset=offset
            )
        )

    def get_run(self, ref: str | UUID) -> RecordedRun:
        """A run by id, unique id prefix or name; ambiguous references raise."""
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
        return matches[0]

    def list_steps(
        self, run: str | UUID | RecordedRun, *, limit: int | None = None, offset: int = 0
    ) -> StepList:
        """A run's steps in execution order, each with its parent step's id."""
        run_id = run.id if isinstance(run, RecordedRun) else self.get_run(run).id
        return StepList(self.reader.list_steps(run_id, limit=limit, offset=offset))

    def get_step(self, step_id: str | UUID) -> RecordedStep:
        """One step by its full id."""
        try:
            from uuid import UUID  # loaded on first read, not with zenmeta

            key = step_id if isinstance(step_id, UUID) else UUID(str(step_id))
        except ValueError:
            raise RunNotFoundError(f"{step_id!r} is not a step id") from None
        step = self.reader.get_step(key)
        if step is None:
            raise RunNotFoundError(f"no step has the id {step_id}")
        return step

    def export_run(self, ref: str | UUID | RecordedRun) -> dict[str, Any]:
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
        return scan_store(self.reader, rules if rules.enabled else DEFAULT_RULES, fix=fix)

    def store_info(self) -> dict[str, Any]:
        """Where the store is and what it holds: URL, kind, schema version, counts."""
        describe = getattr(self.reader, "describe", None)
        if callable(describe):
            return {**describe(), "url": self.url}
        runs = self.reader.list_runs()
        return {
            "url": self.url,
            "backend": type(self.reader).__name__,
            "runs": len(runs),
            "steps": sum(run.step_count for run in runs),
        }
