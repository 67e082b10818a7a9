"""One table: every figure beside its target, met or not, against its peers in one run.

Machines are noisy, so every time is also shown as a ratio to the
OpenTelemetry SDK span and to an MLflow nested run measured in the same run,
and the figures with a target are medians of interleaved rounds (each round
measures every one of them once, in turn, so a neighbour's load hits them
alike). Fresh-process figures (cold start, a million steps) run in
subprocesses, and are medians of several as well. The table is saved as
``benchmarks/results/<utc-stamp>.json``; ``--compare A.json B.json`` prints
two of them side by side. Run with
`make bench`; ``--quick`` for a short look while developing.

Other modules contribute figures (``bench_<topic>.figures(quick)`` returning
the dicts of ``_table.figure``): one guarded line each at the end of ``main()``.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _fresh import cold_start, million
from _table import MLFLOW_RUN, SPAN, Figure, compare, figure, render, save
from _timing import Timer, batched_runs, batched_steps, otel_span

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
    _compile_zenmeta()

    def wall(code: str) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return wall("pass"), wall("import zenmeta")


def _compile_zenmeta() -> None:
    import compileall

    compileall.compile_dir(str(Path(zenmeta.__file__).parent), quiet=1)


# -- interleaved rounds: every figure with a target, once per round ----------


def _sqlite_batched(folder: str) -> str:
    url = f"sqlite:///{folder}/bench.db"
    zenmeta.configure(store=url, durability="batched")
    with zenmeta.pipeline_run("warm-up"):
        logging_step(0)
    zenmeta.flush()
    return url


FLOOR = "floor: a hand-written step logging 3 values (no zenmeta)"


def floor_steps(ops: int) -> float:
    """What any tracker must do for a step logging 3 values, written by hand
    with nothing else: a UUIDv7, two clock reads, a context variable set and
    reset, the values copied with their type names, their JSON, and a flat
    row appended to a list. No coercion of odd values, no redaction, no
    limits, no lock, no invocation name. The caller-visible target (0.2x a
    span) is measured against this: a tracker cannot cost less."""
    import contextvars
    import json

    from zenmeta._tracking.ids import new_id

    current: contextvars.ContextVar[object] = contextvars.ContextVar("floor", default=None)
    encode = json.JSONEncoder(separators=(",", ":")).encode
    queue: list[tuple[object, ...]] = []
    clock = time.time_ns

    def step(x: int) -> int:
        start = clock()
        step_id = new_id()
        token = current.set(step_id)
        logged = {"loss": 0.5, "rows": x, "split": "train"}
        values: dict[str, object] = {}
        types: dict[str, str] = {}
        for key, value in logged.items():
            values[key] = value
            types[key] = type(value).__name__
        current.reset(token)
        queue.append((step_id.hex, "run", "step", start, clock(), "user", encode(values)))
        return x

    begin = time.perf_counter()
    for i in range(ops):
        step(i)
    return (time.perf_counter() - begin) / ops


def _in_memory(step: Callable[[int], int], ops: int) -> float:
    store = InMemoryStore()
    zenmeta.configure(store=store)
    try:
        with zenmeta.pipeline_run("bench"):
            start = time.perf_counter()
            for i in range(ops):
                step(i)
            return (time.perf_counter() - start) / ops
    finally:
        zenmeta.configure(store=None)


def _mlflow_nested_runs() -> tuple[Callable[[int], float], Callable[[], None]]:
    """MLflow's nested ``start_run`` + ``log_params(3)`` + end, SQLite store."""
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    folder = tempfile.mkdtemp(prefix="zenmeta-bench-mlflow-")
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    experiment = mlflow.MlflowClient().create_experiment("bench_nested")
    mlflow.start_run(experiment_id=experiment, run_name="parent")

    def measure(ops: int) -> float:
        start = time.perf_counter()
        for i in range(ops):
            with mlflow.start_run(experiment_id=experiment, nested=True):
                mlflow.log_params({"loss": 0.5, "rows": i, "split": "train"})
        return (time.perf_counter() - start) / ops

    def finish() -> None:
        mlflow.end_run()
        os.environ.pop("MLFLOW_TRACKING_URI", None)

    return measure, finish


