"""The ``zenmeta`` command: runs and the store, from a terminal.

A thin click layer over ``Client``, the public read API, like sqlite-utils'
``cli.py`` over its ``db.py``. Tables are drawn with rich; every logged
string is printed as text (never as rich markup) with control characters
escaped (a stored ``ESC`` could clear the screen or forge a hyperlink), since
a name or value may hold anything. ``--json`` output parses back with any
JSON library to exactly the stored text: NaN and infinities are strings (see
``RecordedRun.to_dict``) and unsafe characters are ``\\u`` escapes. Every
command only reads: a missing store is reported, never created.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._errors import MissingExtraError, StoreNotFoundError, ZenmetaError
from .._export import encodable_text
from .._read.client import Client
from .._read.copy import copy_store
from .._records import STATUSES, RecordedRun, RecordedStep
from .._redaction import REDACTED_PREFIX, is_redaction_note
from .text import escape_controls, human_duration, human_size, type_label, value_text

__all__ = ["cli", "main"]

_STYLES = {
    "completed": "green",
    "failed": "red",
    "crashed": "bold red",
    "interrupted": "yellow",
    "running": "cyan",
}


def _fail(error: Exception) -> NoReturn:
    """A known problem (no such run, no store): one line and exit code 1."""
    raise click.ClickException(_printable(" ".join(str(error).split("\n")))) from None


def store_option(context: click.Context, own: str | None = None) -> str | None:
    """The store a command reads, as typed: its own --store, else the group's.
    ``Client`` applies the store's naming rule (a plain path is a SQLite file)."""
    store = own or context.find_root().params.get("store")
    return store or None


def _client(context: click.Context) -> Client:
    store = store_option(context)
    try:
        return Client(store)
    except ZenmetaError as error:
        _fail(error)


def _printable(text: str) -> str:
    """Text any terminal can take and show as it is: control characters are
    escaped (``\\x1b``, ``\\u202e``), lone surrogates become ``\\udcxx``."""
    return encodable_text(escape_controls(text), getattr(sys.stdout, "encoding", None) or "utf-8")


def _text(value: object, style: str = "") -> Text:
    return Text(_printable(str(value)), style=style)


_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""``UNSAFE_CHARACTERS`` less the C0 controls, which ``json.dumps`` escapes
itself (the newlines of its indentation are outside strings)."""


def _echo_json(data: Any) -> None:
    """Readable JSON when the terminal can show every character, ASCII otherwise;
    characters a terminal would act on are ``\\u`` escapes, which parse back
    to the same text (they can only occur inside JSON strings)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, indent=2)
    text = _UNSAFE_IN_JSON.sub(lambda found: f"\\u{ord(found.group()):04x}", text)
    if _printable(text) != text:
        text = json.dumps(data, ensure_ascii=True, allow_nan=False, indent=2)
    click.echo(text)


def _console() -> Console:
    # Piped or captured output has no width to fit; do not cut ids and names at 80.
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
    return Console(soft_wrap=False, highlight=False, width=width)


def _when(run_or_step: RecordedRun | RecordedStep) -> str:
    return run_or_step.start_time.strftime("%Y-%m-%d %H:%M:%S")


def _status(status: str) -> Text:
    return _text(status, _STYLES.get(status, ""))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    metavar="URL",
    default=None,
    help=(
        "The store to read: a path to a SQLite file, sqlite:///path/zenmeta.db, "
        "postgresql://... Default: ZENMETA_STORE, else store in [tool.zenmeta], else "
        ".zenmeta/zenmeta.db in the project root (the nearest folder with a pyproject.toml "
        "or .git). Never created: a missing store is an error."
    ),
)
@click.version_option(package_name="zenmeta", prog_name="zenmeta")
def cli(store: str | None) -> None:
    """Look at the runs, steps and metadata zenmeta recorded."""


@cli.group()
def runs() -> None:
    """List, show and export recorded runs."""


@runs.command("list")
@click.option("--pipeline", default=None, help="Only runs of this pipeline.")
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    default=None,
    help="Only runs with this status ('crashed': the process died mid-run).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many runs, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON array.")
