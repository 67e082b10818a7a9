"""Who is running: a minted process id, host, boot id, pid namespace, pid and start time.

A pid names a process only on one machine, in one pid namespace, until it is
reused; a hostname names no machine at all (containers share them). So each
process mints its own id (``PROCESS_ID``), and records beside it the boot id
(``/proc/sys/kernel/random/boot_id``, new at every boot) and the inode of its
pid namespace: a reader that finds both equal to its own may judge the pid
directly, with the start time telling a reused pid from the writer. Every
other reader judges by the heartbeat (``_store/liveness.py``).
"""

from __future__ import annotations

import os
import threading

__all__ = [
    "CURRENT_PID",
    "PROCESS_ID",
    "boot_id",
    "host_name",
    "pid_namespace",
    "process_start_time",
    "start_quiet",
]

CURRENT_PID = [os.getpid()]
"""This process's id, refreshed after fork: readers pay a list read on the
step path, where ``os.getpid()`` would be a system call."""

PROCESS_ID: str = os.urandom(16).hex()
"""This process's own id, minted at start (16 random bytes, ~1 µs) and minted
anew in a forked child. Read it as ``_process.PROCESS_ID``, never import the
name: a copy taken before a fork would name the parent."""

_cache: dict[int, float | None] = {}
_host: list[str] = []
_machine: dict[str, object] = {}  # "boot_id", "pid_namespace": read once per process


def _after_fork_in_child() -> None:
    global PROCESS_ID
    CURRENT_PID[0] = os.getpid()
    PROCESS_ID = os.urandom(16).hex()
    _machine.pop("pid_namespace", None)  # unchanged by fork, but cheap to read again


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def host_name() -> str:
    if not _host:
        # os.uname avoids importing socket; platform.node is the portable fallback.
        if hasattr(os, "uname"):
            _host.append(os.uname().nodename)
        else:  # pragma: no cover - Windows
            import platform

            _host.append(platform.node())
    return _host[0]


def boot_id() -> str | None:
    """This machine's boot id (Linux), new at every boot; ``None`` elsewhere."""
    if "boot_id" not in _machine:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as found:
                _machine["boot_id"] = found.read().strip() or None
        except (OSError, ValueError):
            _machine["boot_id"] = None
    return _machine["boot_id"]  # type: ignore[return-value]


def pid_namespace() -> int | None:
    """The inode of this process's pid namespace (Linux); ``None`` elsewhere.
    Two processes see each other's pids only when these are equal."""
    if "pid_namespace" not in _machine:
        try:
            _machine["pid_namespace"] = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            _machine["pid_namespace"] = None
    return _machine["pid_namespace"]  # type: ignore[return-value]


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


def os_threads() -> int:
    """This process's threads as the kernel counts them (Linux), else 0."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def wait_for_os_thread_exit(before: int) -> None:
    """``join()`` returns once a thread's Python state is gone, a moment
    before the kernel's thread exits; Python 3.12 counts the kernel's threads
    when it decides to warn about a fork. Wait for that moment (up to 0.5 s:
    a loaded machine may take long to schedule the exiting thread)."""
    import time

    deadline = time.monotonic() + 0.5
    while before and os_threads() >= before and time.monotonic() < deadline:
        time.sleep(0.0002)


def wait_for_kernel_thread(native_id: int | None) -> None:
    """Wait (up to 0.5 s) until the kernel's thread ``native_id`` of this
    process is gone: it outlives ``join()`` by a moment, and a fork then
    copies a process the kernel still counts as multi-threaded."""
    if native_id is None:
        return
    import time

    task = f"/proc/self/task/{native_id}"
    deadline = time.monotonic() + 0.5
    while os.path.exists(task) and time.monotonic() < deadline:
        time.sleep(0.0002)


def start_quiet(thread: threading.Thread) -> bool:
    """Start ``thread`` with SIGTERM and SIGINT blocked from its birth;
    ``False`` when no thread can start, and the caller does the work itself.

    Python runs its signal handlers only in the main thread, but the kernel
    hands a process's signal to any thread that does not block it, and a
    thread that changes its mask (as glibc's ``pthread_create`` does, twice)
    takes a signal still pending. Landing in one of ours, the signal leaves a
    main thread asleep in C (``time.sleep``, a pool worker on its semaphore)
    asleep: ``kill`` seemed ignored for the rest of a 60 s sleep (CI, stop 26),
    ``Pool.terminate()`` waited forever. Blocking from the thread's own first
    line leaves a window; a new thread inherits its creator's mask, so the
    creator blocks the two around ``start()`` and the thread never has one.

    Python 3.12 refuses new threads once the interpreter is exiting, which
    is when the exit's flush finds a store still opening (a script shorter
    than the open); the system may refuse one too. Either is a
    ``RuntimeError`` from ``start()``: then nothing started."""
    import signal

    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    except (AttributeError, OSError, ValueError):  # pragma: no cover - Windows
        previous = None
    try:
        thread.start()
    except RuntimeError:
        return False
    finally:
        if previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return True
