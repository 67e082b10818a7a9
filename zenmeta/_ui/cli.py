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

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from .._errors import MissingExtraError, StoreNotFoundError, ZenmetaError
from .._read.client import Client
from .._read.copy import copy_store
from .._records import STATUSES, RecordedRun, RecordedStep
from .._redaction import REDACTED_PREFIX, is_redaction_note
from . import prune
from .terminal import (
    client_of,
    console,
    echo_json,
    fail,
    printable,
    status_text,
    store_option,
    text_of,
    when,
)
from .text import executions_label, human_duration, human_size, type_label, value_text

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["cli", "main"]


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
    "--where",
    default=None,
    metavar="FILTER",
    help="Only runs this filter selects, e.g. \"user.accuracy >= 0.9 and tag = 'nightly'\".",
)
@click.option("--since", default=None, metavar="TIME", help="Only runs started at or after "
              "this UTC time (2026-12-01 or 2026-12-01T09:30).")  # fmt: skip
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only runs with this tag "
              "(repeat for several: all must be there).")  # fmt: skip
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show at most this many runs, newest first.",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many first.")
@click.option("--all", "everything", is_flag=True, help="Show every matching run (no --limit).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON array.")
@click.pass_context
def list_runs(
    context: click.Context,
    pipeline: str | None,
    status: str | None,
    where: str | None,
    since: str | None,
    tags: tuple[str, ...],
    limit: int,
    offset: int,
    everything: bool,
    as_json: bool,
) -> None:
    """List runs, newest first ("showing 20 of 31": --offset and --all page on)."""
    try:
        client = Client(store_option(context))
    except StoreNotFoundError as error:  # nothing recorded here yet: an empty list
        if as_json:
            echo_json([])
        else:
            click.echo(printable(f"No runs: {error}."))
        return
    except ZenmetaError as error:
        fail(error)
    terms = [where] if where else []
    terms += [f"tag = {quoted(tag)}" for tag in tags]
    if since:
        terms.append(f"start_time >= {quoted(since)}")
    chosen = " and ".join(f"({term})" for term in terms) or None
    try:
        found = client.list_runs(
            pipeline=pipeline,
            status=status,
            where=chosen,
            limit=None if everything else limit,
            offset=offset,
        )
        total = client.count_runs(pipeline=pipeline, status=status, where=chosen)
    except ZenmetaError as error:
        fail(error)
    if as_json:
        echo_json([run.to_dict() for run in found])
        return
    if not found:
        matching = " matching the filters" if pipeline or status or chosen else ""
        click.echo(printable(f"No runs recorded{matching} in {client.url}."))
        return
    table = Table("run", "pipeline", "status", "started (UTC)", "duration", "steps", "id")
    for run in found:
        table.add_row(
            text_of(run.name),
            text_of(run.pipeline_name),
            status_text(run.status),
            when(run),
            human_duration(run.duration),
            str(run.step_count),
            run.id.hex[:12],  # run ids are random: 12 digits are unique in practice
        )
    console().print(table)
    first = offset + 1
    click.echo(f"showing {first}-{offset + len(found)} of {total}" if offset else
               f"showing {len(found)} of {total}")  # fmt: skip


def quoted(text: str) -> str:
    """``text`` as a value of the filter language."""
    return "'" + text.replace("'", "''") + "'"


@runs.command("show")
@click.argument("run")
@click.option(
    "--steps",
    "shown",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="List this many steps (and their metadata) after the summary; 0 for none.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run and its steps as JSON.")
@click.pass_context
def show_run(context: click.Context, run: str, shown: int, as_json: bool) -> None:
    """Show RUN (an id, a unique id prefix or a name): its metadata by
    component, its steps summarised by name, then the first of them with
    their metadata; a run of 20,000 steps prints a page, not 160,000 lines."""
    client = client_of(context)
    try:
        found = client.get_run(run)
        if as_json:
            exported = found.to_dict()
            exported["steps"] = [step.to_dict() for step in client.list_steps(found)]
            echo_json(exported)
            return
        summary = client.summarize_steps(found)
        tasks = [task for task in client.summarize_tasks(found) if task.executions > 1]
        steps = client.list_steps(found, limit=shown) if shown else []
    except ZenmetaError as error:
        fail(error)
    screen = console()
    screen.print(_run_fields(found))
    _print_metadata(screen, "Run metadata", found.metadata)
    _print_problems(screen, found)
    if not summary:
        screen.print(Text("No steps recorded."))
        return
    totals = Table("step", "status", "runs", "total time", title="Steps by name")
    for line in summary:
        totals.add_row(
            text_of(line.step_name),
            status_text(line.status),
            str(line.executions),
            human_duration(line.seconds),
        )
    screen.print(totals)
    if tasks:  # Dask recomputes and retries: one task, several executions
        repeated = Table("task", "executions", title="Tasks run more than once")
        for task in tasks:
            label = executions_label(task.step_name, task.executions, task.statuses)
            repeated.add_row(text_of(task.task_key), text_of(label))
        screen.print(repeated)
    if not steps:
        return
    table = Table("#", "step", "status", "started (UTC)", "duration", "metadata", title="Steps")
    for number, step in enumerate(steps, 1):
        keys = sum(len(values) for values in step.metadata.values())
        table.add_row(
            str(number),
            text_of(step.name),
            _step_status(step),
            when(step),
            human_duration(step.duration),
            str(keys),
        )
    screen.print(table)
    total = sum(line.executions for line in summary)
    if total > len(steps):
        screen.print(Text(f"showing {len(steps)} of {total} steps (--steps N for more)"))
    for step in steps:
        if step.metadata or step.faults or step.dropped or step.error_type:
            title = f"Step {step.name}"
            if step.error_type:
                title += f" ({step.error_type}: {step.error_message})"
            _print_metadata(screen, title, step.metadata)
            _print_problems(screen, step)