@click.pass_context
def list_runs(
    context: click.Context, pipeline: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List runs, newest first."""
    try:
        client = Client(store_option(context))
    except StoreNotFoundError as error:  # nothing recorded here yet: an empty list
        if as_json:
            _echo_json([])
        else:
            click.echo(_printable(f"No runs: {error}."))
        return
    except ZenmetaError as error:
        _fail(error)
    try:
        found = client.list_runs(pipeline=pipeline, status=status, limit=limit)
    except ZenmetaError as error:
        _fail(error)
    if as_json:
        _echo_json([run.to_dict() for run in found])
        return
    if not found:
        matching = " matching the filters" if pipeline or status else ""
        click.echo(_printable(f"No runs recorded{matching} in {client.url}."))
        return
    table = Table("run", "pipeline", "status", "started (UTC)", "duration", "steps", "id")
    for run in found:
        table.add_row(
            _text(run.name),
            _text(run.pipeline_name),
            _status(run.status),
            _when(run),
            human_duration(run.duration),
            str(run.step_count),
            run.id.hex[:12],  # run ids are random: 12 digits are unique in practice
        )
    _console().print(table)


@runs.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print the run and its steps as JSON.")
@click.pass_context
def show_run(context: click.Context, run: str, as_json: bool) -> None:
    """Show RUN (an id, a unique id prefix or a name): its metadata by
    component, its steps with status and duration, and each step's metadata."""
    client = _client(context)
    try:
        found = client.get_run(run)
        steps = client.list_steps(found)
    except ZenmetaError as error:
        _fail(error)
    if as_json:
        exported = found.to_dict()
        exported["steps"] = [step.to_dict() for step in steps]
        _echo_json(exported)
        return
    console = _console()
    console.print(_run_fields(found))
    _print_metadata(console, "Run metadata", found.metadata)
    _print_problems(console, found)
    if not steps:
        console.print(Text("No steps recorded."))
        return
    table = Table("#", "step", "status", "started (UTC)", "duration", "metadata", title="Steps")
    for number, step in enumerate(steps, 1):
        keys = sum(len(values) for values in step.metadata.values())
        table.add_row(
            str(number),
            _text(step.name),
            _status(step.status),
            _when(step),
            human_duration(step.duration),
            str(keys),
        )
    console.print(table)
    for step in steps:
        if step.metadata or step.faults or step.dropped or step.error_type:
            title = f"Step {step.name}"
            if step.error_type:
                title += f" ({step.error_type}: {step.error_message})"
            _print_metadata(console, title, step.metadata)
            _print_problems(console, step)


def _run_fields(run: RecordedRun) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Text | str]] = [
        ("run", _text(run.name)),
        ("id", str(run.id)),
        ("pipeline", _text(run.pipeline_name)),
        ("status", _status(run.status)),
        ("started", _when(run) + " UTC"),
        ("duration", human_duration(run.duration)),
        ("steps", str(run.step_count)),
        ("host", _text(f"{run.host} (pid {run.pid})")),
    ]
    if run.tags:
        rows.append(("tags", _text(", ".join(run.tags))))
    if run.parent_run_id is not None:
        rows.append(("parent run", str(run.parent_run_id)))
    if run.error_type:
        rows.append(("error", _text(f"{run.error_type}: {run.error_message}", "red")))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _print_metadata(console: Console, title: str, grouped: Mapping[str, Mapping[str, Any]]) -> None:
    """One table per source, so each component's metadata stays together."""
    if not any(grouped.values()):
        return
    console.print(_text(title, "bold"))
    for source, values in grouped.items():
        table = Table("key", "value", "type", title=_text(source), title_justify="left")
        for key, value in values.items():
            table.add_row(_text(key), _text(value_text(value)), type_label(value))
        console.print(table)


def _print_problems(console: Console, entity: RecordedRun | RecordedStep) -> None:
    for fault in entity.faults:
        message = f"{fault.component}.{fault.hook} raised {fault.error_type}: {fault.message}"
        console.print(_text(message, "yellow"))
    for drop in entity.dropped:
        if is_redaction_note(drop.reason):  # the value was kept, masked
            rule = drop.reason[len(REDACTED_PREFIX) :]
            console.print(_text(f"redacted {drop.source}/{drop.key} ({rule})", "cyan"))
        else:
            console.print(_text(f"dropped {drop.source}/{drop.key}: {drop.reason}", "yellow"))


@runs.command("export")
@click.argument("run")
@click.pass_context
def export_run(context: click.Context, run: str) -> None:
    """Print RUN and all its steps as one JSON document."""
    client = _client(context)
    try:
        _echo_json(client.export_run(run))
    except ZenmetaError as error:
        _fail(error)


@cli.group()
def store() -> None:
    """Inspect the store, or copy runs between stores."""


