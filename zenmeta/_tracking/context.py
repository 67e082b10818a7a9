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
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from .._errors import NoActiveContextError
from .._log import warn

if TYPE_CHECKING:
    from .._info import PipelineRunInfo, StepRunInfo
    from .runs import PipelineRun
    from .steps import StepState

__all__ = [
    "current_run",
    "get_step_context",
    "get_run_context",
    "carry_context",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_current_step: ContextVar[StepState | None] = ContextVar("zenmeta_step", default=None)
_current_run: ContextVar[PipelineRun | None] = ContextVar("zenmeta_run", default=None)

_detached: list[PipelineRun] = []
_detached_lock = threading.Lock()


def current_run() -> PipelineRun | None:
    """The run a new step or a ``log_metadata`` call belongs to, if any.

    A step's own run comes first (steps of implicit runs set no run variable),
    then the run entered with ``with``, then the newest run started without
    ``with`` that is still open.
    """
    step = _current_step.get()
    if step is not None:
        return step.run
    run = _current_run.get()
    if run is not None:
        return run
    if _detached:
        with _detached_lock:
            if _detached:
                return _detached[-1]
    return None


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


def set_run(run: PipelineRun | None) -> Token[PipelineRun | None]:
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
