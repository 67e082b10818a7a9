"""Is the process that wrote a ``running`` run, or began a step, still there?

SCALE.md §3: a step is judged by the process that executes it, a run by the
process that owns it, neither by the other's. Each writing process records
itself once (``ProcessFacts``, the ``zenmeta_processes`` row; version 4 on);
``process_is_gone`` judges such a record: exited cleanly, or on the reader's
own machine and pid namespace (same boot id, same namespace inode: a
hostname is not a machine) the pid gone, a zombie or reused, or else a
heartbeat older than ``STALE_AFTER_S`` by the database's clock.

Rows written before version 4 have no process record; for them
``writer_is_gone`` keeps the older rule. A run is marked ``running`` when
it starts and gets its final status when it ends; a process killed in
between never writes that status. Readers ask here instead of trusting
the stored word. On the writer's own host the
answer is exact: the pid is gone (or a zombie), or it now belongs to a
process that started at another time (pids are reused). From another host
only the heartbeat can tell: a writer refreshes it every few seconds while
its runs are open, so a heartbeat older than ``STALE_AFTER_S`` means the
writer is gone.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .. import _process
from .._process import CURRENT_PID, boot_id, host_name, pid_namespace, process_start_time

__all__ = [
    "HEARTBEAT_S",
    "STALE_AFTER_S",
    "ProcessFacts",
    "own_facts",
    "process_is_gone",
    "writer_is_gone",
]

HEARTBEAT_S = 5.0
"""How often a writer refreshes the heartbeat of its open runs."""

STALE_AFTER_S = 60.0
"""A heartbeat this old means its writer is gone. Generous on purpose: a
process whose Python threads are starved (a long call holding the GIL) is
not dead, and clocks of two hosts may disagree by a few seconds."""

_START_TOLERANCE_S = 2.0  # the boot time in /proc/stat may move by a second


class ProcessFacts(NamedTuple):
    """What a writing process said about itself (a ``zenmeta_processes`` row)."""

    process_id: str
    host: str
    boot_id: str | None
    pid_namespace: int | None
    pid: int
    process_start: float | None
    start_ns: int
    heartbeat_ns: int | None
    """Its last heartbeat, by the clock ``process_is_gone`` is given (the database's)."""
    exit_ns: int | None = None


def own_facts(start_ns: int, heartbeat_ns: int | None = None) -> ProcessFacts:
    """This process, as it records itself."""
    return ProcessFacts(
        _process.PROCESS_ID,
        host_name(),
        boot_id(),
        pid_namespace(),
        CURRENT_PID[0],
        process_start_time(),
        start_ns,
        heartbeat_ns,
    )


def process_is_gone(facts: ProcessFacts, now_ns: int) -> bool:
    """True when the process behind ``facts`` has certainly stopped.

    ``now_ns`` must come from the clock its heartbeat was written by: the
    database server's for PostgreSQL, never the reader's own."""
    if facts.exit_ns is not None:
        return True
    own_boot, own_namespace = boot_id(), pid_namespace()
    if (
        os.name == "posix"
        and own_boot is not None
        and own_namespace is not None
        and facts.boot_id == own_boot
        and facts.pid_namespace == own_namespace
    ):
        return _pid_gone(facts.pid, facts.process_start)
    if facts.heartbeat_ns is None:
        return False  # it never beat: nothing to judge by
    return now_ns - facts.heartbeat_ns > STALE_AFTER_S * 1e9


def _pid_gone(pid: int, process_start: float | None) -> bool:
    """The pid, seen from this pid namespace, is gone, a zombie, or reused."""
    if not _pid_alive(pid):
        return True
    if process_start is not None:
        current = process_start_time(pid)
        if current is not None and abs(current - process_start) > _START_TOLERANCE_S:
            return True  # the pid was reused by a later process
    return False


def writer_is_gone(
    host: str, pid: int, process_start: float | None, heartbeat_ns: int | None, now_ns: int
) -> bool:
    """True when the run's writing process has certainly died."""
    if host == host_name() and os.name == "posix":
        return _pid_gone(pid, process_start)
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