@store.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as a JSON object.")
@click.pass_context
def store_info(context: click.Context, as_json: bool) -> None:
    """Where the store is, its schema version and what it holds."""
    client = _client(context)
    try:
        info = client.store_info()
    except ZenmetaError as error:
        _fail(error)
    if as_json:
        _echo_json(info)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in _info_rows(info):
        table.add_row(_text(key), _text(value))
    _console().print(table)


@store.command("copy")
@click.argument("source")
@click.argument("target")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]),
    default=None,
    help="Only runs started at or after this UTC time (2026-12-01 or 2026-12-01T09:30).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as a JSON object.")
def copy(source: str, target: str, since: Any, as_json: bool) -> None:
    """Copy runs, steps and metadata from SOURCE to TARGET, ids and types kept.

    Either may be a SQLite file (a URL or a path) or a PostgreSQL URL. Running
    it again copies only what is new: later steps and final statuses."""
    try:
        counts = copy_store(source, target, since=since)
    except ZenmetaError as error:
        _fail(error)
    except Exception as error:  # a server that cannot be reached, a broken file
        _fail(RuntimeError(f"cannot copy: {type(error).__name__}: {error}"))
    if as_json:
        _echo_json(
            {"runs": counts.runs, "steps": counts.steps, "metadata_sets": counts.metadata_sets}
        )
        return
    click.echo(
        f"copied {counts.runs} runs, {counts.steps} new steps and {counts.metadata_sets} "
        f"metadata sets from {counts.source} to {counts.target}"
    )


def _info_rows(info: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    for key, value in info.items():
        if key == "size_bytes" and isinstance(value, int):
            key, value = "size", human_size(value)
        elif isinstance(value, Mapping):
            value = ", ".join(f"{name}: {count}" for name, count in value.items()) or "-"
        yield key.replace("_", " "), "-" if value is None else str(value)


@store.command("scan")
@click.option("--fix", is_flag=True, help="Mask what is found, in place, one transaction per run.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as a JSON array.")
@click.pass_context
def store_scan(context: click.Context, fix: bool, as_json: bool) -> None:
    """Find stored values the redaction rules would mask (credentials in URLs,
    secret-named keys, token formats); --fix masks them. Without --fix, exits
    with status 1 when something is found, so CI can fail on a leak."""
    client = _client(context)
    try:
        findings = client.scan_secrets(fix=fix)
    except ZenmetaError as error:
        _fail(error)
    if as_json:
        _echo_json(
            [
                {
                    **finding._asdict(),
                    "run_id": str(finding.run_id),
                    "step_id": None if finding.step_id is None else str(finding.step_id),
                }
                for finding in findings
            ]
        )
    elif not findings:
        click.echo("No stored value needs redacting.")
    else:
        table = Table("run", "step", "source", "key", "rule", "run id")
        for finding in findings:
            table.add_row(
                _text(finding.run_name),
                _text(finding.step_name or "-"),
                _text(finding.source),
                _text(finding.key),
                finding.rule,
                finding.run_id.hex[:12],
            )
        _console().print(table)
        runs = len({finding.run_id for finding in findings})
        done = "masked" if fix else "found (run with --fix to mask them)"
        click.echo(f"{len(findings)} value(s) in {runs} run(s) {done}.")
    if findings and not fix:
        context.exit(1)


@cli.command("ui")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind. Anything but loopback exposes every run to the network.",
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
@click.option(
    "--store",
    "store",
    default=None,
    metavar="URL",
    help="Store to read, e.g. a path to a SQLite file or sqlite:///path/zenmeta.db "
    "[default: zenmeta --store, else the configured store]. Never created.",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Another name the dashboard answers to in the Host header (a reverse proxy's "
    "name, say); this machine's own names and addresses are always allowed.",
)
@click.pass_context
def ui(
    context: click.Context,
    host: str,
    port: int,
    store: str | None,
    allow_hosts: tuple[str, ...],
) -> None:
    """Serve a read-only dashboard of every run and its metadata."""
    store = store_option(context, store)
    try:  # the web stack loads only when this command runs
        from .dashboard import serve
    except MissingExtraError as error:
        raise click.ClickException(str(error)) from None
    try:
        serve(host=host, port=port, store=store, allow_hosts=allow_hosts)
    except ZenmetaError as error:
        _fail(error)


def main() -> None:
    """The console script and ``python -m zenmeta``."""
    cli(prog_name="zenmeta")
