"""Where the current run and step live: ContextVars, never thread-locals.

Each asyncio task sees its own step because tasks copy the context. Threads
do not inherit it, so ``ContextThreadPoolExecutor`` and ``carry_context``
hand the submitter's context to the worker. The one process-level structure
is the list of runs started without ``with`` (the notebook form): Jupyter may
run each cell in a fresh context, so those runs are found there when no
ContextVar is set.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, ParamSpec, TypeAlias, TypeVar

from .._config import environment
from .._errors import NoActiveContextError
from .._log import warn, warn_throttled
from .._process import CURRENT_PID

if TYPE_CHECKING:
    from .._info import PipelineRunInfo, StepRunInfo
    from .attach import AttachedRun, Attachment
    from .carrier import Carrier
    from .runs import PipelineRun
    from .steps import StepState

    AnyRun: TypeAlias = PipelineRun | AttachedRun

__all__ = [
    "current_attachment",
    "current_run",
    "set_task_source",
    "get_step_context",
    "get_run_context",
    "carry_context",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_current_step: ContextVar[StepState | None] = ContextVar("zenmeta_step", default=None)
_current_run: ContextVar[AnyRun | None] = ContextVar("zenmeta_run", default=None)
_current_attachment: ContextVar[Attachment | None] = ContextVar("zenmeta_attachment", default=None)
_process_attached: list[tuple[Attachment, AttachedRun]] = []
"""Set by ``attach_process``: the run a worker process's steps join by default."""
_environment_read: list[str] = []
"""``ZENMETA_PARENT`` values already tried: read at the first step that finds
no run (not at import), and again only when the variable changes."""

_detached: list[PipelineRun] = []
_detached_lock = threading.Lock()


def current_run() -> AnyRun | None:
    """The run a new step or a ``log_metadata`` call belongs to, if any.

    A step's own run comes first (steps of implicit runs set no run variable),
    then the run entered with ``with`` (or ``attach``), then the newest run
    started without ``with`` that is still open, then the run this process
    is attached to (``attach_process``, or ``ZENMETA_PARENT`` read at the
    first step that finds none). A run object inherited through ``fork`` is
    adopted: the child records into it as an attached process.
    """
    step = _current_step.get()
    if step is not None:
        run: AnyRun | None = step.run
    else:
        run = _current_run.get()
        if run is None:
            run = _fallback_run()
            if run is None:
                return None
    if run._pid != CURRENT_PID[0]:  # type: ignore[union-attr]
        from .attach import adopt

        return adopt(run)  # type: ignore[arg-type]
    return run


def _fallback_run() -> AnyRun | None:
    if _detached:
        with _detached_lock:
            if _detached:
                return _detached[-1]
    if _process_attached:
        return _process_attached[0][1]
    header = environment("ZENMETA_PARENT")
    if header and header not in _environment_read:  # each value is tried once
        _environment_read.append(header)
        from .attach import attach_from_environment

        return attach_from_environment(header)
    if _task_source:
        return _task_run()
    return None


def current_attachment() -> Attachment | None:
    """What the current block (``attach``) or process (``attach_process``) is
    attached to, if anything."""
    attachment = _current_attachment.get()
    if attachment is not None:
        return attachment
    if _process_attached:
        return _process_attached[0][0]
    return task_attachment() if _task_source else None


# -- the engine's task a step runs in -------------------------------------------
# Dask calls the function it was given in a thread of its own: an integration
# has no block to wrap around the call, so it names a source instead, asked
# only where no run is current (and by ``attach`` for the task key): which
# task runs in this thread, and the carrier its annotations hold, if any.

TaskAnswer: TypeAlias = "tuple[Carrier | None, str | None, int | None]"
_task_source: list[Callable[[], TaskAnswer | None]] = []


