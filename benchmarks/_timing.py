"""What every benchmark shares: the median-per-op timer and the reference
OpenTelemetry span that each row is compared with."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

Timer = Callable[[int], float]
"""Runs `ops` operations and returns the seconds they took."""


def median_per_op(run_batch: Timer, ops: int, repeats: int) -> float:
    """Median over `repeats` batches of the seconds per operation."""
    run_batch(max(ops // 10, 1))  # warm up caches, lazy imports, writer threads
    return statistics.median(run_batch(ops) / ops for _ in range(repeats))


def batched_runs(ops: int) -> tuple[float, float]:
    """``with pipeline_run(): pass`` into the configured store, per run:
    (as the caller sees it, with the writes drained)."""
    import zenmeta

    start = time.perf_counter()
    for _ in range(ops):
        with zenmeta.pipeline_run("bench"):
            pass
    caller = time.perf_counter()
    zenmeta.flush()
    drained = time.perf_counter()
    return (caller - start) / ops, (drained - start) / ops


def batched_steps(step: Callable[[int], int], ops: int) -> tuple[float, float]:
    """``step(i)`` for ``ops`` steps in one run into the configured store, per
    step: (as the caller sees it, with the writes drained); the run's end is
    outside both."""
    import zenmeta

    with zenmeta.pipeline_run("bench"):
        start = time.perf_counter()
        for i in range(ops):
            step(i)
        caller = time.perf_counter()
        zenmeta.flush()
        drained = time.perf_counter()
    zenmeta.flush()
    return (caller - start) / ops, (drained - start) / ops


def otel_span() -> Timer:
    """An OpenTelemetry SDK span with 3 attributes, exported to memory."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")

    def body(ops: int) -> float:
        exporter.clear()
        start = time.perf_counter()
        for i in range(ops):
            with tracer.start_as_current_span("step") as span:
                span.set_attribute("loss", 0.5)
                span.set_attribute("rows", i)
                span.set_attribute("split", "train")
        return time.perf_counter() - start

    return body
