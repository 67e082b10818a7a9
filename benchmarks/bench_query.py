"""Finding, comparing and pruning runs in a big store, on SQLite and PostgreSQL in one run.

Builds a store of 100,000 runs and 1,000,000 steps in the store's real schema
(created and migrated by zenmeta itself), then times what issue 13 promises:

- ``Client.list_runs(where="<metadata equality> and <numeric range>", limit=50)``
  under 100 ms;
- ``Client.find_steps(where="<metadata equality>")`` under 1 s;
- ``Client.diff_runs`` of two runs with 500 packages each under 50 ms;
- ``Client.gc`` (what ``zenmeta store gc --older-than`` calls) of 50,000 runs
  under 30 s;

and what the indexes behind the first two cost the writer: tracked steps per
second into a fresh store with them, as a share of one without them
(alternated, median of three; no target, a price to know).

Every run has environment metadata (git commit shared by 100 consecutive
runs, branch, dirty flag, host, Python, 5 named and 20 installed packages)
and user metadata (accuracy, lr, epochs); every step an ``mlflow`` set (its
own MLflow run id, experiment id) and a ``user`` set (loss, rows). The rows
are written in bulk, not by tracking a million steps: multi-row inserts through
the writer's own session on SQLite, ``COPY`` on PostgreSQL, with documents
encoded as the store's writer encodes them (checked against
``metadata_rows``), so the indexes are filled as they would be for tracked
runs. PostgreSQL is then
``VACUUM ANALYZE``d, as autovacuum would have done to a store that grew over
weeks. The queried commit belongs to runs in the middle of the history, so
neither end of the time index finds it by luck; the MLflow run id is one
step's, also from the middle.

    .venv/bin/python benchmarks/bench_query.py           # full sizes, both backends
    .venv/bin/python benchmarks/bench_query.py --quick   # 5,000 runs, for a fast check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _postgres import PostgresServer, UnavailableError

RUNS = 100_000
STEPS_PER_RUN = 10
QUICK_RUNS = 5_000
RUNS_PER_COMMIT = 100
DIFF_PACKAGES = 500
_CHUNK = 20_000
_STEP_BIT = 1 << 63  # step ids never equal a run id
_STEP_NAMES = ("load", "clean", "split", "featurize", "train", "tune", "evaluate", "export",
               "report", "publish")  # fmt: skip
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False).encode
_MLFLOW_TYPES = _COMPACT({"mlflow_run_id": "str", "mlflow_experiment_id": "str"})
_USER_STEP_TYPES = _COMPACT({"loss": "float", "rows": "int"})


class Built(NamedTuple):
    """What the queries ask for, chosen while the store was built."""

    commit: str
    mlflow_run_id: str
    diff_ids: tuple[str, str]
    gc_before_ns: int
    """gc takes the runs started before this: the older half."""
    runs: int
    steps: int


def _commit(number: int) -> str:
    return hashlib.sha1(f"commit-{number}".encode()).hexdigest()


def _installed(count: int, seed: int) -> list[str]:
    return [f"package-{j:03d}=={1 + (seed + j) % 7}.{j % 10}.0" for j in range(count)]


def _run_metadata(index: int, host: str, packages: int = 20) -> dict[str, dict[str, Any]]:
    generator = random.Random(index)
    return {
        "environment": {
            "python_version": "3.11.9",
            "hostname": host,
            "packages": {name: "1.0" for name in ("numpy", "pandas", "torch", "mlflow", "zenml")},
            "installed_packages": _installed(packages, index // 1000),
            "git_commit": _commit(index // RUNS_PER_COMMIT),
            "git_branch": "main",
            "git_dirty": index % 7 == 0,
        },
        "user": {
            "accuracy": generator.random(),
            "lr": generator.choice((0.1, 0.01, 0.001)),
            "epochs": 10 + index % 5,
        },
    }


def _rows(
    runs: int, now_ns: int
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(run rows, step rows, metadata rows) in chunks, oldest runs first."""
    from zenmeta._codec import encode_metadata
    from zenmeta._store.sql.rows import metadata_rows

    generator = random.Random(13)
    run_rows: list[tuple[Any, ...]] = []
    step_rows: list[tuple[Any, ...]] = []
    meta_rows: list[tuple[Any, ...]] = []
    checked = False
    for index in range(runs):
        start = now_ns - (runs - index) * 60_000_000_000 - 3_600_000_000_000
        run_id = f"{start:016x}{index:016x}"
        host = f"host-{index % 20}"
        failed = index % 20 == 0
        run_rows.append(
            (run_id, f"run-{index}", f"pipeline-{index % 10}", None, "[]",
             "failed" if failed else "completed", start, start + 55_000_000_000, host,
             1000 + index % 5000, None, start + 55_000_000_000,
             "RuntimeError" if failed else None, "boom" if failed else None, None, None)
        )  # fmt: skip
        sets = {}
        for source, values in _run_metadata(index, host).items():
            sets[source] = encode_metadata(values)[0]
        meta_rows += metadata_rows("run", run_id, run_id, sets)
        for number, name in enumerate(_STEP_NAMES[:STEPS_PER_RUN]):
            step_start = start + number * 5_000_000_000
            step_id = f"{step_start:016x}{_STEP_BIT | (index * STEPS_PER_RUN + number):016x}"
            step_rows.append(
                (step_id, run_id, None, name, name, "completed", step_start,
                 step_start + 4_000_000_000, None, None, None, None)
            )  # fmt: skip
            mlflow = {
                "mlflow_run_id": hashlib.md5(step_id.encode()).hexdigest(),
                "mlflow_experiment_id": str(1 + index % 10),
            }
            user = {"loss": round(generator.random(), 6), "rows": 1000 + number}
            documents = (_COMPACT(mlflow), _COMPACT(user))
            meta_rows.append((step_id, "mlflow", "step", run_id, 0, documents[0], _MLFLOW_TYPES))
            meta_rows.append((step_id, "user", "step", run_id, 1, documents[1], _USER_STEP_TYPES))
            if not checked:  # the documents are exactly what the store's writer writes
                sets = {"mlflow": encode_metadata(mlflow)[0], "user": encode_metadata(user)[0]}
                real = metadata_rows("step", step_id, run_id, sets)
                assert real == meta_rows[-2:], (real, meta_rows[-2:])
                checked = True
        if len(step_rows) >= _CHUNK or index == runs - 1:
            yield run_rows, step_rows, meta_rows
            run_rows, step_rows, meta_rows = [], [], []