def set_task_source(source: Callable[[], TaskAnswer | None] | None) -> None:
    """Name the function that tells which engine task runs in this thread.

    For engine integrations (``zenmeta.integrations.dask`` sets one in each
    worker): ``source()`` returns ``(carrier, task_key, attempt)`` inside a
    task, ``None`` outside one. The task key and attempt go on the steps the
    task records; a carrier (a task annotation's) makes a step that finds no
    run join the carried run, as inside ``attach(carrier)``. It must be cheap:
    it is asked at each such step. ``None`` removes it; so does
    ``zenmeta.testing.reset()``.
    """
    if source is not None and not callable(source):
        raise TypeError(f"set_task_source() takes a function or None, not {source!r}")
    _task_source[:] = [] if source is None else [source]


def task_answer() -> TaskAnswer | None:
    """The source's answer for this thread; a source that fails or answers
    something else is said in a warning and counts as no answer."""
    if not _task_source:
        return None
    try:
        answer = _task_source[0]()
    except Exception as error:
        warn_throttled("task-source", "zenmeta: the task source failed (%r); ignored", error)
        return None
    if answer is None:
        return None
    if not isinstance(answer, tuple) or len(answer) != 3:
        warn_throttled(
            "task-source", "zenmeta: the task source answered %r, not a triple; ignored", answer
        )
        return None
    return answer


def task_attachment() -> Attachment | None:
    """The attachment a task's own carrier makes (its annotation), if it has one."""
    answer = task_answer()
    if answer is None or answer[0] is None:
        return None
    from .attach import Attachment

    return Attachment(answer[0], answer[1], answer[2])


def _task_run() -> AttachedRun | None:
    attachment = task_attachment()
    if attachment is None:
        return None
    from .attach import attached_run
    from .carrier import CarrierError

    try:
        return attached_run(attachment.carrier)
    except CarrierError as error:  # an unreachable store never breaks the task
        warn_throttled("task-source", "zenmeta: a task's carrier is ignored: %s", error)
        return None


def set_process_attachment(attachment: Attachment, run: AttachedRun) -> None:
    _process_attached[:] = [(attachment, run)]


def process_attachment() -> tuple[Attachment, AttachedRun] | None:
    return _process_attached[0] if _process_attached else None


def clear_process_attachment() -> None:
    """No process attachment, and ``ZENMETA_PARENT`` read again (``testing.reset``)."""
    _process_attached.clear()
    _environment_read.clear()


def add_detached(run: PipelineRun) -> None:
    with _detached_lock:
        _detached.append(run)


def remove_detached(run: PipelineRun) -> None:
    with _detached_lock:
        if run in _detached:
            _detached.remove(run)


def forget_detached() -> None:
    """Drop every run started without ``with``, ending none (``testing.reset``)."""
    with _detached_lock:
        _detached.clear()


def detached_runs() -> list[PipelineRun]:
    with _detached_lock:
        return list(_detached)


def set_run(run: AnyRun | None) -> Token[AnyRun | None]:
    return _current_run.set(run)


def reset(variable: ContextVar[T], token: Token[T]) -> None:
    """Reset by token; a token from another context is logged, not raised.

    That happens when user code moves a context across tasks by hand; raising
    there would break the user's program for a tracking detail (OTel's rule).
    """
    try:
        variable.reset(token)
    except ValueError:
        warn("zenmeta: %s was reset in a different context; left as is", variable.name)


def get_step_context() -> StepRunInfo:
    """The ``StepRunInfo`` of the step that is running now."""
    step = _current_step.get()
    if step is None:
        raise NoActiveContextError(
            "get_step_context() was called outside a step; call it inside a @track_step function"
        )
    return step.info


def get_run_context() -> PipelineRunInfo:
    """The ``PipelineRunInfo`` of the current run."""
    run = current_run()
    if run is None:
        raise NoActiveContextError(
            "get_run_context() was called outside a run; use it inside `with pipeline_run()` "
            "or a step"
        )
    return run.info


def carry_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``fn`` so that, wherever it is called, it runs in today's context.

    The context is captured now; each call runs in a fresh copy of it, so two
    threads calling the wrapper at once never share one context object.
    """
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def in_captured_context(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(fn, *args, **kwargs)

    return in_captured_context
