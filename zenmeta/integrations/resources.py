"""What each step cost: wall and CPU time, memory, and GPU use when there is one.

Recorded per step under the source ``resources`` (flavor ``resources``, so
``ZENMETA_COMPONENTS=resources`` switches it on). The hooks run on the step's
own thread, so the thread CPU time is the step's; the process CPU time
includes every other thread that ran meanwhile.

Peak memory: on Linux the process's high-water mark (``VmHWM``) is reset at
step start by writing ``5`` to ``/proc/self/clear_refs`` and read at the end,
so ``peak_rss`` is the step's own peak (``peak_rss_scope: "step"``). The mark
is process-wide: a step that starts inside another resets it, so before
resetting, the current mark is credited to every step still open, and an
outer step's peak is the highest of its own and its inner steps' readings.
Steps that overlap on several threads each see the peak of the whole process
while they ran, an upper bound of their own. Where the mark cannot be reset
(other systems, or a kernel that refuses), ``peak_rss`` is
``getrusage``'s maximum RSS of the process's whole life, and
``peak_rss_scope`` says ``"process lifetime"``.

GPU: when ``nvidia-ml-py`` (``pynvml``) imports and a device is visible, the
memory in use and the utilisation of each device ``CUDA_VISIBLE_DEVICES``
names (all, when unset) are sampled at step end; utilisation is the driver's
recent average, not a peak. Nothing GPU-related is recorded otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any

from zenmeta import MetadataType, StackComponent, StepRunInfo, StorageSize

__all__ = ["ResourcesComponent"]

_KIB = 1024


class _Proc:
    """``/proc/self/statm`` and ``clear_refs``, kept open: one ``pread`` per RSS.

    The high-water mark is read through ``getrusage`` (2 µs) rather than
    ``/proc/self/status`` (17 µs): on Linux its maximum RSS is the mark that
    ``clear_refs`` resets, which is checked against ``VmHWM`` once per process.
    """

    def __init__(self) -> None:
        self.pid = -1
        self.current_pid = os.getpid()  # kept current by a fork hook: no getpid per step
        self.statm = -1
        self.clear_refs = -1
        self.resettable = False
        self.available = False
        self.lock = threading.Lock()

    def ensure(self) -> bool:
        """Open the files for this process: at first use, and in a forked
        child (its inherited descriptors describe the parent)."""
        pid = self.current_pid = os.getpid()
        with self.lock:
            if pid != self.pid:
                self._open(pid)
        return True

    def after_fork(self) -> None:
        self.current_pid = os.getpid()

    def _open(self, pid: int) -> None:
        for fd in (self.statm, self.clear_refs):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.statm = self.clear_refs = -1
        self.available = self.resettable = False
        if sys.platform.startswith("linux"):
            try:
                self.statm = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
                self.available = True
                self.clear_refs = os.open(f"/proc/{pid}/clear_refs", os.O_WRONLY)
                os.write(self.clear_refs, b"5")
                with open(f"/proc/{pid}/status", "rb") as status:
                    mark = _field(status.read(), b"VmHWM:")
                self.resettable = abs(_lifetime_peak() - mark) <= 1024 * _KIB
            except OSError:
                pass
        self.pid = pid

    def rss(self) -> int:
        return int(os.pread(self.statm, 64, 0).split(None, 2)[1]) * _PAGE

    def reset_peak(self) -> None:
        os.write(self.clear_refs, b"5")


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _field(text: bytes, name: bytes) -> int:
    start = text.find(name)
    if start < 0:
        return 0
    end = text.find(b"kB", start)
    return int(text[start + len(name) : end]) * _KIB


_proc = _Proc()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_proc.after_fork)


class _Open:
    """A step being measured; ``peak`` collects marks other steps' resets erased."""

    __slots__ = ("cpu", "peak", "rss", "thread", "wall")

    def __init__(self, wall: int, cpu: int, thread: int, rss: int) -> None:
        self.wall = wall
        self.cpu = cpu
        self.thread = thread
        self.rss = rss
        self.peak = 0


_open_steps: dict[Any, _Open] = {}  # by (component id, step id), across components


try:
    from resource import RUSAGE_SELF as _RUSAGE_SELF
    from resource import getrusage as _getrusage
except ImportError:  # pragma: no cover - Windows has no getrusage
    _getrusage = None  # type: ignore[assignment]


_MAXRSS_UNIT = 1 if sys.platform == "darwin" else _KIB  # macOS counts bytes, Linux KiB


