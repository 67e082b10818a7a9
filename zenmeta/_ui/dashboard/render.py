"""How the dashboard shows values: each metadata type its own way, always escaped.

Every helper returns ``markupsafe.Markup`` built with ``Markup.format`` from
plain ``str`` arguments, so user text is escaped exactly where it meets HTML
and no stored object can vouch for itself through an ``__html__`` method.
Values come from any store, so nothing here assumes well-formed input: an
odd value is shown as escaped text, never raised.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from markupsafe import Markup

from ..._records import STATUSES, RecordedStep
from ..._values import DType, Path, StorageSize, Uri
from ..text import human_duration, human_size, int_text, link_target, type_label

__all__ = [
    "StepRow",
    "readable_float",
    "elapsed_since",
    "render_value",
    "render_time",
    "render_status",
    "step_tree",
    "show_controls",
    "MAX_INDENT",
]

_SHORT_TEXT = 200
_PREVIEW = 80
MAX_INDENT = 12
"""Nesting deeper than this is still shown, but indented no further."""


def readable_float(value: float) -> str:
    """A float as a reader wants it: about six significant digits.

    Magnitudes people count in keep their whole integer part instead of
    switching to exponent notation; the exact ``repr`` goes in a tooltip.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    exact = repr(value)
    if len(exact) <= 10:
        return exact
    magnitude = abs(value)
    if 1e-4 <= magnitude < 1e15:
        digits = max(6, math.floor(math.log10(magnitude)) + 1)
        return f"{value:.{digits}g}"
    return f"{value:.6g}"


def elapsed_since(moment: datetime) -> str:
    """How long ago ``moment`` was, for a run that has no end yet."""
    return human_duration((datetime.now(timezone.utc) - moment).total_seconds())


def render_value(value: object) -> Markup:
    """One metadata value as HTML, in the form that fits its type."""
    if isinstance(value, str):
        return _render_text(value)
    if isinstance(value, bool):
        return Markup('<span class="literal">{}</span>').format("true" if value else "false")
    if value is None:
        return Markup('<span class="literal">None</span>')
    if isinstance(value, StorageSize):
        exact = int(value)
        return Markup('<span class="size" title="{} bytes">{}</span>').format(
            f"{exact:,}", human_size(exact)
        )
    if isinstance(value, int):
        return Markup('<span class="number">{}</span>').format(int_text(value))
    if isinstance(value, float):
        return _render_float(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return _render_json(value)
    return Markup('<span class="text">{}</span>').format(_safe_repr(value))


def _render_text(value: str) -> Markup:
    text = str.__str__(value)
    if isinstance(value, Uri):
        href = link_target(text)
        if href is None:
            return Markup('<span class="uri-text" title="not a web or file link">{}</span>').format(
                text
            )
        return Markup('<a class="uri" href="{}" rel="noopener noreferrer nofollow">{}</a>').format(
            href, text
        )
    if isinstance(value, Path):
        return Markup('<code class="path">{}</code>').format(text)
    if isinstance(value, DType):
        return Markup('<span class="badge dtype">{}</span>').format(text)
    if not text:
        return Markup('<span class="muted">(empty text)</span>')
    if len(text) <= _SHORT_TEXT and "\n" not in text:
        return Markup('<span class="text">{}</span>').format(text)
    preview = text[:_PREVIEW].split("\n", 1)[0]
    return Markup(
        '<details class="long-text"><summary>{}\u2026 <span class="muted">({} characters)</span>'
        "</summary><pre>{}</pre></details>"
    ).format(preview, f"{len(text):,}", text)


def _render_float(value: float) -> Markup:
    shown = readable_float(value)
    exact = repr(value)
    if shown == exact or not math.isfinite(value):
        return Markup('<span class="number">{}</span>').format(shown)
    return Markup('<span class="number" title="{}">{}</span>').format(exact, shown)


def _render_json(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any],
) -> Markup:
    count = len(value)
    noun = "key" if isinstance(value, dict) else "item"
    summary = f"{type_label(value)} \u00b7 {count} {noun}{'' if count == 1 else 's'}"
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError, RecursionError):
        text = _safe_repr(value)
    return Markup('<details class="json"><summary>{}</summary><pre>{}</pre></details>').format(
        summary, text
    )


def _json_default(value: object) -> Any:
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return sorted(value, key=repr)
    return _safe_repr(value)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def render_time(moment: datetime | None) -> Markup:
    """A UTC time to the second, its full ISO form in a tooltip."""
    if moment is None:
        return Markup('<span class="muted">\u2014</span>')
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        moment.isoformat(), moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def render_status(status: str) -> Markup:
    """A status badge; an unknown status is shown but gets no special style."""
    text = str(status)
    style = text if text in STATUSES else "unknown"
    return Markup('<span class="status status-{}">{}</span>').format(style, text)


@dataclass(frozen=True, slots=True)
class StepRow:
    """One line of the steps table: a step and how deep it sits in the tree."""

    step: RecordedStep
    depth: int
    parent_elsewhere: bool
    """Its parent step is not on this page (an earlier page holds it)."""

    @property
    def indent(self) -> int:
        return min(self.depth, MAX_INDENT)


def step_tree(steps: Sequence[RecordedStep]) -> list[StepRow]:
    """A page of steps in tree order: each child right under its parent.

    Steps arrive in start order; children are kept in start order under
    their parent. A step whose parent is on another page starts a new root
    and says so. The walk is iterative, so a deep chain cannot exhaust the
    stack, and a corrupt parent cycle still shows every step once.
    """
    on_page = {step.id for step in steps}
    children: dict[Any, list[RecordedStep]] = {}
    roots: list[RecordedStep] = []
    for step in steps:
        parent = step.parent_step_run_id
        if parent is not None and parent in on_page and parent != step.id:
            children.setdefault(parent, []).append(step)
        else:
            roots.append(step)
    rows: list[StepRow] = []
    seen: set[Any] = set()
    pending: list[tuple[RecordedStep, int]] = [(root, 0) for root in reversed(roots)]
    leftovers = [step for step in reversed(steps)]
    while pending or leftovers:
        if not pending:
            step = leftovers.pop()
            if step.id in seen:
                continue
            pending.append((step, 0))
        step, depth = pending.pop()
        if step.id in seen:
            continue
        seen.add(step.id)
        parent = step.parent_step_run_id
        rows.append(StepRow(step, depth, depth == 0 and parent is not None))
        for child in reversed(children.get(step.id, ())):
            pending.append((child, depth + 1))
    return rows


_TAG = re.compile(r"(<[^>]*>)")
_KEEP_SPACE = re.compile(  # the CLI's unsafe characters, less the tab and newline
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _visible(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def show_controls(html: str) -> str:
    """Make every unsafe character in a rendered page visible, in one place.

    Stored text reaches the page only escaped, so ``<`` and ``>`` there are
    our own tags: in text a control becomes ``\\u202e`` in a marked span;
    inside a tag (a tooltip, a link) it becomes the same text without markup.
    Tabs and newlines stay, for ``<pre>`` blocks.
    """
    if _KEEP_SPACE.search(html) is None:
        return html
    parts = _TAG.split(html)
    for index, part in enumerate(parts):
        if index % 2:
            parts[index] = _KEEP_SPACE.sub(_visible, part)
        else:
            parts[index] = _KEEP_SPACE.sub(
                lambda found: (
                    f'<span class="control" title="an invisible control '
                    f'character">{_visible(found)}</span>'
                ),
                part,
            )
    return "".join(parts)
