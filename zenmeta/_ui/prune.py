"""``zenmeta runs diff``, ``runs delete``, ``store gc`` and ``steps find``.

Comparing, finding and pruning, over the same ``Client`` calls Python code
uses (``diff_runs``, ``find_steps``, ``delete_runs``, ``gc``). Deleting asks
first unless ``--yes``; ``gc --dry-run`` lists exactly what would go.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING

import click
from rich.table import Table

from .._errors import ZenmetaError
from .._read.diff import MISSING
from .terminal import client_of, console, echo_json, fail, printable, status_text, text_of, when
from .text import NO_VALUE, human_duration, value_text

if TYPE_CHECKING:
    from .._records import RecordedRun

__all__ = ["delete_runs", "diff_runs", "find_steps", "gc"]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@click.command("diff")
@click.argument("refs", nargs=-1, required=True, metavar="RUN RUN [RUN…]")
@click.option("--all", "everything", is_flag=True, help="Show equal values too.")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option("--markdown", is_flag=True, help="Print Markdown tables, fit for a pull request.")
@click.pass_context
def diff_runs(
    context: click.Context, refs: tuple[str, ...], everything: bool, as_json: bool, markdown: bool
) -> None:
    """What differs between two or more runs: fields, packages, git, each
    component's metadata, user metadata and steps."""
    if len(refs) < 2:
        fail(ValueError("give two runs or more to compare"))
    client = client_of(context)
    try:
        diff = client.diff_runs(*refs, everything=everything)
    except ZenmetaError as error:
        fail(error)
    if as_json:
        echo_json(diff.to_dict())
        return
    if markdown:
        for line in diff.to_markdown().splitlines():  # each line made safe, newlines kept
            click.echo(printable(line))
        return
    labels = diff.labels
    screen = console()
    sections = [("run", diff.fields), *((f"{s} metadata", k) for s, k in diff.metadata.items())]
    sections.append(("steps", diff.steps))
    shown = False
    for title, rows in sections:
        if not rows:
            continue
        shown = True
        table = Table("", *labels, title=printable(title), title_justify="left")
        for name, values in rows.items():
            cells = [NO_VALUE if value is MISSING else value_text(value, limit=60)
                     for value in values]  # fmt: skip
            table.add_row(text_of(name), *(text_of(cell) for cell in cells))
        screen.print(table)
    if not shown:
        click.echo("No differences.")


@click.command("delete")
@click.argument("refs", nargs=-1, required=True, metavar="RUN…")
@click.option("--yes", is_flag=True, help="Do not ask before deleting.")
@click.pass_context
def delete_runs(context: click.Context, refs: tuple[str, ...], yes: bool) -> None:
    """Delete runs for good, each with its steps, metadata and child runs.
    A run whose process is still alive is refused."""
    client = client_of(context)
    try:
        found = [client.get_run(ref) for ref in refs]
    except ZenmetaError as error:
        fail(error)
    names = ", ".join(run.name for run in found)
    if not yes and not click.confirm(printable(f"Delete {len(found)} run(s): {names}?")):
        raise click.Abort
    try:
        count = client.delete_runs(*found)
    except ZenmetaError as error:
        fail(error)
    click.echo(printable(f"deleted {count} run(s), child runs included"))


@click.command("gc")
@click.option("--older-than", default=None, metavar="AGE", help="Runs started longer ago "
              "than this: 90s, 30m, 12h, 30d, 2w.")  # fmt: skip
@click.option("--status", "statuses", default=None, metavar="LIST",
              help="Runs with one of these statuses, e.g. failed,crashed.")  # fmt: skip
@click.option("--keep-last", type=click.IntRange(min=0), default=None, metavar="N",
              help="Keep each pipeline's N newest runs, whatever else is said.")  # fmt: skip
@click.option("--where", default=None, metavar="FILTER", help="Runs this filter selects.")
@click.option("--dry-run", is_flag=True, help="List what would go; delete nothing.")
@click.option("--vacuum", is_flag=True, help="Give the freed space back afterwards.")
@click.option("--yes", is_flag=True, help="Do not ask before deleting.")
@click.pass_context
def gc(
    context: click.Context,
    older_than: str | None,
    statuses: str | None,
    keep_last: int | None,
    where: str | None,
    dry_run: bool,
    vacuum: bool,
    yes: bool,
) -> None:
    """Collect old runs: those every given rule selects. A run tagged ``pinned``
    is never collected, nor one whose process is alive."""
    client = client_of(context)
    age = None if older_than is None else _age(older_than)
    status = None if statuses is None else [s.strip() for s in statuses.split(",") if s.strip()]

    def collect(*, dry_run: bool, vacuum: bool = False) -> list[RecordedRun]:
        return client.gc(
            older_than=age,
            status=status,
            keep_last=keep_last,
            where=where,
            dry_run=dry_run,
            vacuum=vacuum,
        )

    try:
        chosen = collect(dry_run=True)
        _print_runs(chosen)
        if dry_run or not chosen:
            click.echo(
                f"{len(chosen)} run(s) would be deleted" if dry_run else "Nothing to collect."
            )
            return
        if not yes and not click.confirm(f"Delete these {len(chosen)} run(s)?"):
            raise click.Abort
        deleted = collect(dry_run=False, vacuum=vacuum)
    except (ZenmetaError, ValueError) as error:
        fail(error)
    click.echo(f"deleted {len(deleted)} run(s)")


@click.command("find")
@click.option("--where", required=True, metavar="FILTER", help="Which steps, e.g. "
              "\"mlflow.mlflow_run_id = 'abc'\" or \"status = 'failed'\".")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many steps, newest first.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the steps as a JSON array.")
@click.pass_context
def find_steps(context: click.Context, where: str, limit: int, as_json: bool) -> None:
    """Steps of every run that a filter selects, newest first."""
    client = client_of(context)
    try:
        found = client.find_steps(where, limit=limit)
    except ZenmetaError as error:
        fail(error)
    if as_json:
        echo_json([step.to_dict() for step in found])
        return
    if not found:
        click.echo("No steps match.")
        return
    table = Table("step", "status", "started (UTC)", "duration", "run id", "step id")
    for step in found:
        table.add_row(
            text_of(step.name),
            status_text(step.status),
            when(step),
            human_duration(step.duration),
            step.run_id.hex[:12],
            str(step.id),
        )
    console().print(table)


def _age(text: str) -> timedelta:
    found = _AGE.match(text)
    if found is None:
        raise click.BadParameter(f"{text!r}: use a number and a unit, such as 30d or 12h")
    return timedelta(**{_UNITS[found.group(2)]: float(found.group(1))})


def _print_runs(runs: list[RecordedRun]) -> None:
    if not runs:
        return
    table = Table("run", "pipeline", "status", "started (UTC)", "id")
    for run in runs:
        table.add_row(
            text_of(run.name),
            text_of(run.pipeline_name),
            status_text(run.status),
            when(run),
            run.id.hex[:12],
        )
    console().print(table)
