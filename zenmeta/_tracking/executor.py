"""Pools whose tasks belong to the submitter's run: threads and processes.

A thread pool hands its tasks the submitter's context; a process pool
cannot (contexts do not pickle), so it hands them a carrier. Its own module
so that ``concurrent.futures`` (which imports ``logging``) loads only when a
pool is used, not with zenmeta.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from .._errors import NoActiveContextError

__all__ = ["ContextProcessPoolExecutor", "ContextThreadPoolExecutor"]

T = TypeVar("T")


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the submitter's context.

    Steps submitted from inside a run (or a step) belong to that run (and
    are recorded as children of that step), exactly as if called inline.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)


class ContextProcessPoolExecutor(ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` whose tasks join the submitter's run.

    Each call submitted inside a run (or a step) is sent with a carrier of
    that run and step (``zenmeta.carried``): its steps are recorded in the
    run, as children of that step, and stored before its result comes back.
    Outside a run, calls are submitted as they are. ``map`` goes through
    ``submit``, so its chunks are carried alike.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        from .attach import Carried, carry

        try:
            carrier = carry()
        except NoActiveContextError:
            return super().submit(fn, *args, **kwargs)
        return super().submit(Carried(fn, carrier), *args, **kwargs)
