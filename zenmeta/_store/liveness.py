"""Is the process that wrote a ``running`` run still there?

A run is marked ``running`` when it starts and gets its final status when it
ends; a process killed in between never writes that status. Readers ask
here instead of trusting the stored word. On the writer's own host the
answer is exact: the pid is gone (or a zombie), or it now belongs to a
process that started at another time (pids are reused). From another host
only the heartbeat can tell: a writer refreshes it every few seconds while
its runs are open, so a heartbeat older than ``STALE_AFTER_S`` means the
writer is gone.
"""

from __future__ import annotations

import os

from .._process import host_name, process_start_time

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "writer_is_gone"]

HEARTBEAT_S = 5.0
"""How often a writer refreshes the heartbeat of its open runs."""

STALE_AFTER_S = 60.0
"""A heartbeat this old means its writer is gone. Generous on purpose: a
process whose Python threads are starved (a long call holding the GIL) is
not dead, and clocks of two hosts may disagree by a few seconds."""

_START_TOLERANCE_S = 2.0  # the boot time in /proc/stat may move by a second


def writer_is_gone(
    host: str, pid: int, process_start: float | None, heartbeat_ns: int | None, now_ns: int
) -> bool:
    """True when the run's writing process has certainly died."""
    if host == host_name() and os.name == "posix":
        if not _pid_alive(pid):
            return True
        if process_start is not None:
            current = process_start_time(pid)
            if current is not None and abs(current - process_start) > _START_TOLERANCE_S:
                return True  # the pid was reused by a later process
        return False
    if heartbeat_ns is None:
        return False  # nothing to judge by; a writer always sets one, so rare
    return now_ns - heartbeat_ns > STALE_AFTER_S * 1e9


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to someone else
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet still answers ``kill(pid, 0)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return bool(fields) and fields[0] in (b"Z", b"X")
