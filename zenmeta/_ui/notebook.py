"""Runs and steps as HTML for Jupyter (``_repr_html_``).

Everything that came from a run is escaped: names, keys and values are
whatever a component or a user logged. A ``Uri`` becomes a link only for
``http``, ``https`` and ``file`` URLs with no control characters, so a
logged ``javascript:`` URL stays text; a ``StorageSize`` reads ``1.5 GiB``
with the exact byte count in its tooltip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import TYPE_CHECKING, Any

from .._redaction import REDACTED_PREFIX, is_redaction_note
from .._values import StorageSize, Uri
from .text import human_duration, human_size, link_target, type_label, value_text

if TYPE_CHECKING:
    from .._records import ComponentFault, DroppedValue, RecordedRun, RecordedStep

__all__ = ["run_html", "step_html", "runs_table_html", "value_html"]

_COLORS = {
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "crashed": "#cf222e",
    "interrupted": "#9a6700",
    "running": "#0969da",
}
_TABLE = 'style="border-collapse:collapse;text-align:left"'
_CELL = 'style="padding:2px 10px 2px 0;vertical-align:top;text-align:left"'
_MUTED = 'style="padding:2px 10px 2px 0;vertical-align:top;text-align:left;color:#57606a"'


def value_html(value: Any) -> str:
    """One metadata value, escaped; a safe ``Uri`` as a link."""
    if isinstance(value, Uri):
        href = link_target(value)
        text = escape(value_text(str.__str__(value)))
        if href is not None:
            return f'<a href="{escape(href)}" target="_blank" rel="noopener noreferrer">{text}</a>'
        return text
    if isinstance(value, StorageSize):
        return f'<span title="{int(value)} bytes">{escape(human_size(value))}</span>'
    return escape(value_text(value))


def _status(status: str) -> str:
    color = _COLORS.get(status, "#57606a")
    return f'<b style="color:{color}">{escape(status)}</b>'


def _fields(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(
        f"<tr><th {_CELL}>{escape(name)}</th><td {_CELL}>{html}</td></tr>" for name, html in rows
    )
    return f"<table {_TABLE}>{body}</table>"


def _metadata(grouped: Mapping[str, Mapping[str, Any]]) -> str:
    if not any(grouped.values()):
        return "<p><i>no metadata</i></p>"
    parts = []
    for source, values in grouped.items():
        rows = "".join(
            f"<tr><td {_CELL}><code>{escape(key)}</code></td><td {_CELL}>{value_html(value)}</td>"
            f"<td {_MUTED}>{escape(type_label(value))}</td></tr>"
            for key, value in values.items()
        )
        parts.append(f"<details open><summary>{escape(source)}</summary>")
        parts.append(f"<table {_TABLE}>{rows}</table></details>")
    return "".join(parts)


def _problems(faults: Iterable[ComponentFault], dropped: Iterable[DroppedValue]) -> str:
    items = [
        f"<li>{escape(f.component)}.{escape(f.hook)} raised {escape(f.error_type)}: "
        f"{escape(f.message)}</li>"
        for f in faults
    ]
    items += [
        f"<li>redacted {escape(d.source)}/{escape(d.key)} "
        f"({escape(d.reason[len(REDACTED_PREFIX) :])})</li>"
        if is_redaction_note(d.reason)
        else f"<li>dropped {escape(d.source)}/{escape(d.key)}: {escape(d.reason)}</li>"
        for d in dropped
    ]
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _error(error_type: str | None, message: str | None) -> list[tuple[str, str]]:
    if error_type is None:
        return []
    return [("error", f"{escape(error_type)}: {escape(message or '')}")]


def run_html(run: RecordedRun) -> str:
    """A run: its fields, then its metadata grouped by source."""
    rows = [
        ("status", _status(run.status)),
        ("pipeline", escape(run.pipeline_name)),
        ("id", f"<code>{escape(str(run.id))}</code>"),
        ("started", escape(run.start_time.isoformat(sep=" ", timespec="seconds"))),
        ("duration", escape(human_duration(run.duration))),
        ("steps", str(run.step_count)),
        ("host", escape(f"{run.host} (pid {run.pid})")),
    ]
    if run.tags:
        rows.append(("tags", escape(", ".join(run.tags))))
    if run.parent_run_id is not None:
        rows.append(("parent run", f"<code>{escape(str(run.parent_run_id))}</code>"))
    rows += _error(run.error_type, run.error_message)
    return (
        f'<div class="zenmeta-run"><h4>Run {escape(run.name)}</h4>{_fields(rows)}'
        f"{_metadata(run.metadata)}{_problems(run.faults, run.dropped)}</div>"
    )


def step_html(step: RecordedStep) -> str:
    """A step: its fields, then its metadata grouped by source."""
    rows = [
        ("status", _status(step.status)),
        ("step", escape(step.step_name)),
        ("id", f"<code>{escape(str(step.id))}</code>"),
        ("run", f"<code>{escape(str(step.run_id))}</code>"),
        ("started", escape(step.start_time.isoformat(sep=" ", timespec="milliseconds"))),
        ("duration", escape(human_duration(step.duration))),
    ]
    if step.parent_step_run_id is not None:
        rows.append(("parent step", f"<code>{escape(str(step.parent_step_run_id))}</code>"))
    rows += _error(step.error_type, step.error_message)
    return (
        f'<div class="zenmeta-step"><h4>Step {escape(step.name)}</h4>{_fields(rows)}'
        f"{_metadata(step.metadata)}{_problems(step.faults, step.dropped)}</div>"
    )


def runs_table_html(runs: Iterable[RecordedRun]) -> str:
    """Runs as one table, newest first as given."""
    head = "".join(
        f"<th {_CELL}>{name}</th>"
        for name in ("run", "pipeline", "status", "started", "duration", "steps", "id")
    )
    body = "".join(
        f"<tr><td {_CELL}>{escape(run.name)}</td><td {_CELL}>{escape(run.pipeline_name)}</td>"
        f"<td {_CELL}>{_status(run.status)}</td>"
        f"<td {_CELL}>{escape(run.start_time.isoformat(sep=' ', timespec='seconds'))}</td>"
        f"<td {_CELL}>{escape(human_duration(run.duration))}</td>"
        f"<td {_CELL}>{run.step_count}</td>"
        f"<td {_CELL}><code>{escape(run.id.hex[:12])}</code></td></tr>"
        for run in runs
    )
    if not body:
        where = getattr(runs, "store_url", "")
        return f"<p><i>no runs</i>{f' in <code>{escape(where)}</code>' if where else ''}</p>"
    return f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def steps_table_html(steps: Iterable[RecordedStep]) -> str:
    """Steps as one table in execution order, each with its flat metadata."""
    head = "".join(
        f"<th {_CELL}>{name}</th>"
        for name in ("step", "status", "started", "duration", "error", "metadata")
    )
    body = "".join(
        f"<tr><td {_CELL}>{escape(step.name)}</td><td {_CELL}>{_status(step.status)}</td>"
        f"<td {_CELL}>{escape(step.start_time.isoformat(sep=' ', timespec='seconds'))}</td>"
        f"<td {_CELL}>{escape(human_duration(step.duration))}</td>"
        f"<td {_CELL}>{escape(step.error_type or '')}</td>"
        f"<td {_CELL}>"
        + "<br>".join(
            f"{escape(key)}: {value_html(value)}" for key, value in step.flat_metadata.items()
        )
        + "</td></tr>"
        for step in steps
    )
    if not body:
        return "<p><i>no steps</i></p>"
    return f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
