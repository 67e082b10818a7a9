"""What trust costs: redaction per step, the resources component per step, the
environment component per run with a warm git cache.

Each cost is a difference of two medians measured in the same process, the
batches of the two sides interleaved so that a noisy neighbour slows both:
a step logging 3 values with redaction on and off; a step with and without
the resources component; a run with and without the environment component
(after a first run has warmed its caches, in this repository).

    .venv/bin/python benchmarks/bench_trust.py
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import zenmeta
from zenmeta._codec import MetadataSet
from zenmeta._records import DroppedValue
from zenmeta._redaction import DEFAULT_RULES, OFF, Rules
from zenmeta._tracking.metadata import collect_metadata
from zenmeta.integrations.environment import EnvironmentComponent
from zenmeta.integrations.resources import ResourcesComponent
from zenmeta.testing import InMemoryStore


@zenmeta.track_step
def logging_step(x: int) -> int:
    zenmeta.log_metadata({"loss": 0.5, "rows": x, "split": "train"})
    return x


@zenmeta.track_step
def empty_step(x: int) -> int:
    return x


def _steps(
    step: Callable[[int], int], components: Sequence[object], redact: bool
) -> Callable[[int], float]:
    def batch(ops: int) -> float:
        zenmeta.configure(store=InMemoryStore(), redact=redact)
        try:
            with zenmeta.pipeline_run("bench", components=list(components)):
                start = time.perf_counter()
                for i in range(ops):
                    step(i)
                return time.perf_counter() - start
        finally:
            zenmeta.configure(store=None, redact=None)

    return batch


def _runs(components: Sequence[object]) -> Callable[[int], float]:
    def batch(ops: int) -> float:
        zenmeta.configure(store=InMemoryStore())
        try:
            start = time.perf_counter()
            for _ in range(ops):
                with zenmeta.pipeline_run("bench", components=list(components)):
                    pass
            return time.perf_counter() - start
        finally:
            zenmeta.configure(store=None)

    return batch


def _collect(rules: Rules) -> Callable[[int], float]:
    """The core's metadata pass alone (encode, then redact when on), for 3 values:
    the part of a step redaction changes, without the rest of the step's noise."""

    def batch(ops: int) -> float:
        sets: dict[str, MetadataSet] = {}
        dropped: list[DroppedValue] = []
        start = time.perf_counter()
        for i in range(ops):
            collect_metadata(
                sets, dropped, "user", {"loss": 0.5, "rows": i, "split": "train"}, rules
            )
        return time.perf_counter() - start

    return batch


def _paired(
    with_it: Callable[[int], float], without: Callable[[int], float], ops: int, repeats: int
) -> tuple[float, float, float]:
    """Median seconds per op with, without, and the median of paired differences."""
    with_it(max(ops // 10, 1))
    without(max(ops // 10, 1))

    def timed(batch: Callable[[int], float]) -> float:
        gc.collect()  # the previous batch's records are not this one's to free
        return batch(ops) / ops

    pairs = []
    for repeat in range(repeats):  # alternate which side goes first
        if repeat % 2:
            b = timed(without)
            a = timed(with_it)
        else:
            a = timed(with_it)
            b = timed(without)
        pairs.append((a, b))
    return (
        statistics.median(a for a, _ in pairs),
        statistics.median(b for _, b in pairs),
        statistics.median(a - b for a, b in pairs),
    )


def rows(ops: int = 20_000, repeats: int = 9) -> list[tuple[str, float]]:
    """Rows for bench.py's table: the measured sides, then each difference."""
    on, off, redaction = _paired(
        _steps(logging_step, (), True), _steps(logging_step, (), False), ops, repeats
    )
    collect_on, collect_off, collect_cost = _paired(
        _collect(DEFAULT_RULES), _collect(OFF), ops * 5, repeats
    )
    with_resources, plain, resources = _paired(
        _steps(empty_step, (ResourcesComponent(gpu=False),), True),
        _steps(empty_step, (), True),
        max(ops // 4, 100),
        repeats,
    )
    environment = EnvironmentComponent()
    run_ops = max(ops // 200, 20)
    with_environment, bare_run, environment_cost = _paired(
        _runs((environment,)), _runs(()), run_ops, repeats
    )
    return [
        ("step logging 3 values, redaction on", on),
        ("step logging 3 values, redaction off", off),
        ("  → redaction adds (paired median)", redaction),
        ("collect 3 values, redaction on", collect_on),
        ("collect 3 values, redaction off", collect_off),
        ("  → redaction adds to the collect", collect_cost),
        ("empty step + resources component", with_resources),
        ("empty step, no components", plain),
        ("  → resources component adds", resources),
        ("run enter+exit + environment (warm)", with_environment),
        ("run enter+exit, no components", bare_run),
        ("  → environment component adds", environment_cost),
    ]


if __name__ == "__main__":
    for name, seconds in rows():
        print(f"{name:<40} {seconds * 1e6:9.2f} µs")
    sys.exit(0)
