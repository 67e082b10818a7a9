"""``zenmeta ui``: the click command that serves the local dashboard.

Kept apart from the dashboard module so that the CLI can register it
without importing Starlette: the web stack is loaded only when the command
runs, and a missing extra becomes a one-line error instead of a traceback.
"""

from __future__ import annotations

import click

from ._errors import MissingExtraError, StoreError

__all__ = ["ui"]


@click.command("ui")
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
    help="Store to read, e.g. sqlite:///path/zenmeta.db or a path to a database file "
    "[default: zenmeta --store, else the configured store].",
)
@click.pass_context
def ui(context: click.Context, host: str, port: int, store: str | None) -> None:
    """Serve a read-only dashboard of every run and its metadata."""
    from ._cli import store_option

    store = store_option(context, store)
    try:
        from ._dashboard import serve
    except MissingExtraError as error:
        raise click.ClickException(str(error)) from None
    try:
        serve(host=host, port=port, store=store)
    except (MissingExtraError, StoreError) as error:
        raise click.ClickException(str(error)) from None
