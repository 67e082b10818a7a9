"""A thread pool whose tasks run in the submitter's context.

Its own module so that ``concurrent.futures`` (which imports ``logging``)
loads only when the pool is used, not with zenmeta.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["ContextThreadPoolExecutor"]

T = TypeVar("T")


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the submitter's context.

    Steps submitted from inside a run (or a step) belong to that run (and
    are recorded as children of that step), exactly as if called inline.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)
