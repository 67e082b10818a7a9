"""The team store against the embedded one, measured in the same run.

Steps per second for 1 and 4 processes writing one store at once (batched,
each step logging 3 values, the run's closing flush included), on SQLite and
on a throwaway PostgreSQL server this benchmark starts and stops itself
(``tests/_postgres.py``, shared with the test suite), and the time
``zenmeta.copy_store`` takes to copy 100,000 steps from SQLite to PostgreSQL
and back.

    .venv/bin/python benchmarks/bench_team.py [--steps 20000] [--copy 100000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _postgres import PostgresServer, UnavailableError

_CHILD = textwrap.dedent(
    """
    import sys, time, zenmeta

    url, steps, go = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    attached = "attached" in sys.argv[4:]  # remote steps: a started record each
    if "no-index" in sys.argv[4:]:  # SQLite's value index left unfilled (its price)
        from zenmeta._store.sql import sessions

        sessions.INDEX_INSERTED = "SELECT ?"

    @zenmeta.track_step
    def logging_step(x):
        zenmeta.log_metadata({"loss": 0.5, "rows": x, "split": "train"})
        return x

    zenmeta.configure(store=url, durability="batched")
    with zenmeta.pipeline_run("warm-up"):
        logging_step(0)  # open the store, start the writer, before the start line
    time.sleep(max(0.0, go - time.time()))
    start = time.perf_counter()
    with zenmeta.pipeline_run("bench"):
        if attached:
            with zenmeta.attach(zenmeta.carry(), task_key="t"):
                for i in range(steps):
                    logging_step(i)
        else:
            for i in range(steps):
                logging_step(i)
    print(time.perf_counter() - start)  # the run's exit flushed every step
    """
)


def steps_per_second(
    url: str, processes: int, steps: int, *, attached: bool = False, index: bool = True
) -> float:
    """All processes start stepping at one moment; total steps over the slowest's
    time. ``index=False``: SQLite's value index is not filled."""
    go = time.time() + 1.0
    mode = (["attached"] if attached else []) + ([] if index else ["no-index"])
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, str(steps), str(go), *mode],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    elapsed = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        if child.returncode != 0:
            raise SystemExit(f"a benchmark process failed ({child.returncode})")
        elapsed.append(float(out.strip().splitlines()[-1]))
    return processes * steps / max(elapsed)


@contextmanager
def postgres() -> Iterator[PostgresServer | None]:
    """A throwaway server, or None (and a plain sentence) where there is none."""
    try:
        server = PostgresServer()
    except UnavailableError as error:
        print(f"PostgreSQL rows skipped: {error}")
        yield None
        return
    try:
        yield server.start()
    finally:
        server.stop()


def copy_seconds(server: PostgresServer, folder: str, steps: int) -> tuple[float, float]:
    """Seconds for ``zenmeta.copy_store`` to copy ``steps`` steps SQLite →
    PostgreSQL, then back to a new SQLite file."""
    source = f"sqlite:///{folder}/copy-source.db"
    subprocess.run(
        [sys.executable, "-c", _CHILD, source, str(steps), "0"], check=True, capture_output=True
    )
    middle = server.create_database("copy")
    there = _timed_copy(source, middle, steps + 1)  # the warm-up run's step too
    back = _timed_copy(middle, f"sqlite:///{folder}/copy-back.db", steps + 1)
    return there, back


def _timed_copy(source: str, target: str, expected_steps: int) -> float:
    import zenmeta
    from zenmeta._store import close_stores

    start = time.perf_counter()
    copied = zenmeta.copy_store(source, target)
    elapsed = time.perf_counter() - start
    close_stores()
    if copied.steps != expected_steps:
        raise SystemExit(f"copied {copied.steps} steps of {expected_steps}")
    return elapsed


def rows(steps: int = 20_000, copy_steps: int = 100_000, repeats: int = 3) -> list[tuple[str, str]]:
    """(name, figure) rows: steps/s per backend and process count (median of
    ``repeats``), and the copy time."""
    table: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-") as folder, postgres() as server:
        for processes in (1, 4):
            per_process = steps // processes
            sqlite_url = f"sqlite:///{folder}/team-{processes}.db"
            # Interleaved repeats, median of each: the two backends see the same noise.
            rates: dict[str, list[float]] = {"SQLite": [], "PostgreSQL": []}
            if processes == 1:  # remote steps beside local ones: the started records' cost
                rates.update({"SQLite attached": [], "PostgreSQL attached": []})
            postgres_url = None if server is None else server.create_database("bench")
            for _ in range(repeats):
                rates["SQLite"].append(steps_per_second(sqlite_url, processes, per_process))
                if processes == 1:
                    rates["SQLite attached"].append(
                        steps_per_second(sqlite_url, 1, per_process, attached=True)
                    )
                if postgres_url is not None:
                    rates["PostgreSQL"].append(
                        steps_per_second(postgres_url, processes, per_process)
                    )
                    if processes == 1:
                        rates["PostgreSQL attached"].append(
                            steps_per_second(postgres_url, 1, per_process, attached=True)
                        )
            for backend, measured in rates.items():
                if measured:
                    base, _, kind = backend.partition(" ")
                    how = "attached (remote steps)" if kind else "batched"
                    name = f"{base}, {processes} process(es), {how}"
                    table.append((name, f"{statistics.median(measured):,.0f} steps/s"))
        if server is not None and copy_steps:
            there, back = copy_seconds(server, folder, copy_steps)
            table.append(
                (f"store copy, {copy_steps:,} steps SQLite → PostgreSQL", f"{there:.2f} s")
            )
            table.append((f"store copy, {copy_steps:,} steps PostgreSQL → SQLite", f"{back:.2f} s"))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000, help="steps per row, all processes")
    parser.add_argument("--copy", type=int, default=100_000, help="steps to copy (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per steps/s row (median)")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, pid {os.getpid()}; steps log 3 values each")
    for name, figure in rows(args.steps, args.copy, args.repeats):
        print(f"  {name:<48} {figure:>16}")


if __name__ == "__main__":
    main()
