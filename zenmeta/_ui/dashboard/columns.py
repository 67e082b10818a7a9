"""User-chosen metadata columns, and links from recorded MLflow run ids to MLflow's UI.

A reader who filters runs by ``user.accuracy`` wants to see it beside each
run without opening every one: ``?columns=user.accuracy,environment.git_commit``
adds one column per field, addressed exactly as the filter language addresses
metadata (``source.key``, dots into nested dicts). A run that lacks the value
gets an empty cell; a field that does not parse is one clear message, and the
page still shows. Cells use the shared one-line rules of ``_ui/text.py`` so a
value reads the same here as in the terminal, the full value in a tooltip.

The MLflow tracker records ``mlflow_run_id`` and, for an http(s) tracking
server, ``mlflow_run_url``. The id is the thing people copy, so it becomes
the link, and only to an http(s) page whose address carries no user or
password (records from any store are checked again, not trusted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from markupsafe import Markup

from ..._errors import QueryError
from ..._read.query import parse_field
from ..._values import StorageSize, Uri
from ..text import link_target, value_text
from .render import render_value

if TYPE_CHECKING:
    import jinja2

if TYPE_CHECKING:
    from ..._filters import Field

__all__ = [
    "MAX_COLUMNS",
    "add_to",
    "first_mlflow_link",
    "Column",
    "column_cell",
    "field_value",
    "is_missing",
    "metadata_cell",
    "mlflow_link",
    "parse_chart",
    "parse_columns",
]

MAX_COLUMNS = 12
_CELL = 60
_MISSING: Any = object()
_LINK = '<a class="uri" href="{}" rel="noopener noreferrer nofollow">{}</a>'


class Column(NamedTuple):
    """One chosen column: the field it shows and its heading."""

    field: Field
    label: str


def parse_columns(text: str | None) -> tuple[list[Column], str | None]:
    """The columns ``text`` names (comma-separated fields), and the error of the
    first one that does not parse, if any (the others are still shown)."""
    if not text:
        return [], None
    columns: list[Column] = []
    seen: set[Field] = set()
    for number, part in enumerate(text.split(","), start=1):
        if not part.strip():
            continue
        if len(columns) == MAX_COLUMNS:
            return columns, f"at most {MAX_COLUMNS} columns at once"
        try:
            field = parse_field(part)
        except QueryError as error:
            return columns, f"column {number} ({part.strip()!r}): {error}"
        if field not in seen:
            seen.add(field)
            columns.append(Column(field, str(field)))
    return columns, None


def parse_chart(text: str | None) -> tuple[Field | None, str | None]:
    """The one field ``?chart=`` names, or the reason it cannot be read."""
    if not text:
        return None, None
    try:
        return parse_field(text), None
    except QueryError as error:
        return None, f"chart ({text.strip()!r}): {error}"


def field_value(field: Field, metadata: Mapping[str, Any]) -> Any:
    """The value ``field`` names in grouped ``metadata``, or the module's missing marker."""
    value: Any = metadata.get(field.name, _MISSING)
    for key in field.path:
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def is_missing(value: Any) -> bool:
    """Whether ``field_value`` found nothing."""
    return value is _MISSING


def column_cell(column: Column, metadata: Mapping[str, Any]) -> Markup:
    """One table cell's content: empty when the record has no such value."""
    value = field_value(column.field, metadata)
    if value is _MISSING:
        return Markup("")
    if column.field.path[-1] == "mlflow_run_id":
        group = metadata.get(column.field.name)
        link = mlflow_link(group) if isinstance(group, Mapping) else None
        if link is not None:
            return link
    if isinstance(value, Uri):
        href = link_target(value)
        if href is not None:
            return Markup(_LINK).format(href, value_text(value, limit=_CELL))
    shown = value_text(value, limit=_CELL)
    full = (
        f"{int(value):,} bytes" if isinstance(value, StorageSize) else value_text(value, limit=2000)
    )
    if full != shown:
        return Markup('<span title="{}">{}</span>').format(full, shown)
    return Markup("{}").format(shown)


def _mlflow_page(values: Mapping[str, Any]) -> str | None:
    run_id = values.get("mlflow_run_id")
    if not isinstance(run_id, str) or not run_id:
        return None
    url = values.get("mlflow_run_url")
    if not isinstance(url, str):
        base, experiment = values.get("mlflow_tracking_uri"), values.get("mlflow_experiment_id")
        if not isinstance(base, str) or not isinstance(experiment, str):
            return None
        url = f"{str.__str__(base).rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
    url = str.__str__(url)
    if link_target(url) is None or not url.lower().startswith(("http://", "https://")):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return None
    if not url.endswith(f"/runs/{run_id}"):  # a link to that run, or none
        return None
    return url


def mlflow_link(values: Mapping[str, Any]) -> Markup | None:
    """The group's ``mlflow_run_id`` as a link to its page in MLflow's UI, or ``None``
    unless that page is http(s) and its address has no credentials in it."""
    url = _mlflow_page(values)
    if url is None:
        return None
    return Markup(
        '<a class="mlflow" href="{}" rel="noopener noreferrer nofollow" '
        'title="this run in MLflow">{}</a>'
    ).format(url, str.__str__(values["mlflow_run_id"]))


def metadata_cell(values: Mapping[str, Any], key: str) -> Markup:
    """A metadata table's value cell: a link to another tool's page, or the value."""
    link = mlflow_link(values) if key == "mlflow_run_id" else None
    return render_value(values[key]) if link is None else link


def first_mlflow_link(metadata: Mapping[str, Any]) -> Markup | None:
    """The first MLflow run link in a record's metadata groups, for its facts list."""
    for values in metadata.values():
        link = mlflow_link(values) if isinstance(values, Mapping) else None
        if link is not None:
            return link
    return None


def add_to(environment: jinja2.Environment) -> None:
    """The templates' names for all of this: ``metadata_value``, ``cell``, ``mlflow_link``."""
    environment.filters.update(
        metadata_value=metadata_cell,
        cell=lambda metadata, column: column_cell(column, metadata),
    )
    environment.globals["mlflow_link"] = first_mlflow_link
