"""Who is running: host, pid and the process start time.

The start time tells a reused pid from the process that wrote a run, so a
reader can call a run ``crashed`` only when its writer is really gone.
"""

from __future__ import annotations

import os

__all__ = ["CURRENT_PID", "host_name", "process_start_time"]

CURRENT_PID = [os.getpid()]
"""This process's id, refreshed after fork: readers pay a list read on the
step path, where ``os.getpid()`` would be a system call."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: CURRENT_PID.__setitem__(0, os.getpid()))

_cache: dict[int, float | None] = {}
_host: list[str] = []


def host_name() -> str:
    if not _host:
        # os.uname avoids importing socket; platform.node is the portable fallback.
        if hasattr(os, "uname"):
            _host.append(os.uname().nodename)
        else:  # pragma: no cover - Windows
            import platform

            _host.append(platform.node())
    return _host[0]


def process_start_time(pid: int | None = None) -> float | None:
    """Seconds since the epoch when ``pid`` started; ``None`` where unknown."""
    own = CURRENT_PID[0]
    pid = own if pid is None else pid
    if pid == own and pid in _cache:
        return _cache[pid]
    value = _read_start_time(pid)
    if pid == own:
        _cache[pid] = value
    return value


def _read_start_time(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5), counted after the name
        with open("/proc/stat", "rb") as system:
            for line in system:
                if line.startswith(b"btime "):
                    boot = int(line.split()[1])
                    break
            else:
                return None
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
