"""Ending runs honestly when the process is told to stop or dies of an error.

SIGTERM is what ``docker stop``, ``kill``, Kubernetes and ``scancel`` send;
by default it kills Python on the spot, leaving runs ``crashed`` and the
queued batch lost. When zenmeta starts its first run and the handler is still
the default (``SIG_DFL``, i.e. nobody installed one) and this is the main
thread, a handler is installed that treats SIGTERM like Ctrl-C: with a run
open it raises ``SystemExit(143)`` (128 + 15, the status a shell reports for
SIGTERM) in the main thread, so every ``with`` block unwinds, runs are
recorded ``interrupted``, components end their own runs (MLflow's ``KILLED``)
and the store is flushed at exit; with no run open it flushes and lets the
signal kill the process as before. A handler the user installed is never
replaced.

A script that ends with an uncaught exception while a ``start_run()`` run is
open: ``sys.excepthook`` is chained (the previous hook still prints the
traceback) so the exit handler records that run ``failed`` with the error.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import TracebackType
from typing import Any

__all__ = [
    "install_termination_handler",
    "install_excepthook",
    "run_opened",
    "run_closed",
    "uncaught_error",
    "terminated",
]

TERMINATED_STATUS = 128 + signal.SIGTERM

_open_runs: set[int] = set()
_installed: list[str] = []
_uncaught: list[BaseException] = []
_terminated: list[bool] = []


def run_opened(run: object) -> None:
    _open_runs.add(id(run))


def run_closed(run: object) -> None:
    _open_runs.discard(id(run))


def terminated() -> bool:
    """Whether SIGTERM asked this process to stop."""
    return bool(_terminated)


def uncaught_error() -> BaseException | None:
    """The exception that is ending the process, if the excepthook saw one."""
    return _uncaught[-1] if _uncaught else None


def install_termination_handler() -> None:
    """Install the SIGTERM handler once, only over the default and from the main thread."""
    if "sigterm" in _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed.append("sigterm")
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # pragma: no cover - an embedded interpreter
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    _terminated.append(True)
    if _open_runs:
        raise SystemExit(TERMINATED_STATUS)
    from .._store import flush

    try:
        flush()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _forget_in_child() -> None:
    """A forked child owns none of its parent's runs, so SIGTERM gets back its
    default there: ``Pool.terminate()`` kills idle workers with it, even one
    still running its after-fork hooks, where a raised ``SystemExit`` would be
    swallowed ("Exception ignored") and leave the worker alive, and the pool
    waiting for it forever. A forked worker stores each step as it ends
    (``attach.adopt``), so the default kill loses nothing finished."""
    _open_runs.clear()
    if "sigterm" in _installed:
        _installed.remove("sigterm")
        try:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):  # pragma: no cover - not the main thread
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def install_excepthook() -> None:
    """Chain ``sys.excepthook`` once, so an uncaught error fails open detached runs."""
    if "excepthook" in _installed:
        return
    _installed.append("excepthook")
    previous = sys.excepthook

    def record_uncaught(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        _uncaught.append(error)
        previous(kind, error, tb)

    sys.excepthook = record_uncaught