def _step_status(step: RecordedStep) -> Text:
    """Its status; ``late`` beside it when it finished after its run had ended."""
    shown = status_text(step.status)
    if step.late:
        shown.append(" late", style="yellow")
    return shown


def _run_fields(run: RecordedRun) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Text | str]] = [
        ("run", text_of(run.name)),
        ("id", str(run.id)),
        ("pipeline", text_of(run.pipeline_name)),
        ("status", status_text(run.status)),
        ("started", when(run) + " UTC"),
        ("duration", human_duration(run.duration)),
        ("steps", str(run.step_count)),
        ("host", text_of(f"{run.host} (pid {run.pid})")),
    ]
    if run.tags:
        rows.append(("tags", text_of(", ".join(run.tags))))
    if run.parent_run_id is not None:
        rows.append(("parent run", str(run.parent_run_id)))
    if run.error_type:
        rows.append(("error", text_of(f"{run.error_type}: {run.error_message}", "red")))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _print_metadata(screen: Console, title: str, grouped: Mapping[str, Mapping[str, Any]]) -> None:
    """One table per source, so each component's metadata stays together."""
    if not any(grouped.values()):
        return
    screen.print(text_of(title, "bold"))
    for source, values in grouped.items():
        table = Table("key", "value", "type", title=text_of(source), title_justify="left")
        for key, value in values.items():
            table.add_row(text_of(key), text_of(value_text(value)), type_label(value))
        screen.print(table)


def _print_problems(screen: Console, entity: RecordedRun | RecordedStep) -> None:
    for fault in entity.faults:
        message = f"{fault.component}.{fault.hook} raised {fault.error_type}: {fault.message}"
        screen.print(text_of(message, "yellow"))
    for drop in entity.dropped:
        if is_redaction_note(drop.reason):  # the value was kept, masked
            rule = drop.reason[len(REDACTED_PREFIX) :]
            screen.print(text_of(f"redacted {drop.source}/{drop.key} ({rule})", "cyan"))
        else:
            screen.print(text_of(f"dropped {drop.source}/{drop.key}: {drop.reason}", "yellow"))


@runs.command("export")
@click.argument("run")
@click.pass_context
def export_run(context: click.Context, run: str) -> None:
    """Print RUN and all its steps as one JSON document."""
    client = client_of(context)
    try:
        echo_json(client.export_run(run))
    except ZenmetaError as error:
        fail(error)


@cli.group()
def store() -> None:
    """Inspect the store, or copy runs between stores."""


@store.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the facts as a JSON object.")
@click.pass_context
def store_info(context: click.Context, as_json: bool) -> None:
    """Where the store is, its schema version and what it holds."""
    client = client_of(context)
    try:
        info = client.store_info()
    except ZenmetaError as error:
        fail(error)
    if as_json:
        echo_json(info)
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in _info_rows(info):
        table.add_row(text_of(key), text_of(value))
    console().print(table)


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
        fail(error)
    except Exception as error:  # a server that cannot be reached, a broken file
        fail(RuntimeError(f"cannot copy: {type(error).__name__}: {error}"))
    if as_json:
        echo_json(
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
    client = client_of(context)
    try:
        findings = client.scan_secrets(fix=fix)
    except ZenmetaError as error:
        fail(error)
    if as_json:
        echo_json(
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
                text_of(finding.run_name),
                text_of(finding.step_name or "-"),
                text_of(finding.source),
                text_of(finding.key),
                finding.rule,
                finding.run_id.hex[:12],
            )
        console().print(table)
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
        fail(error)


runs.add_command(prune.diff_runs)
runs.add_command(prune.delete_runs)
store.add_command(prune.gc)


@cli.group()
def steps() -> None:
    """Find steps across runs."""


steps.add_command(prune.find_steps)


def main() -> None:
    """The console script and ``python -m zenmeta``."""
    cli(prog_name="zenmeta")
