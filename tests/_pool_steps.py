"""Steps and helpers that worker processes import by name (spawn pickles by reference)."""

from __future__ import annotations

import os

import zenmeta
from zenmeta import log_metadata, track_step


@track_step
def square(x: int) -> int:
    log_metadata({"x": x, "pid": os.getpid()})
    return x * x


def run_is_current() -> bool:
    """Whether any run is current here: a leaked attachment would say yes."""
    try:
        zenmeta.get_run_context()
    except zenmeta.NoActiveContextError:
        return False
    return True


def attached_pid(_: object) -> int:
    """The worker's pid, to see which workers took part."""
    return os.getpid()
