"""What every ``zenmeta`` command shares: reaching the store, and printing safely.

Every logged string is printed as text (never as rich markup) with control
characters escaped, since a name or value may hold anything (a stored ``ESC``
could clear the screen or forge a hyperlink); ``--json`` parses back to
exactly the stored text.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.text import Text

from .._errors import ZenmetaError
from .._export import encodable_text
from .._read.client import Client
from .text import escape_controls

if TYPE_CHECKING:
    from .._records import RecordedRun, RecordedStep

__all__ = [
    "client_of",
    "console",
    "echo_json",
    "fail",
    "printable",
    "status_text",
    "store_option",
    "text_of",
    "when",
]

_STYLES = {
    "completed": "green",
    "failed": "red",
    "crashed": "bold red",
    "interrupted": "yellow",
    "running": "cyan",
}


def fail(error: Exception) -> NoReturn:
    """A known problem (no such run, no store): one line and exit code 1."""
    raise click.ClickException(printable(" ".join(str(error).split("\n")))) from None


def store_option(context: click.Context, own: str | None = None) -> str | None:
    """The store a command reads, as typed: its own --store, else the group's.
    ``Client`` applies the store's naming rule (a plain path is a SQLite file)."""
    store = own or context.find_root().params.get("store")
    return store or None


def client_of(context: click.Context) -> Client:
    store = store_option(context)
    try:
        return Client(store)
    except ZenmetaError as error:
        fail(error)


def printable(text: str) -> str:
    """Text any terminal can take and show as it is: control characters are
    escaped (``\\x1b``, ``\\u202e``), lone surrogates become ``\\udcxx``."""
    return encodable_text(escape_controls(text), getattr(sys.stdout, "encoding", None) or "utf-8")


def text_of(value: object, style: str = "") -> Text:
    return Text(printable(str(value)), style=style)


_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""``UNSAFE_CHARACTERS`` less the C0 controls, which ``json.dumps`` escapes
itself (the newlines of its indentation are outside strings)."""


def echo_json(data: Any) -> None:
    """Readable JSON when the terminal can show every character, ASCII otherwise;
    characters a terminal would act on are ``\\u`` escapes, which parse back
    to the same text (they can only occur inside JSON strings)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, indent=2)
    text = _UNSAFE_IN_JSON.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
    if printable(text) != text:
        text = json.dumps(data, ensure_ascii=True, allow_nan=False, indent=2)
    click.echo(text)


def console() -> Console:
    # Piped or captured output has no width to fit; do not cut ids and names at 80.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
    return Console(soft_wrap=False, highlight=False, width=width)


def when(run_or_step: RecordedRun | RecordedStep) -> str:
    return run_or_step.start_time.strftime("%Y-%m-%d %H:%M:%S")


def status_text(status: str) -> Text:
    return text_of(status, _STYLES.get(status, ""))
