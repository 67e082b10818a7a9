"""A run's steps as a timeline: a waterfall of start and end times, drawn as SVG.

Drawn on the server, so the page keeps its script-free Content-Security-Policy.
Each step is one row, in the step table's tree order and indented by its depth,
so nested steps sit under their parent and steps that ran at the same time
overlap on the time axis; failed and crashed steps are marked. Every name goes
through ``Markup.format``, so stored text is escaped where it meets the SVG.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from markupsafe import Markup

from ..text import human_duration

if TYPE_CHECKING:
    from datetime import datetime

    from .render import StepRow

__all__ = ["timeline_svg"]

WIDTH = 960
ROW = 18
LABEL = 220
_INDENT = 10
_BAD = frozenset({"failed", "crashed", "interrupted"})
_AXIS_START = '<text x="{}" y="{}" class="axis">0</text>'


def timeline_svg(rows: list[StepRow], start: datetime, end: datetime | None) -> Markup:
    """The page's steps against the run's own time, one bar per step."""
    if not rows:
        return Markup("")
    first = min([start, *(row.step.start_time for row in rows)])
    last = max([end or start, *(row.step.end_time for row in rows)])
    span = max((last - first).total_seconds(), 1e-9)
    plot = WIDTH - LABEL - 10
    height = ROW * len(rows) + 24
    parts = [
        Markup(
            '<svg class="timeline" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
            'xmlns="http://www.w3.org/2000/svg"><title>{}</title>'
        ).format(WIDTH, height, WIDTH, height, f"{len(rows)} steps over {human_duration(span)}")
    ]
    for index, row in enumerate(rows):
        step = row.step
        y = index * ROW + 4
        x = LABEL + plot * (step.start_time - first).total_seconds() / span
        width = max(plot * step.duration / span, 1.5)  # a step too short to see still shows
        state = "bad" if step.status in _BAD else "good"
        parts.append(
            Markup(
                '<g class="bar {}"><text x="{}" y="{}" class="label">{}</text>'
                '<rect x="{:.1f}" y="{}" width="{:.1f}" height="{}" rx="2">'
                "<title>{}: {} ({})</title></rect></g>"
            ).format(
                state,
                4 + _INDENT * row.indent,
                y + ROW - 6,
                step.name if len(step.name) <= 28 else step.name[:27] + "\u2026",
                x,
                y,
                width,
                ROW - 4,
                step.name,
                human_duration(step.duration),
                step.status,
            )
        )
    parts.append(
        Markup(_AXIS_START + '<text x="{}" y="{}" class="axis end">{}</text>').format(
            LABEL, height - 4, WIDTH - 10, height - 4, human_duration(span)
        )
    )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
