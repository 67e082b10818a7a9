"""How every screen says a value: one rule each, shared by the CLI, notebook and dashboard.

Each rule was written two to five times before and the copies disagreed (a
0.4 ms step read "0 ms" in the terminal and "400 µs" in the dashboard; the
dashboard linked ``https://a b``, the notebook did not). Here there is one
of each: durations, byte sizes, which ``Uri`` becomes a link, type labels
and a value as one line of text. The exact value stays in exports and
``--json``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .._export import json_safe, type_name
from .._values import StorageSize

__all__ = [
    "NO_VALUE",
    "UNSAFE_CHARACTERS",
    "escape_controls",
    "executions_label",
    "human_duration",
    "human_size",
    "int_text",
    "link_target",
    "type_label",
    "value_text",
]

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


def executions_label(step_name: str, executions: int, statuses: Any) -> str:
    """One task's executions as one phrase: ``train \\u00d72 (1 crashed)``; the
    statuses other than ``completed`` are counted in the brackets."""
    label = f"{step_name} \u00d7{executions}"
    others = [f"{count} {status}" for status, count in statuses if status != "completed"]
    return f"{label} ({', '.join(others)})" if others else label


NO_VALUE = "\u2014"
"""What a screen shows where there is no value (a run still running has no duration)."""

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

# Only these schemes become links, and only when the text starts with one. A
# browser strips leading spaces and control characters and drops tabs and
# newlines inside a scheme (" java\tscript:" runs), and a space or a bidi
# control makes the shown text differ from the target, so any of them
# anywhere makes the value plain text: it is never cleaned up into a link.
_LINK_SCHEME = re.compile(r"(?:https?://|file:)", re.IGNORECASE)
_NOT_IN_LINKS = re.compile(r"[\x00-\x20\x7f-\x9f\s\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def human_size(size: int) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``2.0 GiB``."""
    sign = "-" if size < 0 else ""
    amount = float(abs(size))
    if amount < 1024:
        return f"{sign}{abs(int(size))} B"
    for unit in _UNITS:
        amount /= 1024
        if amount < 1024 or unit == _UNITS[-1]:
            return f"{sign}{amount:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    """``4 µs``, ``12 ms``, ``4.20 s``, ``2 min 05 s``, ``2 h 03 min``; a dash when unknown."""
    if seconds is None or math.isnan(seconds):
        return NO_VALUE
    if seconds < 0:
        return "-" + human_duration(-seconds)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} \u00b5s"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def link_target(uri: str) -> str | None:
    """The ``href`` for a ``Uri``: http(s) and file URLs only; ``None`` means show as text."""
    text = str.__str__(uri)
    if not _LINK_SCHEME.match(text) or _NOT_IN_LINKS.search(text):
        return None
    return text


def type_label(value: object) -> str:
    """The metadata type name a reader sees next to a value (the store's own name)."""
    return type_name(value)


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
        text = int_text(value)
    else:
        text = json.dumps(json_safe(value), ensure_ascii=False)
    text = " ".join(text.splitlines()) if "\n" in text or "\r" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def int_text(value: int) -> str:
    try:
        return str(int(value))
    except ValueError:  # past Python's digit limit for int -> str
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
