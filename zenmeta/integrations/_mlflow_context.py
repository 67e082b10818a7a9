"""MLflow's active run, made per context instead of per thread.

MLflow 3.17 keeps its active-run stack in ``mlflow.tracking.fluent.
_active_run_stack``, a ``ThreadLocalVariable``: one list per thread. Two
async steps interleaved on one event loop would share that list, so a
``mlflow.log_metric`` in one step could land in the other's run. Replacing
the variable with ``ContextRunStack`` gives each context (each asyncio task,
each ``carry_context`` call) its own list once a step pushes a run, while code
that never runs a step keeps MLflow's per-thread list unchanged.

``mlflow.start_run()`` is wrapped too, for one case only: when the active run
is one this component made active (a pipeline run's parent run, a step's
run), a plain ``start_run()`` nests under it, in its experiment, instead of
raising MLflow's "already active" error. Everywhere else it is MLflow's own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["ContextRunStack", "PushedRun", "install"]

_Held = tuple[int, int, list[Any]]  # (thread id, pid, the stack)


class ContextRunStack:
    """A drop-in for MLflow's ``ThreadLocalVariable`` holding the run stack.

    Where no step has pushed a run, ``get()`` returns the thread's own MLflow
    list, exactly as before. A context carried into another thread (by
    ``ContextThreadPoolExecutor``) gets a copy there, so the worker logs into
    the submitting step's run without the two threads sharing one list.
    """

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.variable: ContextVar[_Held | None] = ContextVar("zenmeta_mlflow_runs", default=None)
        self._live: dict[int, list[Any]] = {}
        self._ours: set[str] = set()  # ids of the runs push() made active
        self._lock = threading.Lock()

    def get(self) -> list[Any]:
        held = self.variable.get()
        if held is None:
            return self.fallback.get()  # type: ignore[no-any-return]
        ident, pid, stack = held
        if ident == threading.get_ident() and pid == os.getpid():
            return stack
        copy = list(stack) if pid == os.getpid() else []  # a forked child starts empty
        self.variable.set((threading.get_ident(), os.getpid(), copy))
        return copy

    def set(self, value: list[Any]) -> None:
        if self.variable.get() is None:
            self.fallback.set(value)  # no step here: MLflow's own per-thread list
        else:
            self.variable.set((threading.get_ident(), os.getpid(), value))

    def get_all_thread_values(self) -> dict[int, list[Any]]:
        """Every live stack, for MLflow's "latest active run in any thread"."""
        values: dict[int, list[Any]] = dict(self.fallback.get_all_thread_values())
        with self._lock:
            values.update(self._live)
        return values

    def reset(self) -> None:
        self.fallback.reset()
        with self._lock:
            self._live.clear()

    def ours_on_top(self) -> Any | None:
        """The active run, when it is one ``push`` made active; else ``None``."""
        stack = self.get()
        if stack and stack[-1].info.run_id in self._ours:
            return stack[-1]
        return None

    def push(self, run: Any) -> PushedRun:
        """Make ``run`` the active run of this context only."""
        stack = [*self.get(), run]
        with self._lock:
            self._live[id(stack)] = stack
            self._ours.add(run.info.run_id)
        token = self.variable.set((threading.get_ident(), os.getpid(), stack))
        return PushedRun(token, stack, run)

    def pop(self, pushed: PushedRun) -> list[Any]:
        """Undo ``push``; return the runs user code started above ours and left open."""
        with self._lock:
            self._live.pop(id(pushed.stack), None)
            self._ours.discard(pushed.run.info.run_id)
        with contextlib.suppress(ValueError):  # ended from another context (generator step)
            self.variable.reset(pushed.token)
        position = next((i for i, r in enumerate(pushed.stack) if r is pushed.run), None)
        if position is None:
            return []  # user code ended our run itself
        left = pushed.stack[position + 1 :]
        del pushed.stack[position:]  # a context still holding the list no longer sees them
        return left


class PushedRun:
    """What ``ContextRunStack.pop`` needs to undo one ``push``."""

    __slots__ = ("run", "stack", "token")

    def __init__(self, token: Token[_Held | None], stack: list[Any], run: Any) -> None:
        self.token = token
        self.stack = stack
        self.run = run


_installed: list[ContextRunStack] = []
_install_lock = threading.Lock()


def install() -> ContextRunStack | None:
    """Put ``ContextRunStack`` in place of MLflow's variable, once per process.

    Returns ``None`` when this MLflow keeps its active run in some other way;
    steps then still get their runs, but ``mlflow.log_metric`` inside a step
    does not find them.
    """
    if _installed:
        return _installed[0]
    from mlflow.tracking import fluent

    with _install_lock:
        if _installed:
            return _installed[0]
        current = getattr(fluent, "_active_run_stack", None)
        if isinstance(current, ContextRunStack):
            _installed.append(current)
            return current
        needed = ("get", "set", "get_all_thread_values", "reset")
        if current is None or not all(callable(getattr(current, m, None)) for m in needed):
            return None
        replacement = ContextRunStack(current)
        fluent._active_run_stack = replacement  # type: ignore[assignment]
        _nest_start_run(replacement)
        _installed.append(replacement)
        return replacement


def _nest_start_run(stack: ContextRunStack) -> None:
    """Make ``mlflow.start_run()`` nest under a run this component made active."""
    import mlflow
    from mlflow.tracking import fluent

    original = fluent.start_run

    @functools.wraps(original)
    def start_run(*args: Any, **kwargs: Any) -> Any:
        plain = not args and not any(kwargs.get(k) for k in ("nested", "run_id", "parent_run_id"))
        top = stack.ours_on_top() if plain else None
        if top is not None:
            kwargs["nested"] = True  # under the step's (or the pipeline's) run
            if kwargs.get("experiment_id") is None:
                kwargs["experiment_id"] = top.info.experiment_id
        return original(*args, **kwargs)

    start_run.__zenmeta_wraps__ = original  # type: ignore[attr-defined]
    fluent.start_run = start_run
    if getattr(mlflow, "start_run", None) is original:
        mlflow.start_run = start_run