def interleaved(ops: int, rounds: int, *, with_mlflow: bool) -> list[Figure]:
    """The figures with targets: each round measures every one once, in turn."""
    span_batch = otel_span()
    times: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    mlflow_measure = mlflow_finish = None
    if with_mlflow:
        mlflow_measure, mlflow_finish = _mlflow_nested_runs()
        mlflow_measure(5)  # its tables and caches
    run_ops = max(ops // 20, 50)
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-") as folder:
        url = _sqlite_batched(folder)
        span_batch(ops // 10)
        batched_steps(logging_step, ops // 10)
        batched_runs(run_ops // 10)
        try:
            for _ in range(rounds):
                keep(SPAN, span_batch(ops) / ops)
                zenmeta.configure(store=None)
                keep("zenmeta step, no components (in memory)", _in_memory(empty_step, ops))
                keep("zenmeta step logging 3 values (in memory)", _in_memory(logging_step, ops))
                keep(FLOOR, floor_steps(ops))
                zenmeta.configure(store=url, durability="batched")
                caller, drained = batched_steps(logging_step, ops)
                keep("step logging 3 values, SQLite batched: caller-visible", caller)
                keep("step logging 3 values, SQLite batched: caller + drained writes", drained)
                caller, drained = batched_runs(run_ops)
                keep("run enter+exit, SQLite batched: caller-visible", caller)
                keep("run enter+exit, SQLite batched: caller + drained writes", drained)
                if mlflow_measure is not None:
                    keep(MLFLOW_RUN, mlflow_measure(max(ops // 1000, 10)))
        finally:
            from zenmeta._store import close_stores

            close_stores()
            zenmeta.configure(store=None, durability=None)
            if mlflow_finish is not None:
                mlflow_finish()
    medians = {name: statistics.median(found) for name, found in times.items()}
    span = medians[SPAN]
    targets = {
        "step logging 3 values, SQLite batched: caller-visible": 0.2,
        "step logging 3 values, SQLite batched: caller + drained writes": 0.3,
        "run enter+exit, SQLite batched: caller + drained writes": 1.0,
    }
    note = f"median of {rounds} interleaved rounds"
    out = []
    for name, seconds in medians.items():
        bar = targets.get(name)
        if name == MLFLOW_RUN:
            out.append(figure(name, seconds * 1e3, "ms", note=note))
        elif bar is None:
            out.append(figure(name, seconds * 1e6, "µs", note=note if name == SPAN else ""))
        else:
            met = seconds <= bar * span
            out.append(figure(name, seconds * 1e6, "µs", f"≤ {bar:.1f}x OTel span", met))
    return out


# -- the other modules' rows, as figures without a target ---------------------


def _timed_rows(rows: list[tuple[str, float]], note: str) -> list[Figure]:
    return [figure(name.strip(), seconds * 1e6, "µs", note=note) for name, seconds in rows]


def _team_figures() -> list[Figure]:
    import bench_team

    out = []
    for name, text in bench_team.rows():
        number, _, unit = text.partition(" ")
        out.append(figure(f"team store: {name}", float(number.replace(",", "")), unit))
    return out


def _mlflow_component() -> list[Figure]:
    import bench_mlflow

    result = bench_mlflow.bench_mlflow()
    ratio = result.pop("ratio")
    out = [figure(f"MLflow: {name}", seconds * 1e3, "ms") for name, seconds in result.items()]
    out.append(figure("MLflow: ratio zenmeta step + component / MLflow alone", ratio, "x"))
    return out


class _Arguments(argparse.Namespace):
    """Any ``--no-<topic>`` flag a contributed module is guarded by is False
    unless given, so a module's guard works before its flag is declared."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("no_"):
            return False
        raise AttributeError(name)


def _arguments(argv: list[str] | None = None) -> _Arguments:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=20_000, help="operations per batch")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="short batches, fewer rows")
    parser.add_argument("--million", action="store_true", help="also 1M steps into SQLite")
    parser.add_argument("--count", type=int, default=1_000_000, help="steps for --million")
    parser.add_argument("--cold", type=int, default=9, help="fresh processes for cold start")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow figures")
    parser.add_argument("--no-team", action="store_true", help="skip SQLite vs PostgreSQL")
    parser.add_argument("--no-save", action="store_true", help="do not write results/*.json")
    parser.add_argument(
        "--compare", nargs=2, metavar=("A.json", "B.json"), help="two saved tables side by side"
    )
    args, rest = parser.parse_known_args(argv, namespace=_Arguments())
    for flag in rest:  # a contributed module's --no-<topic>, declared or not
        if not flag.startswith("--no-"):
            parser.error(f"unrecognized argument: {flag}")
        setattr(args, flag[2:].replace("-", "_"), True)
    return args


FIGURES: list[Figure] = []
"""What ``main()`` measured; printed and saved once it returns."""


def main() -> None:
    args = _arguments()
    figures = FIGURES  # contributed modules extend this very list
    if args.compare:
        return
    quick = args.quick
    ops, rounds = (2_000, 3) if quick else (args.ops, args.rounds)
    print(f"Python {sys.version.split()[0]}, zenmeta {zenmeta.__version__}", flush=True)
    figures += interleaved(ops, rounds, with_mlflow=not args.no_mlflow)
    figures += cold_start(3 if quick else args.cold)
    if args.million or not quick:
        figures += million(100_000 if quick else args.count)
    figures += [
        figure("bare function call", bare_call(ops) / ops * 1e6, "µs"),
        figure("functools.wraps pass-through", wraps_call(ops) / ops * 1e6, "µs"),
    ]
    if not quick:
        import bench_otel
        import bench_store
        import bench_trust

        store_rows = bench_store.rows(ops, rounds)
        figures += _timed_rows(store_rows[1:2], "bench_store.py")  # immediate durability
        figures += _timed_rows(bench_otel.rows(ops, rounds), "bench_otel.py")
        figures += _timed_rows(bench_trust.rows(ops, rounds), "bench_trust.py")
        bare, with_zenmeta = import_cost()
        added = (with_zenmeta - bare) * 1e3
        figures.append(figure("import zenmeta adds, fresh interpreter", added, "ms"))
    if not args.no_team and not quick:
        figures += _team_figures()
    if not args.no_mlflow and not quick:
        figures += _mlflow_component()
    # Contributed modules, one guarded line each: `figures += bench_<topic>.figures(quick)`.
    if not args.no_levers:
        import bench_levers

        figures += bench_levers.figures(quick)
    if not args.no_carry:
        import bench_carry

        figures += bench_carry.figures(quick)
    if not args.no_dask:
        import bench_dask

        figures += bench_dask.figures(quick)
    if not args.no_query:  # builds 100,000 runs and 1,000,000 steps twice: minutes
        import bench_query

        figures += bench_query.figures(quick)


def report(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    if args.compare:
        print(compare(Path(args.compare[0]), Path(args.compare[1])))
        return
    print()
    print(render(FIGURES))
    if not args.no_save:
        print(f"\nsaved as {save(FIGURES)}")


if __name__ == "__main__":
    main()
    report()
