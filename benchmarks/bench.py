"""Side-by-side medians: zenmeta against its peers, measured in one run.

Machines are noisy, so every row is compared to the OpenTelemetry SDK span
measured in the same process, minutes apart at most; read the ratios, not
the absolute times. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import Timer, median_per_op, otel_span

import zenmeta
from zenmeta.testing import InMemoryStore


def bare_call(ops: int) -> float:
    def f(x: int) -> int:
        return x

    start = time.perf_counter()
    for i in range(ops):
        f(i)
    return time.perf_counter() - start


def wraps_call(ops: int) -> float:
    def passthrough(func: Callable[[int], int]) -> Callable[[int], int]:
        @functools.wraps(func)
        def wrapper(*args: int, **kwargs: int) -> int:
            return func(*args, **kwargs)

        return wrapper

    @passthrough
    def f(x: int) -> int:
        return x

    start = time.perf_counter()
    for i in range(ops):
        f(i)
    return time.perf_counter() - start


def _with_store(body: Callable[[int], float]) -> Timer:
    def timed(ops: int) -> float:
        store = InMemoryStore()
        zenmeta.configure(store=store)
        try:
            return body(ops)
        finally:
            zenmeta.configure(store=None)

    return timed


@zenmeta.track_step
def empty_step(x: int) -> int:
    return x


@zenmeta.track_step
def logging_step(x: int) -> int:
    zenmeta.log_metadata({"loss": 0.5, "rows": x, "split": "train"})
    return x


def zenmeta_steps(step: Callable[[int], int]) -> Timer:
    def body(ops: int) -> float:
        with zenmeta.pipeline_run("bench"):
            start = time.perf_counter()
            for i in range(ops):
                step(i)
            return time.perf_counter() - start

    return _with_store(body)


def zenmeta_runs(ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        with zenmeta.pipeline_run("bench"):
            pass
    return time.perf_counter() - start


def import_cost(repeats: int = 15) -> tuple[float, float]:
    """Median wall time of a bare interpreter and of one importing zenmeta.

    Bytecode is compiled first, as ``pip install`` does for a user: this
    machine sets PYTHONDONTWRITEBYTECODE, which would otherwise make every
    import compile zenmeta's sources from scratch (~20 ms of the figure).
    """
    import compileall

    compileall.compile_dir(str(Path(zenmeta.__file__).parent), quiet=1)

    def wall(code: str) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return wall("pass"), wall("import zenmeta")


def core_rows(ops: int, repeats: int) -> list[tuple[str, float]]:
    return [
        ("bare function call", median_per_op(bare_call, ops, repeats)),
        ("functools.wraps pass-through", median_per_op(wraps_call, ops, repeats)),
        ("zenmeta step, no components", median_per_op(zenmeta_steps(empty_step), ops, repeats)),
        ("zenmeta step logging 3 values", median_per_op(zenmeta_steps(logging_step), ops, repeats)),
        (
            "zenmeta pipeline_run enter+exit",
            median_per_op(_with_store(zenmeta_runs), max(ops // 20, 10), repeats),
        ),
        ("OpenTelemetry SDK span + 3 attributes", median_per_op(otel_span(), ops, repeats)),
    ]


def print_table(rows: list[tuple[str, float]], reference: str) -> None:
    ref = dict(rows)[reference]
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  {'median/op':>11}  {'vs OTel span':>12}")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds * 1e6:>8.2f} µs  {seconds / ref:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20_000, help="operations per batch")
    parser.add_argument("--repeats", type=int, default=7, help="batches per row")
    parser.add_argument("--million", action="store_true", help="also 1M steps into SQLite")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow comparison")
    parser.add_argument("--no-team", action="store_true", help="skip SQLite vs PostgreSQL")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, zenmeta {zenmeta.__version__}")
    import bench_otel
    import bench_store
    import bench_trust

    rows = core_rows(args.ops, args.repeats) + bench_store.rows(args.ops, args.repeats)
    rows += bench_otel.rows(args.ops, args.repeats)
    rows += bench_trust.rows(args.ops, args.repeats)
    print_table(rows, "OpenTelemetry SDK span + 3 attributes")
    print(bench_otel.verdict(dict(rows), dict(rows)["OpenTelemetry SDK span + 3 attributes"]))
    if args.million:
        # A fresh process: the rows above already raised this one's peak
        # memory, which would hide the loop's own growth.
        print()
        script = str(Path(__file__).resolve().parent / "bench_store.py")
        for extra in ([], ["--metadata"]):
            subprocess.run([sys.executable, script, "--million", "--quiet", *extra], check=True)
    if not args.no_team:
        import bench_team

        print("\nteam store, same run (bench_team.py; steps log 3 values each):")
        for name, figure in bench_team.rows():
            print(f"  {name:<48} {figure:>16}")
    if not args.no_mlflow:
        import bench_mlflow

        result = bench_mlflow.bench_mlflow()
        ratio = result.pop("ratio")
        print("\nper step, same SQLite MLflow store (median):")
        for name, seconds in result.items():
            print(f"  {name:<38} {seconds * 1e3:8.2f} ms")
        print(f"  {'ratio zenmeta / MLflow alone':<38} {ratio:8.2f}")
    bare, with_zenmeta = import_cost()
    print(
        f"\nimport zenmeta adds {(with_zenmeta - bare) * 1e3:.1f} ms to a bare interpreter "
        f"({bare * 1e3:.1f} ms → {with_zenmeta * 1e3:.1f} ms)"
    )


if __name__ == "__main__":
    main()
