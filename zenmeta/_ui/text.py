"""Metadata values and measures as short text, shared by the CLI and HTML.

A reader wants ``1.5 GiB``, not ``1610612736``, and ``NaN`` rather than a
JSON tag; the exact value stays available in exports and ``--json``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .._export import json_safe
from .._values import StorageSize

__all__ = ["human_size", "human_duration", "value_text", "escape_controls", "UNSAFE_CHARACTERS"]

UNSAFE_CHARACTERS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""Characters a terminal or a page would act on instead of showing: C0 and
C1 controls (ESC starts clear-screen and hyperlink sequences), line and
paragraph separators, and the bidirectional controls that reorder text
(``invoice\\u202egpj.exe`` reads as ``invoiceexe.jpg``)."""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every unsafe character written as a visible escape (``\\x1b``, ``\\u202e``)."""
    return UNSAFE_CHARACTERS.sub(_escaped, text)


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(size: int) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``2.0 GiB``."""
    amount = float(size)
    for unit in _UNITS:
        if abs(amount) < 1024 or unit == _UNITS[-1]:
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    """``850 ms``, ``3.2 s``, ``4 min 05 s``, ``2 h 03 min``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def value_text(value: Any, *, limit: int = 200) -> str:
    """One line of text for a metadata value, cut at ``limit`` characters."""
    if isinstance(value, StorageSize):
        text = human_size(value)
    elif isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else json_safe(value)
    elif isinstance(value, str):
        text = str.__str__(value)
    elif isinstance(value, int):
        text = str(int(value))
    else:
        text = json.dumps(json_safe(value), ensure_ascii=False)
    text = " ".join(text.splitlines()) if "\n" in text or "\r" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"
