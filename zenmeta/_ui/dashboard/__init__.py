"""The local dashboard: read-only pages over ``Client``, served by uvicorn.

Three pages — the runs, one run with its steps, one step — built only from
the public read API, so the dashboard shows exactly what ``Client`` and the
CLI show. It is a local tool that may hold secrets in metadata, so it is
hardened like a public site: every value is escaped by Jinja2's autoescape
and the typed renderers, each response carries a Content-Security-Policy
that allows no script at all, anything unexpected answers a 404 page, and
steps are read one page at a time so a huge run costs what one page costs.
Control characters in stored text, the bidirectional ones above all
(``invoice\\u202egpj.exe`` would read ``invoiceexe.jpg``), are shown as
visible escapes. The ``Host`` header is checked against the names and
addresses the server answers on, bound to loopback or not, which stops a
web page from reading the dashboard through DNS rebinding.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode
from uuid import UUID

from ..._errors import (
    ConfigurationError,
    MissingExtraError,
    QueryError,
    RunNotFoundError,
    StoreError,
)
from ..._export import encodable_text
from ..._read.client import Client
from ..._read.diff import MISSING
from ..._records import STATUSES, RecordedRun
from ..text import executions_label

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

try:
    import jinja2
    from starlette.applications import Starlette
    from starlette.datastructures import MutableHeaders
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import Response
    from starlette.routing import Route

    from .. import text
    from . import columns as chosen
    from . import render
    from .chart import metadata_chart
    from .render import show_controls
    from .timeline import timeline_svg
except ImportError as error:  # pragma: no cover - exercised by a test that hides starlette
    raise MissingExtraError((error.name or "starlette").split(".")[0], "dashboard") from error

__all__ = [
    "create_app",
    "serve",
    "is_loopback",
    "served_hosts",
    "show_controls",
    "RUNS_PER_PAGE",
    "STEPS_PER_PAGE",
]

logger = logging.getLogger("zenmeta")
_T = TypeVar("_T")

RUNS_PER_PAGE = 50
STEPS_PER_PAGE = 100
_MAX_PARAM = 256
_MAX_FILTER = 2000
_MAX_COMPARED = 20
_MAX_PAGE_DIGITS = 9
_REFRESH_SECONDS = 5

# No script of any kind is needed (auto-refresh is a <meta> tag), so the
# policy forbids all of it, inline or not; styles come only from our CSS.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; img-src 'self' data:"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class _SecurityHeaders:
    """Adds the security headers to every response that passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(__name__, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        value=render.render_value,
        type_label=text.type_label,
        time=render.render_time,
        status=render.render_status,
        duration=text.human_duration,
        elapsed=render.elapsed_since,
    )
    chosen.add_to(environment)
    return environment


