"""What joining a run through a carrier costs, in-process, beside a plain call and a step.

Each row is the median per operation over interleaved batches (a noisy
neighbour slows every row alike): a plain function call; a ``@track_step``
call inside a run; ``with zenmeta.attach(carrier): pass`` (attach + detach,
the issue's target: under 30 µs); the same block with one step inside; and
a ``carried(step)`` call. In-process, so no flush: a worker's ``carried``
call adds one flush of its store (SCALE.md measured 0.2 to 0.6 ms on SQLite).

    .venv/bin/python benchmarks/bench_carry.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import zenmeta
from zenmeta.testing import InMemoryStore

TARGET_ATTACH_S = 30e-6


def plain(x: int) -> int:
    return x


@zenmeta.track_step
def step(x: int) -> int:
    return x


def _batches(ops: int) -> dict[str, Callable[[], float]]:
    zenmeta.configure(store=InMemoryStore())
    run = zenmeta.pipeline_run("bench-carry")
    run.__enter__()
    carrier = zenmeta.carry()
    wrapped = zenmeta.carried(step)

    def plain_call() -> float:
        start = time.perf_counter()
        for i in range(ops):
            plain(i)
        return time.perf_counter() - start

    def plain_step() -> float:
        start = time.perf_counter()
        for i in range(ops):
            step(i)
        return time.perf_counter() - start

    def attach_detach() -> float:
        attach = zenmeta.attach
        start = time.perf_counter()
        for _ in range(ops):
            with attach(carrier):
                pass
        return time.perf_counter() - start

    def attach_with_step() -> float:
        attach = zenmeta.attach
        start = time.perf_counter()
        for i in range(ops):
            with attach(carrier):
                step(i)
        return time.perf_counter() - start

    def carried_step() -> float:
        start = time.perf_counter()
        for i in range(ops):
            wrapped(i)
        return time.perf_counter() - start

    return {
        "plain call": plain_call,
        "step in a run": plain_step,
        "attach + detach (in-process)": attach_detach,
        "attach + one step + detach": attach_with_step,
        "carried(step) call (in-process)": carried_step,
    }


def measure(ops: int, repeats: int) -> dict[str, float]:
    """Median seconds per operation of each row, batches interleaved."""
    batches = _batches(ops)
    for batch in batches.values():
        batch()  # warm up: lazy imports, the attached run, caches
    samples: dict[str, list[float]] = {name: [] for name in batches}
    for _ in range(repeats):
        for name, batch in batches.items():
            samples[name].append(batch() / ops)
    zenmeta.reset_configuration()
    return {name: statistics.median(values) for name, values in samples.items()}


def figures(quick: bool = False) -> list[dict[str, object]]:
    """The rows in the shared benchmark-table shape."""
    ops, repeats = (2_000, 3) if quick else (20_000, 7)
    medians = measure(ops, repeats)
    rows: list[dict[str, object]] = []
    for name, seconds in medians.items():
        target, met, note = "", None, ""
        if name.startswith("attach + detach"):
            target, met = "< 30 µs", seconds < TARGET_ATTACH_S
            note = f"{seconds / medians['plain call']:.0f}x a plain call"
        elif name != "plain call":
            note = f"{seconds / medians['step in a run']:.2f}x a step in a run"
        rows.append(
            {
                "name": f"carry: {name}",
                "value": seconds * 1e6,
                "unit": "µs",
                "target": target,
                "met": met,
                "note": note,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter batches")
    args = parser.parse_args()
    rows = figures(quick=args.quick)
    width = max(len(str(row["name"])) for row in rows)
    print(f"{'figure':<{width}}  {'value':>10}  {'target':>8}  met   note")
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]  # type: ignore[index]
        value = float(row["value"])  # type: ignore[arg-type]
        print(
            f"{row['name']!s:<{width}}  {value:>7.2f} {row['unit']}  {row['target']!s:>8}  "
            f"{met:<4}  {row['note']}"
        )


if __name__ == "__main__":
    main()
