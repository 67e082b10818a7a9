"""One chosen numeric metadata value over the listed runs, drawn as SVG.

``?chart=user.accuracy`` on the runs page answers "is it getting better?"
at a glance. It is drawn on the server, like the timeline, so the page keeps
its script-free Content-Security-Policy. Runs go left to right in start-time
order, one point each, linked to the run. Only numbers are plotted, by the
filter language's rule: ``int`` and ``float`` alike, a ``StorageSize`` as its
bytes, never a boolean, NaN or an infinity. Every run left out is counted
and the page says so ("3 runs have no numeric user.accuracy"): a chart that
silently drops points would mislead. All text goes through ``Markup.format``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from markupsafe import Markup

from ..._values import StorageSize
from ..text import human_size, value_text
from .columns import field_value

if TYPE_CHECKING:
    from ..._filters import Field
    from ..._records import RecordedRun

__all__ = ["Chart", "metadata_chart"]

WIDTH = 960
HEIGHT = 260
_LEFT = 90
_RIGHT = 20
_TOP = 14
_BOTTOM = 34
_INSET = 10


class Chart(NamedTuple):
    """The drawing and what it left out."""

    svg: Markup
    plotted: int
    skipped: int
    field: str

    @property
    def skipped_note(self) -> str:
        """``"3 runs have no numeric user.accuracy"``; empty when none was skipped."""
        if not self.skipped:
            return ""
        runs = "1 run has" if self.skipped == 1 else f"{self.skipped} runs have"
        return f"{runs} no numeric {self.field}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int past a float's range has no place on an axis
        return None
    return number if math.isfinite(number) else None


def _label(value: float, sizes: bool) -> str:
    if sizes:
        return human_size(int(value))
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def metadata_chart(runs: Sequence[RecordedRun], field: Field) -> Chart:
    """``field``'s value in each of ``runs`` that has a number there, oldest first."""
    points: list[tuple[RecordedRun, float, Any]] = []
    skipped = 0
    for run in sorted(runs, key=lambda run: (run.start_time, str(run.id))):
        value = field_value(field, run.metadata)
        number = _number(value)
        if number is None:
            skipped += 1
        else:
            points.append((run, number, value))
    name = str(field)
    if not points:
        return Chart(Markup(""), 0, skipped, name)
    sizes = all(isinstance(value, StorageSize) for _, _, value in points)
    low = min(number for _, number, _ in points)
    high = max(number for _, number, _ in points)
    if high == low:  # one level: draw it across the middle
        low, high = low - 1, high + 1
    plot_width = WIDTH - _LEFT - _RIGHT
    plot_height = HEIGHT - _TOP - _BOTTOM

    def x_of(index: int) -> float:  # inset, so that no point sits on an axis
        if len(points) == 1:
            return _LEFT + plot_width / 2
        return _LEFT + _INSET + (plot_width - 2 * _INSET) * index / (len(points) - 1)

    def y_of(number: float) -> float:
        return _TOP + _INSET + (plot_height - 2 * _INSET) * (high - number) / (high - low)

    coordinates = [(x_of(i), y_of(number)) for i, (_, number, _) in enumerate(points)]
    title = f"{name} over {len(points)} run{'' if len(points) == 1 else 's'}, oldest first"
    parts = [
        Markup(
            '<svg class="chart" role="img" viewBox="0 0 {} {}" width="{}" height="{}" '
            'xmlns="http://www.w3.org/2000/svg"><title>{}</title>'
        ).format(WIDTH, HEIGHT, WIDTH, HEIGHT, title),
        Markup('<line class="axis" x1="{}" y1="{}" x2="{}" y2="{}"/>').format(
            _LEFT, HEIGHT - _BOTTOM, WIDTH - _RIGHT, HEIGHT - _BOTTOM
        ),
        Markup('<line class="axis" x1="{}" y1="{}" x2="{}" y2="{}"/>').format(
            _LEFT, _TOP, _LEFT, HEIGHT - _BOTTOM
        ),
    ]
    for level in (high, low):
        parts.append(
            Markup('<text class="axis y" x="{}" y="{:.1f}">{}</text>').format(
                _LEFT - 6, y_of(level) + 4, _label(level, sizes)
            )
        )
    if len(points) > 1:
        parts.append(
            Markup('<polyline class="line" points="{}"/>').format(
                " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
            )
        )
    for (run, _, value), (x, y) in zip(points, coordinates, strict=True):
        shown = human_size(int(value)) if isinstance(value, StorageSize) else value_text(value)
        parts.append(
            Markup(
                '<a href="/runs/{}"><circle class="point" cx="{:.1f}" cy="{:.1f}" r="4">'
                "<title>{}: {}</title></circle></a>"
            ).format(run.id, x, y, run.name, shown)
        )
    first, last = points[0][0], points[-1][0]
    parts.append(
        Markup(
            '<text class="axis" x="{}" y="{}">{}</text>'
            '<text class="axis end" x="{}" y="{}">{}</text>'
        ).format(
            _LEFT,
            HEIGHT - 10,
            first.start_time.strftime("%Y-%m-%d %H:%M"),
            WIDTH - _RIGHT,
            HEIGHT - 10,
            last.start_time.strftime("%Y-%m-%d %H:%M"),
        )
    )
    parts.append(Markup("</svg>"))
    return Chart(Markup("").join(parts), len(points), skipped, name)