def create_app(client: Client, *, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The dashboard as an ASGI app reading through ``client``.

    ``allowed_hosts`` limits the ``Host`` header the app answers (``serve``
    passes the loopback names when bound to loopback, which stops a web page
    from reading the dashboard through DNS rebinding); ``None`` accepts any.
    """
    environment = _environment()
    stylesheet = resources.files(__name__).joinpath("static/dashboard.css").read_bytes()

    def page(
        template: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> Response:
        html = show_controls(
            environment.get_template(template).render(store_url=client.url, **context)
        )
        # The markup is already escaped, so backslash escapes are safe and visible.
        body = encodable_text(html).encode("utf-8")
        return Response(
            body,
            status_code=status_code,
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-store", **(headers or {})},
        )

    def runs_page(request: Request) -> Response:
        page_number = _page_number(request)
        pipeline = _text_param(request, "pipeline")
        status = _text_param(request, "status")
        where = _text_param(request, "where", _MAX_FILTER)
        columns_text = _text_param(request, "columns", _MAX_FILTER)
        chart_text = _text_param(request, "chart")
        columns, column_error = chosen.parse_columns(columns_text)
        chart_field, chart_error = chosen.parse_chart(chart_text)
        if status is not None and status not in STATUSES:
            raise HTTPException(404, f"there is no run status {status!r}")
        offset = (page_number - 1) * RUNS_PER_PAGE
        query_error = None
        runs: Sequence[RecordedRun] = ()
        try:
            runs = _read(
                lambda: client.list_runs(
                    pipeline=pipeline,
                    status=status,
                    where=where,
                    limit=RUNS_PER_PAGE + 1,
                    offset=offset,
                )
            )
        except QueryError as error:  # the user's own typo: say where, never a 500
            query_error = str(error)
        if page_number > 1 and not runs and query_error is None:
            raise HTTPException(404, f"there is no page {page_number} of runs")
        filters = {"pipeline": pipeline, "status": status, "where": where}
        filters.update(columns=columns_text, chart=chart_text)
        shown = runs[:RUNS_PER_PAGE]
        return page(
            "runs.html",
            400 if query_error or column_error or chart_error else 200,
            runs=shown,
            pipeline=pipeline or "",
            status=status or "",
            where=where or "",
            query_error=query_error,
            columns=columns,
            columns_text=columns_text or "",
            column_error=column_error or chart_error,
            chart_text=chart_text or "",
            chart=None if chart_field is None else metadata_chart(shown, chart_field),
            statuses=STATUSES,
            page_number=page_number,
            offset=offset,
            previous_url=_page_url("/", filters, page_number - 1) if page_number > 1 else None,
            next_url=_page_url("/", filters, page_number + 1)
            if len(runs) > RUNS_PER_PAGE
            else None,
            refresh=_REFRESH_SECONDS if any(r.status == "running" for r in runs) else None,
        )

    def run_page(request: Request) -> Response:
        reference = _reference_param(request, "run_id")  # an id, a unique prefix, a name
        page_number = _page_number(request)
        columns_text = _text_param(request, "columns", _MAX_FILTER)
        columns, column_error = chosen.parse_columns(columns_text)
        kept = {"columns": columns_text}
        run = _read(lambda: client.get_run(reference))
        offset = (page_number - 1) * STEPS_PER_PAGE
        steps = _read(lambda: client.list_steps(run, limit=STEPS_PER_PAGE + 1, offset=offset))
        tasks = _read(lambda: client.summarize_tasks(run))
        if page_number > 1 and not steps:
            raise HTTPException(404, f"run {run.name} has no page {page_number} of steps")
        # step_count is the store's total; never show fewer than we can see.
        total = max(run.step_count, offset + len(steps))
        path = f"/runs/{run.id}"
        rows = render.step_tree(steps[:STEPS_PER_PAGE])
        return page(
            "run.html",
            400 if column_error else 200,
            run=run,
            columns=columns,
            columns_text=columns_text or "",
            column_error=column_error,
            rows=rows,
            timeline=timeline_svg(rows, run.start_time, run.end_time),
            repeated_tasks=[  # one task, several executions (Dask recomputes and retries)
                (task.task_key, executions_label(task.step_name, task.executions, task.statuses))
                for task in tasks
                if task.executions > 1
            ],
            step_total=total,
            first_step=offset + 1,
            last_step=offset + min(len(steps), STEPS_PER_PAGE),
            page_number=page_number,
            page_count=max(1, -(-total // STEPS_PER_PAGE)),
            previous_url=_page_url(path, kept, page_number - 1) if page_number > 1 else None,
            next_url=_page_url(path, kept, page_number + 1)
            if len(steps) > STEPS_PER_PAGE
            else None,
            first_url=_page_url(path, kept, 1) + "#steps",
            last_url=_page_url(path, kept, max(1, -(-total // STEPS_PER_PAGE))),
            refresh=_REFRESH_SECONDS if run.status == "running" else None,
        )

    def compare_page(request: Request) -> Response:
        refs = [ref for ref in request.query_params.getlist("run") if ref.strip()]
        if len(refs) < 2:
            raise HTTPException(404, "pick two runs or more to compare (?run=A&run=B)")
        if len(refs) > _MAX_COMPARED or any(len(ref) > _MAX_PARAM for ref in refs):
            raise HTTPException(404, f"compare at most {_MAX_COMPARED} runs at once")
        everything = request.query_params.get("all") == "1"
        diff = _read(lambda: client.diff_runs(*refs, everything=everything))
        sections = [("Run", diff.fields)]
        sections += [(f"Metadata: {source}", rows) for source, rows in diff.metadata.items()]
        sections.append(("Steps", diff.steps))
        return page(
            "compare.html",
            diff=diff,
            sections=[(title, rows) for title, rows in sections if rows],
            missing=MISSING,
            everything=everything,
            all_url="/compare?" + urlencode([("run", ref) for ref in refs] + [("all", "1")]),
        )

    def step_page(request: Request) -> Response:
        step_id = _uuid_param(request, "step_id", "step")
        step = _read(lambda: client.get_step(step_id))
        run = _read_optional(lambda: client.get_run(step.run_id))
        parent = None
        if step.parent_step_run_id is not None:
            parent_id = step.parent_step_run_id
            parent = _read_optional(lambda: client.get_step(parent_id))
        return page("step.html", step=step, run=run, parent=parent)

    def stylesheet_file(request: Request) -> Response:
        return Response(
            stylesheet, media_type="text/css", headers={"Cache-Control": "max-age=3600"}
        )

    def error_page(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status_code, detail = exc.status_code, exc.detail
        else:  # pragma: no cover - Starlette routes only HTTPException here
            status_code, detail = 500, None
        headers = dict(getattr(exc, "headers", None) or {})
        if status_code == 404:
            title = "Not found"
            detail = detail if detail and detail != "Not Found" else "There is no page here."
        else:
            title = detail or "Error"
        return page(
            "error.html", status_code, headers, title=title, code=status_code, detail=detail
        )

    def server_error_page(request: Request, exc: Exception) -> Response:
        # The traceback goes to the server log, never into the page.
        logger.error("dashboard failed on %s", request.url.path, exc_info=exc)
        response = page(
            "error.html",
            500,
            title="The dashboard failed",
            code=500,
            detail="Something went wrong while reading the store; the server log has the details.",
        )
        # This handler runs outside the middleware stack, so add the headers here.
        response.headers.update(SECURITY_HEADERS)
        return response

    middleware = [Middleware(_SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    handlers: dict[Any, Callable[[Request, Exception], Response | Awaitable[Response]]] = {
        HTTPException: error_page,
        500: server_error_page,
    }
    return Starlette(
        routes=[
            Route("/", runs_page, methods=["GET"]),
            Route("/runs", runs_page, methods=["GET"]),
            Route("/runs/{run_id}", run_page, methods=["GET"]),
            Route("/steps/{step_id}", step_page, methods=["GET"]),
            Route("/compare", compare_page, methods=["GET"]),
            Route("/static/dashboard.css", stylesheet_file, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers=handlers,
    )


def _read(reading: Callable[[], _T]) -> _T:
    """Run one read; a miss is a 404 and a store failure a 503, both as pages."""
    try:
        return reading()
    except RunNotFoundError as error:
        raise HTTPException(404, str(error)) from None
    except StoreError as error:
        logger.error("dashboard could not read the store: %s", error)
        raise HTTPException(503, "The store could not be read right now.") from None


def _read_optional(reading: Callable[[], _T]) -> _T | None:
    try:
        return _read(reading)
    except HTTPException as error:
        if error.status_code == 404:
            return None
        raise


def _text_param(request: Request, name: str, longest: int = _MAX_PARAM) -> str | None:
    value = request.query_params.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > longest:
        raise HTTPException(404, f"the {name} filter is longer than {longest} characters")
    return value.strip()


def _reference_param(request: Request, name: str) -> str:
    """A run as the CLI takes it: its id, a unique id prefix or its name."""
    text = str(request.path_params[name])
    if not text.strip() or len(text) > _MAX_PARAM or any(ord(char) < 32 for char in text):
        raise HTTPException(404, "that is not a run id, id prefix or name")
    return text


def _page_number(request: Request) -> int:
    text = request.query_params.get("page")
    if text is None or text == "":
        return 1
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_PAGE_DIGITS or int(text) < 1:
        raise HTTPException(404, "pages are numbered 1, 2, 3 and so on")
    return int(text)


def _uuid_param(request: Request, name: str, what: str) -> UUID:
    text = str(request.path_params[name])
    try:
        if len(text) > 64:
            raise ValueError(text)
        return UUID(text)
    except ValueError:
        raise HTTPException(404, f"that is not a {what} id") from None


def _page_url(path: str, filters: Mapping[str, str | None], page_number: int) -> str:
    query = {key: value for key, value in filters.items() if value}
    if page_number > 1:
        query["page"] = str(page_number)
    return f"{path}?{urlencode(query)}" if query else path


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def served_hosts(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The ``Host`` header values the dashboard answers when bound to ``host``.

    Always the loopback names; bound to every address (``0.0.0.0``, ``::``)
    also this machine's host name, fully qualified name and their addresses;
    bound to one address, that address (and its name). ``extra`` adds names
    such as a reverse proxy's (``zenmeta ui --allow-host``).
    """
    names = {"localhost", "127.0.0.1", "[::1]", _host_header(host)}
    if not is_loopback(host):
        machine = {socket.gethostname(), socket.getfqdn()}
        if host.strip("[]") in ("0.0.0.0", "::", ""):
            names.update(name.lower() for name in machine if name)
            for name in machine:
                try:
                    for info in socket.getaddrinfo(name, None):
                        names.add(_host_header(str(info[4][0])))
                except OSError:
                    continue
        else:
            with contextlib.suppress(OSError):
                names.add(socket.gethostbyaddr(host.strip("[]"))[0].lower())
    names.update(_host_header(name) for name in extra if name)
    return sorted(names)


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    store: str | None = None,
    allow_hosts: Sequence[str] = (),
) -> None:
    """Serve the dashboard over ``store`` (a path or URL; the configured store if ``None``).

    The store must exist (it is opened read-only), and the port must be
    free: either problem raises a ``ZenmetaError`` with one line to show.
    """
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "dashboard") from None
    client = Client(store)
    listening = _listen(host, port)
    if not is_loopback(host):
        print(
            f"warning: serving on {host}, not on loopback: anyone who can reach this "
            "machine can read every run and its metadata; the dashboard has no login.",
            file=sys.stderr,
        )
    app = create_app(client, allowed_hosts=served_hosts(host, allow_hosts))
    print(
        f"zenmeta dashboard on http://{_host_header(host)}:{listening.getsockname()[1]}/ "
        f"reading {client.url} (Ctrl+C stops it)",
        file=sys.stderr,
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", server_header=False, ws="none"
    )
    try:
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        listening.close()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one clear line."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} on {host} is in use; stop what holds it or choose another with --port"
            ) from None
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def _host_header(host: str) -> str:
    """How ``host`` appears in a URL and a Host header (IPv6 in brackets)."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else host.lower()