def _lifetime_peak() -> int:
    """``getrusage``'s maximum RSS in bytes; 0 where there is no getrusage."""
    if _getrusage is None:  # pragma: no cover - Windows
        return 0
    return int(_getrusage(_RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT)


def _usage() -> tuple[int, int]:
    """(process CPU ns, maximum RSS bytes) from one ``getrusage`` call: two
    figures for one system call, where ``process_time`` would be another."""
    if _getrusage is None:  # pragma: no cover - Windows
        return time.process_time_ns(), 0
    usage = _getrusage(_RUSAGE_SELF)
    return int((usage.ru_utime + usage.ru_stime) * 1e9), int(usage.ru_maxrss * _MAXRSS_UNIT)


class ResourcesComponent(StackComponent):
    """Record each step's wall time, CPU time, memory and GPU use (see the module).

    ``gpu=False`` skips the GPU probe even when ``pynvml`` is installed.
    """

    flavor = "resources"

    def __init__(self, name: str | None = None, *, gpu: bool = True) -> None:
        super().__init__(name)
        self.gpu = gpu
        self._gpus: list[tuple[str, Any]] | None = None
        self._nvml: Any = None

    # Written for speed (the budget is 25 µs per step): no lock on the step
    # path (a dict's single operations are atomic), /proc opened once, and
    # the high-water mark read through getrusage.
    def prepare_step_run(self, info: StepRunInfo) -> None:
        if _proc.pid != _proc.current_pid:
            _proc.ensure()
        if _proc.resettable:
            if _open_steps:  # the reset erases their peak: credit it to them first
                mark = _lifetime_peak()
                for other in list(_open_steps.values()):
                    if mark > other.peak:
                        other.peak = mark
            _proc.reset_peak()
            cpu, rss = _usage()  # just reset, the high-water mark is the RSS now
        else:
            cpu = _usage()[0]
            rss = _proc.rss() if _proc.available else 0
        opened = _Open(time.perf_counter_ns(), cpu, time.thread_time_ns(), rss)
        _open_steps[(id(self), info.step_run_id)] = opened

    def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, MetadataType]:
        wall, thread = time.perf_counter_ns(), time.thread_time_ns()
        cpu, mark = _usage()
        opened = _open_steps.pop((id(self), info.step_run_id), None)
        if opened is None:
            return {}
        metadata: dict[str, MetadataType] = {
            "wall_time_s": (wall - opened.wall) / 1e9,
            "cpu_time_s": (cpu - opened.cpu) / 1e9,
            "thread_cpu_time_s": (thread - opened.thread) / 1e9,
        }
        if _proc.available and _proc.pid == _proc.current_pid:
            rss = _proc.rss()
            metadata["rss_start"] = StorageSize(opened.rss)
            metadata["rss_end"] = StorageSize(rss)
            if _proc.resettable:
                metadata["peak_rss"] = StorageSize(max(mark, opened.peak, opened.rss, rss))
                metadata["peak_rss_scope"] = "step"
        if "peak_rss" not in metadata and mark:
            metadata["peak_rss"] = StorageSize(mark)
            metadata["peak_rss_scope"] = "process lifetime"
        if self.gpu and self._gpus != []:  # [] once the probe found no device
            self._add_gpus(metadata)
        return metadata

    # -- GPU -----------------------------------------------------------------
    def _add_gpus(self, metadata: dict[str, MetadataType]) -> None:
        gpus = self._gpus
        if gpus is None:
            gpus = self._gpus = self._find_gpus()
        for label, handle in gpus:
            try:
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                usage = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            except Exception:  # a device that went away: skip it, keep the step's other keys
                continue
            metadata[f"gpu{label}_memory_used"] = StorageSize(int(memory.used))
            metadata[f"gpu{label}_memory_total"] = StorageSize(int(memory.total))
            metadata[f"gpu{label}_utilization_percent"] = int(usage.gpu)

    def _find_gpus(self) -> list[tuple[str, Any]]:
        """The visible devices, once per component; none without pynvml or a driver."""
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            count = int(pynvml.nvmlDeviceGetCount())
        except Exception:  # not installed, no driver, no device: no GPU keys
            return []
        self._nvml = pynvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        names = [str(i) for i in range(count)] if visible is None else _visible(visible)
        found: list[tuple[str, Any]] = []
        for position, name in enumerate(names):
            try:
                if name.isdigit():
                    handle = pynvml.nvmlDeviceGetHandleByIndex(int(name))
                else:
                    handle = pynvml.nvmlDeviceGetHandleByUUID(name)
            except Exception:
                continue
            # CUDA numbers the visible devices 0, 1, …: label them as the step's code sees them.
            found.append((str(position), handle))
        return found


def _visible(value: str) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it: up to the first invalid entry."""
    names: list[str] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        names.append(entry)
    return names
