"""What differs between runs: fields, each source's metadata, packages, steps.

Yesterday's good run against today's bad one: which packages moved, which
commit, which component value, which step is new or failed. Nested dicts are
compared key by key (``environment.packages.numpy``), and a list of
``name==version`` entries (the environment's ``installed_packages``) is read
as the mapping it is, so a package shows as added, removed or changed
instead of one unreadable list. Any number of runs; differences only unless
asked for everything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._export import json_safe

if TYPE_CHECKING:
    from .._records import RecordedRun, RecordedStep

__all__ = ["MISSING", "RunDiff", "diff_runs"]

_MAX_DEPTH = 4


class _Missing:
    """A run that has no value here at all (not a stored ``None``)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_FIELDS = ("pipeline_name", "status", "host", "tags", "parent_run_id", "error_type")


class RunDiff(NamedTuple):
    """Runs side by side: each entry holds one value per run, in the order given."""

    runs: tuple[RecordedRun, ...]
    fields: dict[str, tuple[Any, ...]]
    """Run fields (``status``, ``host``, ``tags``…)."""
    metadata: dict[str, dict[str, tuple[Any, ...]]]
    """By source, then key; nested keys dotted (``packages.numpy``)."""
    steps: dict[str, tuple[Any, ...]]
    """By invocation name: each run's step status, or ``MISSING``."""

    @property
    def labels(self) -> list[str]:
        """A short name per run: its name, or its name and id prefix when names repeat."""
        names = [run.name for run in self.runs]
        return [
            name if names.count(name) == 1 else f"{name} ({run.id.hex[:8]})"
            for name, run in zip(names, self.runs, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each value keyed by run label; a run without the value is left out."""

        def by_run(values: Sequence[Any]) -> dict[str, Any]:
            return {
                label: json_safe(value)
                for label, value in zip(self.labels, values, strict=True)
                if value is not MISSING
            }

        return {
            "runs": [
                {"label": label, "id": str(run.id), "name": run.name, "duration": run.duration}
                for label, run in zip(self.labels, self.runs, strict=True)
            ],
            "fields": {name: by_run(values) for name, values in self.fields.items()},
            "metadata": {
                source: {key: by_run(values) for key, values in keys.items()}
                for source, keys in self.metadata.items()
            },
            "steps": {name: by_run(values) for name, values in self.steps.items()},
        }

    def to_markdown(self) -> str:
        """Tables fit to paste into a pull request or an issue."""
        labels = self.labels
        two = len(labels) == 2
        head = ["", *labels, *(["change"] if two else [])]
        lines = [f"**Runs compared:** {', '.join(f'`{label}`' for label in labels)}", ""]

        def table(title: str, rows: list[tuple[str, Sequence[Any]]]) -> None:
            if not rows:
                return
            lines.extend([f"### {title}", "", _row(head), _row(["---"] * len(head))])
            for name, values in rows:
                cells = [f"`{name}`", *(_cell(value) for value in values)]
                lines.append(_row([*cells, *([_change(values)] if two else [])]))
            lines.append("")

        table("Run", list(self.fields.items()))
        for source, keys in self.metadata.items():
            table(f"Metadata: {source}", list(keys.items()))
        table("Steps", list(self.steps.items()))
        if len(lines) == 2:
            lines.append("No differences.")
        return "\n".join(lines).rstrip() + "\n"


def diff_runs(
    runs: Sequence[RecordedRun],
    steps: Sequence[Sequence[RecordedStep]],
    *,
    everything: bool = False,
) -> RunDiff:
    """Compare ``runs`` (each with its ``steps``); keep only differences unless ``everything``."""

    def keep(values: tuple[Any, ...]) -> bool:
        return everything or not all(_same(values[0], value) for value in values[1:])

    fields = {
        name.replace("_name", ""): values
        for name in _FIELDS
        if keep(values := tuple(getattr(run, name) for run in runs))
    }
    flat = [_flatten_sources(run.metadata) for run in runs]
    metadata: dict[str, dict[str, tuple[Any, ...]]] = {}
    for source in _ordered(key for sources in flat for key in sources):
        keys = _ordered(key for sources in flat for key in sources.get(source, {}))
        rows = {
            key: values
            for key in keys
            if keep(values := tuple(sources.get(source, {}).get(key, MISSING) for sources in flat))
        }
        if rows:
            metadata[source] = rows
    by_name = [{step.name: step.status for step in run_steps} for run_steps in steps]
    step_rows = {
        name: values
        for name in _ordered(name for named in by_name for name in named)
        if keep(values := tuple(named.get(name, MISSING) for named in by_name))
    }
    return RunDiff(tuple(runs), fields, metadata, step_rows)


def _flatten_sources(grouped: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for source, values in grouped.items():
        flat: dict[str, Any] = {}
        for key, value in values.items():
            _flatten(key, value, flat, 1)
        out[source] = flat
    return out


def _flatten(prefix: str, value: Any, into: dict[str, Any], depth: int) -> None:
    packages = _as_packages(value)
    if packages is not None:
        value = packages
    if isinstance(value, Mapping) and value and depth < _MAX_DEPTH:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into, depth + 1)
    else:
        into[prefix] = value


def _as_packages(value: Any) -> dict[str, str] | None:
    """``["numpy==2.0", "rich==13"]`` as ``{"numpy": "2.0", "rich": "13"}``; else ``None``."""
    if not isinstance(value, (list, tuple)) or not value:
        return None
    found: dict[str, str] = {}
    for item in value:
        if not isinstance(item, str) or "==" not in item:
            return None
        name, _, version = item.partition("==")
        found[name] = version
    return found


def _same(left: Any, right: Any) -> bool:
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    try:
        return bool(left == right)
    except Exception:  # a value whose __eq__ raises is simply "different"
        return False


def _ordered(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _cell(value: Any) -> str:
    if value is MISSING:
        return "\u2014"
    text = value if isinstance(value, str) else json.dumps(json_safe(value), ensure_ascii=False)
    text = " ".join(str(text).split())
    text = text if len(text) <= 80 else text[:79] + "\u2026"
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def _change(values: Sequence[Any]) -> str:
    first, second = values
    if first is MISSING:
        return "added"
    if second is MISSING:
        return "removed"
    return "changed" if not _same(first, second) else ""


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
