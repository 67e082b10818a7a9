"""What carrying a run to Dask workers costs: a map of tiny tasks, plain and tracked.

Two LocalClusters (two worker processes of one thread each, loopback only),
one without zenmeta and one with ``zenmeta.integrations.dask.install``, run
the kinds alternating round by round, so that a neighbour's load on this
shared machine hits them alike: ``client.map`` of 1,000 tiny tasks as
plain functions on the first, and the same map on the second with every
task a ``zenmeta.carried`` ``@track_step`` inside a run, written to a SQLite
file (each carried call stores its step before it returns, so the writes
are inside the timing). Each pair runs twice: with functions the workers
import (shipped by reference, as a package's are) and with functions
defined in a function (shipped by value with cloudpickle, as a notebook's
are: ``Carried`` then ships the user's function and the step's
configuration, not the wrapper's code).
The figure is tracked throughput as a share of plain (issue 12: ≥ 90%).

    .venv/bin/python benchmarks/bench_dask.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _dask_tasks

import zenmeta
from zenmeta.testing import reset

TARGET_SHARE = 0.90


def _map_seconds(client: Any, fn: Any, tasks: int) -> float:
    start = time.perf_counter()
    # pure=False: fresh keys each round, so no round reuses another's results.
    client.gather(client.map(fn, range(tasks), pure=False))
    return time.perf_counter() - start


def local_cluster() -> Any:
    """Two worker processes of one thread each, listening on loopback only."""
    import distributed

    return distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )


def measure(tasks: int = 1_000, rounds: int = 5) -> dict[str, list[float]]:
    """Seconds per map of ``tasks`` tasks, per round, for each kind."""
    import distributed

    from zenmeta.integrations import dask as zenmeta_dask

    def tiny(x: int) -> int:  # defined here: shipped by value, like a notebook's
        return x + 1

    step = zenmeta.track_step(name="tiny")(tiny)
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-dask-") as folder:
        zenmeta.configure(store=f"sqlite:///{Path(folder) / 'zenmeta.db'}")
        # Plain tasks run on a cluster zenmeta was never installed on, so the
        # share counts the plugins' cost too; both clusters stay up, one idle
        # while the other works.
        with (
            local_cluster() as bare_cluster,
            distributed.Client(bare_cluster) as bare,
            local_cluster() as cluster,
            distributed.Client(cluster) as client,
        ):
            zenmeta_dask.install(client)
            with zenmeta.pipeline_run("bench_dask"):
                # carried() captures the run: built inside it
                kinds = {
                    "plain": (bare, _dask_tasks.tiny),
                    "tracked": (client, zenmeta.carried(_dask_tasks.tiny_step)),
                    "plain by value": (bare, tiny),
                    "tracked by value": (client, zenmeta.carried(step)),
                }
                times: dict[str, list[float]] = {kind: [] for kind in kinds}
                for on, fn in kinds.values():
                    _map_seconds(on, fn, max(tasks // 10, 10))  # warm up
                order = list(kinds.items())
                for _ in range(rounds):
                    for kind, (on, fn) in order:
                        times[kind].append(_map_seconds(on, fn, tasks))
                    order.reverse()  # ABCD then DCBA: a drifting load hits all kinds alike
        reset()  # flushes and closes the store before its folder goes
    return times


def _share(plain: list[float], tracked: list[float]) -> float:
    """Each round's own throughput ratio, then their median: steadier than a
    ratio of medians on a machine whose load changes between rounds."""
    return statistics.median(p / t for p, t in zip(plain, tracked, strict=True))


def figures(quick: bool = False) -> list[dict[str, object]]:
    """The benchmark table's rows (shared contract: name, value, unit, target, met, note)."""
    tasks, rounds = (200, 2) if quick else (1_000, 9)
    times = measure(tasks, rounds)
    rate = {kind: tasks / statistics.median(found) for kind, found in times.items()}
    note = f"{tasks} tiny tasks per map, median of {rounds} rounds, 2 workers, no zenmeta"
    rows: list[dict[str, object]] = []
    for suffix, shipped in (("", "by reference (importable module)"), (" by value", "by value")):
        share = _share(times["plain" + suffix], times["tracked" + suffix])
        rows += [
            {
                "name": f"Dask map, plain, functions {shipped}",
                "value": round(rate["plain" + suffix], 1),
                "unit": "tasks/s",
                "target": "",
                "met": None,
                "note": note,
            },
            {
                "name": f"Dask map, carried steps, {shipped}",
                "value": round(rate["tracked" + suffix], 1),
                "unit": "tasks/s",
                "target": "",
                "met": None,
                "note": "SQLite file store; each task stores its step before returning",
            },
            {
                "name": f"Dask tracked share of plain, {shipped}",
                "value": round(100 * share, 1),
                "unit": "%",
                "target": "≥ 90% of plain",
                "met": share >= TARGET_SHARE,
                "note": "median of the rounds' own ratios; kinds alternate ABCD, DCBA, …",
            },
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 tasks, 2 rounds")
    args = parser.parse_args()
    rows = figures(quick=args.quick)
    for row in rows:
        met = {True: "met", False: "NOT MET", None: ""}[row["met"]]  # type: ignore[index]
        print(f"{row['name']:<62} {row['value']:>10} {row['unit']:<8} {row['target']:<16} {met}")


if __name__ == "__main__":
    main()
