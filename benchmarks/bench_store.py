"""What persisting costs: zenmeta steps and runs written to a real SQLite file.

Each function returns the median seconds per operation over `repeats`
batches, the same shape as the rows of bench.py. A batched step's time
includes `zenmeta.flush()` at the end of its batch, so the writer thread's
work is paid for, not hidden. `--million` runs one million steps in one loop
into a batched store and reports steps per second and peak memory growth.

    .venv/bin/python benchmarks/bench_store.py            # the table
    .venv/bin/python benchmarks/bench_store.py --million  # the long loop
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from _timing import Timer, median_per_op, otel_span

import zenmeta
from zenmeta._store import close_stores


@zenmeta.track_step
def logging_step(x: int) -> int:
    zenmeta.log_metadata({"loss": 0.5, "rows": x, "split": "train"})
    return x


@zenmeta.track_step
def empty_step(x: int) -> int:
    return x


@contextmanager
def sqlite_store(durability: str) -> Iterator[str]:
    """A fresh SQLite store in a temporary folder, configured for every run."""
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-") as folder:
        url = f"sqlite:///{folder}/zenmeta.db"
        zenmeta.configure(store=url, durability=durability)  # type: ignore[arg-type]
        try:
            yield url
        finally:
            close_stores()
            zenmeta.configure(store=None, durability=None)


def _steps_then_flush(step: Callable[[int], int]) -> Timer:
    def body(ops: int) -> float:
        with zenmeta.pipeline_run("bench"):
            start = time.perf_counter()
            for i in range(ops):
                step(i)
            zenmeta.flush()
            return time.perf_counter() - start

    return body


def _attached_steps_then_flush(step: Callable[[int], int]) -> Timer:
    """Steps of a run owned "elsewhere" (attached here through a carrier):
    each writes a started record before its code, then its finished record."""

    def body(ops: int) -> float:
        with zenmeta.pipeline_run("bench"), zenmeta.attach(zenmeta.carry(), task_key="t"):
            start = time.perf_counter()
            for i in range(ops):
                step(i)
            zenmeta.flush()
            return time.perf_counter() - start

    return body


def _runs(ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        with zenmeta.pipeline_run("bench"):
            pass
    zenmeta.flush()  # a batched run's end does not wait for the writer: pay for it here
    return time.perf_counter() - start


def batched_step(ops: int = 20_000, repeats: int = 7) -> float:
    """A step logging 3 values, persisted in batches, flush included."""
    with sqlite_store("batched"):
        return median_per_op(_steps_then_flush(logging_step), ops, repeats)


def attached_step(ops: int = 20_000, repeats: int = 7) -> float:
    """The same step attached to a run (a remote step): started record included."""
    with sqlite_store("batched"):
        return median_per_op(_attached_steps_then_flush(logging_step), ops, repeats)


def immediate_step(ops: int = 2_000, repeats: int = 7) -> float:
    """A step logging 3 values, committed before it returns."""
    with sqlite_store("immediate"):
        return median_per_op(_steps_then_flush(logging_step), ops, repeats)


def persisted_run(ops: int = 200, repeats: int = 7) -> float:
    """``with pipeline_run(): pass``: written at start, at end, flushed at exit."""
    with sqlite_store("batched"):
        return median_per_op(_runs, ops, repeats)


def otel_span_median(ops: int = 20_000, repeats: int = 7) -> float:
    """The reference: an OpenTelemetry SDK span with 3 attributes, kept in memory."""
    return median_per_op(otel_span(), ops, repeats)


def rows(ops: int = 20_000, repeats: int = 7) -> list[tuple[str, float]]:
    """The rows for bench.py's side-by-side table."""
    return [
        ("zenmeta step + 3 values, SQLite batched", batched_step(ops, repeats)),
        ("  the same, attached (remote: + started record)", attached_step(ops, repeats)),
        ("zenmeta step + 3 values, SQLite immediate", immediate_step(max(ops // 10, 100), repeats)),
        ("zenmeta run enter+exit, SQLite", persisted_run(max(ops // 100, 20), repeats)),
    ]


def _peak_rss_bytes() -> int:
    """This process's peak RSS. On Linux from ``VmHWM``, which starts afresh at
    ``exec``: ``ru_maxrss`` keeps the high-water mark of the parent forked from
    (bench.py's, MLflow loaded), which hid the loop's growth."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def million(count: int = 1_000_000, *, with_metadata: bool = False) -> tuple[float, int]:
    """Steps per second and peak RSS growth for ``count`` steps in one run."""
    rate, growth, _ = million_breakdown(count, with_metadata=with_metadata)
    return rate, growth


def _writer_clock() -> int | None:
    """The CPU clock of this process's zenmeta writer thread (Linux), if one runs."""
    for thread in threading.enumerate():
        if thread.name.startswith("zenmeta-writer") and thread.ident is not None:
            try:
                return time.pthread_getcpuclockid(thread.ident)
            except (AttributeError, OSError):
                return None
    return None


def _time_batches(totals: list[float]) -> None:
    """Add each of the writer's batches to ``totals``: [wall, thread CPU]. Their
    difference is what the writer waited for inside its transactions: the
    interpreter lock after each statement (up to the 5 ms switch interval
    while the step loop holds it) and the disk."""
    from zenmeta._store import resolve_store

    writer = resolve_store().opened()._writer  # type: ignore[attr-defined]
    write_batch = writer._write_batch

    def timed(take: int) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            write_batch(take)
        finally:
            totals[0] += time.perf_counter() - wall
            totals[1] += time.thread_time() - cpu

    writer._write_batch = timed


def million_breakdown(
    count: int = 1_000_000, *, with_metadata: bool = False
) -> tuple[float, int, dict[str, float]]:
    """Steps per second, peak RSS growth, and where the time went, per step, in
    µs: the step loop's own CPU, the writer thread's CPU, the garbage
    collector's pauses (inside the loop's CPU) and the writer's waits inside
    its transactions (``_time_batches``) — measured, not profiled."""
    step = logging_step if with_metadata else empty_step
    paused = [0.0, 0.0]

    def gc_watch(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            paused[1] = time.perf_counter()
        else:
            paused[0] += time.perf_counter() - paused[1]

    with sqlite_store("batched") as url:
        with zenmeta.pipeline_run("warm-up"):
            step(0)  # open the store, start the writer, before the baseline
        zenmeta.flush()
        batches = [0.0, 0.0]
        _time_batches(batches)
        baseline = _peak_rss_bytes()
        clock = _writer_clock()
        writer_before = time.clock_gettime(clock) if clock is not None else 0.0
        gc.callbacks.append(gc_watch)
        caller_before = time.thread_time()
        start = time.perf_counter()
        with zenmeta.pipeline_run("million"):
            for i in range(count):
                step(i)
        zenmeta.flush()  # a batched run's end does not wait: the drain is paid for here
        elapsed = time.perf_counter() - start
        caller = time.thread_time() - caller_before
        gc.callbacks.remove(gc_watch)
        writer = time.clock_gettime(clock) - writer_before if clock is not None else float("nan")
        growth = _peak_rss_bytes() - baseline
        stored = zenmeta.Client(url).list_runs(pipeline="million", limit=1)[0].step_count
    if stored != count:
        raise SystemExit(f"only {stored} of {count} steps were stored")
    per_step = {
        "wall_us": elapsed / count * 1e6,
        "caller_cpu_us": caller / count * 1e6,
        "writer_cpu_us": writer / count * 1e6,
        "gc_us": paused[0] / count * 1e6,
        "writer_wait_us": (batches[0] - batches[1]) / count * 1e6,
    }
    return count / elapsed, growth, per_step


def _without_text_index() -> None:
    """Metadata inserts skip filling SQLite's value index (a lever's measure:
    queries need it). The statement stays, so only the index's work is saved."""
    from zenmeta._store.sql import sessions

    sessions.INDEX_INSERTED = "SELECT ?"  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--million", action="store_true", help="one million steps, one loop")
    parser.add_argument("--metadata", action="store_true", help="--million steps log 3 values")
    parser.add_argument("--count", type=int, default=1_000_000, help="steps for --million")
    parser.add_argument("--ops", type=int, default=20_000, help="operations per batch")
    parser.add_argument("--repeats", type=int, default=7, help="batches per row")
    parser.add_argument("--quiet", action="store_true", help="no version header")
    parser.add_argument("--json", action="store_true", help="--million as one JSON line")
    parser.add_argument(
        "--without",
        choices=["gc", "text-index"],
        action="append",
        default=[],
        help="--million with a cost switched off, to measure it: the garbage "
        "collector, or filling SQLite's value index (queries need it)",
    )
    args = parser.parse_args()
    if not args.quiet:
        print(f"Python {sys.version.split()[0]}, zenmeta {zenmeta.__version__}, pid {os.getpid()}")
    if args.million:
        if "gc" in args.without:
            gc.disable()
        if "text-index" in args.without:
            _without_text_index()
        rate, growth, per_step = million_breakdown(args.count, with_metadata=args.metadata)
        if args.json:
            print(json.dumps({"steps_per_s": rate, "growth_mib": growth / 2**20, **per_step}))
            return
        kind = "steps logging 3 values" if args.metadata else "steps"
        print(
            f"{args.count:,} {kind} into batched SQLite: {rate:,.0f} steps/s, "
            f"peak memory growth {growth / 2**20:.1f} MiB"
        )
        return
    table = rows(args.ops, args.repeats)
    reference = otel_span_median(args.ops, args.repeats)
    table.append(("OpenTelemetry SDK span + 3 attributes", reference))
    for name, seconds in table:
        print(f"{name:<45} {seconds * 1e6:9.2f} µs  {seconds / reference:6.2f}x OTel")


if __name__ == "__main__":
    main()
