"""What carrying a run to Dask workers costs: a map of tiny tasks, plain and tracked.

One LocalCluster (two worker processes of one thread each, loopback only)
runs both kinds, alternating round by round so that a neighbour's load on
this shared machine hits them alike: ``client.map`` of 1,000 tiny tasks as
plain functions, and the same map with every task a ``zenmeta.carried``
``@track_step`` inside a run, written to a SQLite file (each carried call
stores its step before it returns, so the writes are inside the timing).
The figure is tracked throughput as a share of plain (issue 12: ≥ 90%). A
third kind, attached but left to the store's one-second batch, shows what
the store-before-return wait costs on its own.

    .venv/bin/python benchmarks/bench_dask.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import zenmeta
from zenmeta.testing import reset

TARGET_SHARE = 0.90


def _map_seconds(client: Any, fn: Any, tasks: int) -> float:
    start = time.perf_counter()
    # pure=False: fresh keys each round, so no round reuses another's results.
    client.gather(client.map(fn, range(tasks), pure=False))
    return time.perf_counter() - start


def measure(tasks: int = 1_000, rounds: int = 5) -> dict[str, list[float]]:
    """Seconds per map of ``tasks`` tasks, per round, for each kind."""
    import distributed

    from zenmeta.integrations import dask as zenmeta_dask

    def tiny(x: int) -> int:  # defined here: shipped by value, like a notebook's
        return x + 1

    step = zenmeta.track_step(name="tiny")(tiny)
    times: dict[str, list[float]] = {"plain": [], "tracked": [], "unflushed": []}
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-dask-") as folder:
        zenmeta.configure(store=f"sqlite:///{Path(folder) / 'zenmeta.db'}")
        with (
            distributed.LocalCluster(
                n_workers=2,
                processes=True,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            zenmeta_dask.install(client)
            with zenmeta.pipeline_run("bench_dask"):
                carried = zenmeta.carried(step)  # captures the run: built inside it
                carrier = carried.carrier

                def unflushed(x: int) -> int:  # attached, left to the 1 s batch
                    with zenmeta.attach(carrier):
                        return step(x)

                kinds = {"plain": tiny, "tracked": carried, "unflushed": unflushed}
                for fn in kinds.values():
                    _map_seconds(client, fn, max(tasks // 10, 10))  # warm up
                order = list(kinds.items())
                for _ in range(rounds):
                    for kind, fn in order:
                        times[kind].append(_map_seconds(client, fn, tasks))
                    order.reverse()  # ABC then CBA: a drifting load hits all kinds alike
        reset()  # flushes and closes the store before its folder goes
    return times


def figures(quick: bool = False) -> list[dict[str, object]]:
    """The benchmark table's rows (shared contract: name, value, unit, target, met, note)."""
    tasks, rounds = (200, 2) if quick else (1_000, 7)
    times = measure(tasks, rounds)
    seconds = {kind: statistics.median(found) for kind, found in times.items()}
    plain, tracked = tasks / seconds["plain"], tasks / seconds["tracked"]
    unflushed = tasks / seconds["unflushed"]
    # Each round's own ratio, then their median: steadier than a ratio of medians
    # on a machine whose load changes between rounds.
    share = statistics.median(p / t for p, t in zip(times["plain"], times["tracked"], strict=True))
    note = f"{tasks} tiny tasks per map, median of {rounds} rounds, LocalCluster 2 processes"
    return [
        {
            "name": "Dask map, plain",
            "value": round(plain, 1),
            "unit": "tasks/s",
            "target": "",
            "met": None,
            "note": note,
        },
        {
            "name": "Dask map, every task a carried step",
            "value": round(tracked, 1),
            "unit": "tasks/s",
            "target": "",
            "met": None,
            "note": "SQLite file store; each task stores its step before returning",
        },
        {
            "name": "Dask map, attached steps left to the 1 s batch",
            "value": round(unflushed, 1),
            "unit": "tasks/s",
            "target": "",
            "met": None,
            "note": "attach() without carried's store-before-return: what that wait costs",
        },
        {
            "name": "Dask tracked throughput, share of plain",
            "value": round(100 * share, 1),
            "unit": "%",
            "target": "≥ 90% of plain",
            "met": share >= TARGET_SHARE,
            "note": "median of the rounds' own ratios; kinds alternate ABC, CBA, …",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 tasks, 2 rounds")
    args = parser.parse_args()
    rows = figures(quick=args.quick)
    for row in rows:
        met = {True: "met", False: "NOT MET", None: ""}[row["met"]]  # type: ignore[index]
        print(f"{row['name']:<42} {row['value']:>10} {row['unit']:<8} {row['target']:<16} {met}")


if __name__ == "__main__":
    main()