def _diff_rows(now_ns: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[str]]:
    """Two newer runs of another pipeline with 500 installed packages each, 50 of them
    at other versions, 10 only in one run."""
    from zenmeta._codec import encode_metadata
    from zenmeta._store.sql.rows import metadata_rows

    run_rows, meta_rows, ids = [], [], []
    for number in range(2):
        start = now_ns - 1_800_000_000_000 + number * 60_000_000_000
        run_id = f"{start:016x}{10**9 + number:016x}"
        ids.append(run_id)
        run_rows.append(
            (run_id, f"diff-{number}", "diff", None, "[]", "completed", start,
             start + 1_000_000_000, "host-0", 1, None, start, None, None, None, None)
        )  # fmt: skip
        metadata = _run_metadata(number, "host-0", packages=0)
        packages = _installed(DIFF_PACKAGES - 10, 0)
        if number:
            packages[:50] = _installed(50, 1)
        packages += [f"only-in-{number}-{j}==1.0" for j in range(10)]
        metadata["environment"]["installed_packages"] = packages
        sets = {source: encode_metadata(values)[0] for source, values in metadata.items()}
        meta_rows += metadata_rows("run", run_id, run_id, sets)
    return run_rows, meta_rows, ids


def _padded(table: str, chunk: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows made for schema 3, NULL-filled to the store's own columns (schema 4
    appended the process and task columns at the end of runs and steps)."""
    from zenmeta._store.sql.schema import tables

    width = len(tables.tables[table].columns)
    if not chunk or len(chunk[0]) == width:
        return chunk
    missing = (None,) * (width - len(chunk[0]))
    return [row + missing for row in chunk]


def _insert_sqlite(url: str, rows: Iterator[Any]) -> None:
    """Through the writer's own session, which fills the value index as the
    tracked path does (``indexes.INDEX_INSERTED``)."""
    import sqlalchemy

    from zenmeta._store.sql.schema import tables
    from zenmeta._store.sql.sessions import open_session

    engine = sqlalchemy.create_engine(url)
    session = open_session(engine)
    try:
        session.begin()
        for run_rows, step_rows, meta_rows in rows:
            for table, chunk in (("zenmeta_runs", run_rows), ("zenmeta_steps", step_rows),
                                 ("zenmeta_metadata", meta_rows)):  # fmt: skip
                if chunk:
                    chunk = _padded(table, chunk)
                    flat = [value for row in chunk for value in row]
                    session.insert(tables.tables[table], {tuple(range(len(chunk[0]))): flat})
        session.commit()
    finally:
        session.close()
        engine.dispose()


def _insert_postgres(url: str, rows: Iterator[Any]) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    pooled = engine.raw_connection()
    try:
        driver: Any = pooled.driver_connection
        with driver.cursor() as cursor:
            for run_rows, step_rows, meta_rows in rows:
                for table, chunk in (("zenmeta_runs", run_rows), ("zenmeta_steps", step_rows),
                                     ("zenmeta_metadata", meta_rows)):  # fmt: skip
                    if chunk:
                        with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                            for row in _padded(table, chunk):
                                copy.write_row(row)
        driver.commit()
        driver.autocommit = True
        with driver.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        driver.autocommit = False
    finally:
        pooled.close()
        engine.dispose()


def build(url: str, runs: int) -> tuple[Built, float]:
    """Fill an empty store at ``url``; what to query, and the seconds it took."""
    from zenmeta._store import close_stores
    from zenmeta._store.sql import SQLStore

    SQLStore(url).close()  # the real schema, created (and migrated) by zenmeta
    close_stores()
    started = time.perf_counter()
    now_ns = time.time_ns()
    diff_runs, diff_meta, diff_ids = _diff_rows(now_ns)
    chunks = _rows(runs, now_ns)

    def everything() -> Iterator[Any]:
        yield from chunks
        yield diff_runs, [], diff_meta

    insert = _insert_postgres if url.startswith("postgresql") else _insert_sqlite
    insert(url, everything())
    middle = runs // 2
    step_of_middle = now_ns - (runs - middle) * 60_000_000_000 - 3_600_000_000_000
    step_number = _STEP_BIT | (middle * STEPS_PER_RUN + 4)
    step_id = f"{step_of_middle + 4 * 5_000_000_000:016x}{step_number:016x}"
    built = Built(
        commit=_commit(middle // RUNS_PER_COMMIT),
        mlflow_run_id=hashlib.md5(step_id.encode()).hexdigest(),
        diff_ids=(diff_ids[0], diff_ids[1]),
        gc_before_ns=step_of_middle - 30_000_000_000,  # runs are 60 s apart
        runs=runs + 2,
        steps=runs * STEPS_PER_RUN,
    )
    return built, time.perf_counter() - started


def _median_seconds(action: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    result = action()  # warm: the first call opens the store and fills the caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _figure(name: str, seconds: float, target_s: float, target: str, note: str) -> dict[str, Any]:
    millis = seconds * 1e3
    return {"name": name, "value": round(millis, 2), "unit": "ms", "target": target,
            "met": seconds < target_s, "note": note}  # fmt: skip


def measure(url: str, backend: str, built: Built, repeats: int = 5) -> list[dict[str, Any]]:
    """The four figures on one filled store (gc last: it deletes half of it)."""
    import zenmeta
    from zenmeta._store import close_stores

    client = zenmeta.Client(url)
    size = f"{built.runs:,} runs, {built.steps:,} steps"
    where = f"environment.git_commit = '{built.commit}' and user.accuracy >= 0.5"
    seconds, found = _median_seconds(lambda: client.list_runs(where=where, limit=50), repeats)
    assert 10 < len(found) <= 50 and all(run.metadata["user"]["accuracy"] >= 0.5 for run in found)
    figures = [_figure(f"{backend}: list_runs(commit = and accuracy >=, limit=50)", seconds, 0.1,
                       "< 100 ms", f"{len(found)} runs found; {size}")]  # fmt: skip
    steps_where = f"mlflow.mlflow_run_id = '{built.mlflow_run_id}'"
    seconds, steps = _median_seconds(lambda: client.find_steps(steps_where), repeats)
    assert len(steps) == 1 and steps[0].step_name == "train"
    figures.append(_figure(f"{backend}: find_steps(mlflow_run_id =)", seconds, 1.0, "< 1 s",
                           f"1 step of {built.steps:,}"))  # fmt: skip
    first, second = built.diff_ids
    seconds, diff = _median_seconds(lambda: client.diff_runs(first, second), repeats)
    changed = [key for key in diff.metadata["environment"] if key.startswith("installed_")]
    assert len(changed) == 70, len(changed)
    figures.append(_figure(f"{backend}: diff_runs, 500 packages each", seconds, 0.05, "< 50 ms",
                           "50 changed, 10 added, 10 removed"))  # fmt: skip
    age = timedelta(microseconds=(time.time_ns() - built.gc_before_ns) // 1000)
    started = time.perf_counter()
    gone = client.gc(older_than=age)
    seconds = time.perf_counter() - started
    expected = (built.runs - 2) // 2
    assert len(gone) == expected, (len(gone), expected)
    left = zenmeta.Client(url).count_runs()
    assert left == built.runs - expected, left
    figures.append(_figure(f"{backend}: store gc --older-than, {expected:,} runs", seconds, 30.0,
                           "< 30 s", f"with their {expected * STEPS_PER_RUN:,} steps"))  # fmt: skip
    close_stores()
    return figures


def write_cost(url_with: str, url_without: str, steps: int, repeats: int = 3) -> float:
    """Tracked steps per second into a store with the query indexes, as a share of
    the same into one without them; alternated, median of ``repeats`` each."""
    from bench_team import steps_per_second

    from zenmeta._store.sql import SQLStore
    from zenmeta._store.sql.indexes import drop_indexes

    for url in (url_with, url_without):
        SQLStore(url).close()
    sqlite = url_without.startswith("sqlite")
    if not sqlite:  # SQLite's index is a table its queries need: left unfilled instead
        without = SQLStore(url_without)
        with without.engine.begin() as connection:
            drop_indexes(connection)
        without.close()
    rates: dict[str, list[float]] = {url_with: [], url_without: []}
    for _ in range(repeats):
        for url in rates:
            index = url == url_with or not sqlite
            rates[url].append(steps_per_second(url, 1, steps, index=index))
    return statistics.median(rates[url_with]) / statistics.median(rates[url_without])


def _write_figure(backend: str, ratio: float, steps: int) -> dict[str, Any]:
    note = f"of the same store without it; {steps:,} steps logging 3 values, batched"
    name = f"{backend}: tracked steps/s with the query index"
    return {"name": name, "value": round(ratio * 100, 1), "unit": "%", "target": "",
            "met": None, "note": note}  # fmt: skip


@contextmanager
def _postgres() -> Iterator[PostgresServer | None]:
    try:
        server = PostgresServer()
    except UnavailableError as error:
        print(f"PostgreSQL figures skipped: {error}", file=sys.stderr)
        yield None
        return
    try:
        yield server.start()
    finally:
        server.stop()


def figures(quick: bool = False, backends: tuple[str, ...] = ("sqlite", "postgresql")
            ) -> list[dict[str, object]]:  # fmt: skip
    """The figures for every backend, each store built fresh at full (or quick) size."""
    runs = QUICK_RUNS if quick else RUNS
    found: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-query-") as folder:
        if "sqlite" in backends:
            url = f"sqlite:///{folder}/query.db"
            built, took = build(url, runs)
            print(f"sqlite: built {built.runs:,} runs, {built.steps:,} steps in {took:.0f} s",
                  file=sys.stderr)  # fmt: skip
            found += measure(url, "sqlite", built)
            steps = 2_000 if quick else 20_000
            pair = f"sqlite:///{folder}/with.db", f"sqlite:///{folder}/without.db"
            ratio = write_cost(*pair, steps)
            found.append(_write_figure("sqlite", ratio, steps))
        if "postgresql" in backends:
            with _postgres() as server:
                if server is not None:
                    url = server.create_database("query")
                    built, took = build(url, runs)
                    print(f"postgresql: built {built.runs:,} runs, {built.steps:,} steps in "
                          f"{took:.0f} s", file=sys.stderr)  # fmt: skip
                    found += measure(url, "postgresql", built)
                    steps = 2_000 if quick else 20_000
                    with_url, without_url = server.create_database(), server.create_database()
                    found.append(_write_figure("postgresql", write_cost(with_url, without_url,
                                                                        steps), steps))  # fmt: skip
    return found


def print_table(rows: list[dict[str, object]]) -> None:
    for row in rows:
        met = {True: "met", False: "NOT MET", None: ""}[row["met"]]  # type: ignore[index]
        print(f"  {row['name']:<58} {row['value']:>10} {row['unit']:<3} {row['target']:<9} "
              f"{met:<8} {row['note']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS:,} runs, not {RUNS:,}")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append",
                        help="only this backend (repeatable); default both")  # fmt: skip
    args = parser.parse_args()
    rows = figures(args.quick, tuple(args.backend or ("sqlite", "postgresql")))
    print_table(rows)


if __name__ == "__main__":
    main()
