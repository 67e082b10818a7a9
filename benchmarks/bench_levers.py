"""What the levers issue 16 named buy, measured beside the table.

- **a step's metadata stored with its step row** (pulled in schema version 6:
  a plain step's one set is three columns of its row): version 5 wrote a step
  with one metadata source as two rows in two tables, each with its own
  primary-key index. Measured here on raw ``sqlite3``, the way the writer's
  ``SQLiteSession`` inserts (multi-row ``INSERT`` per block of 2,048,
  time-ordered ids, WAL, ``synchronous=NORMAL``): the SQLite work per step
  then against one wider step row now;
- **a faster JSON encoder** (pulled: orjson, a dependency on CPython): a
  step's set through ``rows.encoded_sets`` with orjson and the checks that
  keep the codec's meaning, against the codec's C-encoder path it replaced
  (still the fallback) and msgspec, when installed (its import alone is
  ~60 ms).

And one more lever pulled, kept measurable: a run start reads the working
folder holding the interpreter lock (``_project.working_folder``) rather than
through ``os.getcwd``, which let the writer thread take the lock at every run.

Interleaved rounds, medians. Standalone: ``.venv/bin/python benchmarks/bench_levers.py``.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _timing import batched_runs

_BLOCK = 2048
_VALUES: dict[str, Any] = {"loss": 0.5, "rows": 12345, "split": "train"}
_DOCUMENT = '{"loss":0.5,"rows":12345,"split":"train"}'
_TYPES = '{"loss":"float","rows":"int","split":"str"}'
_STEP_COLUMNS = (
    "id VARCHAR(32) PRIMARY KEY, run_id VARCHAR(32) NOT NULL, parent_step_id VARCHAR(32), "
    "name TEXT NOT NULL, step_name TEXT NOT NULL, status VARCHAR(16) NOT NULL, "
    "start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL, error_type TEXT, error_message TEXT, "
    "faults TEXT, dropped TEXT"
)


def _database(path: str, inline: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    extra = ", document TEXT, types TEXT" if inline else ""
    db.execute(f"CREATE TABLE steps ({_STEP_COLUMNS}{extra})")
    db.execute("CREATE INDEX ix_steps_run ON steps (run_id, start_ns)")
    db.execute(
        "CREATE TABLE metadata (entity_id VARCHAR(32), source TEXT, entity_kind VARCHAR(8) "
        "NOT NULL, run_id VARCHAR(32) NOT NULL, position INTEGER NOT NULL, document TEXT "
        "NOT NULL, types TEXT NOT NULL, PRIMARY KEY (entity_id, source))"
    )
    return db


def _two_rows(db: sqlite3.Connection, first: int, count: int) -> float:
    """Version 5: a step row and a metadata row per step."""
    steps = "INSERT INTO steps VALUES " + ", ".join(
        ["(?, ?, NULL, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL)"] * _BLOCK
    )
    metadata = "INSERT INTO metadata VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * _BLOCK)
    run = f"{1:032x}"
    step_values: list[Any] = []
    meta_values: list[Any] = []
    for number in range(first, first + count):
        key = f"{number:032x}"
        step_values.extend((key, run, "step", "step", "completed", number, number))
        meta_values.extend((key, "user", "step", run, 0, _DOCUMENT, _TYPES))
    start = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    for block in range(0, count, _BLOCK):
        db.execute(steps, step_values[block * 7 : (block + _BLOCK) * 7])
        db.execute(metadata, meta_values[block * 7 : (block + _BLOCK) * 7])
    db.execute("COMMIT")
    return (time.perf_counter() - start) / count


def _one_row(db: sqlite3.Connection, first: int, count: int) -> float:
    """Version 6: the metadata document and type map as columns of the step row."""
    steps = "INSERT INTO steps VALUES " + ", ".join(
        ["(?, ?, NULL, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?, ?)"] * _BLOCK
    )
    run = f"{1:032x}"
    values: list[Any] = []
    for number in range(first, first + count):
        key = f"{number:032x}"
        values.extend((key, run, "step", "step", "completed", number, number, _DOCUMENT, _TYPES))
    start = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    for block in range(0, count, _BLOCK):
        db.execute(steps, values[block * 9 : (block + _BLOCK) * 9])
    db.execute("COMMIT")
    return (time.perf_counter() - start) / count


def _encoders() -> dict[str, Callable[[Any, Any, int], bytes]]:
    """What ``encoded_sets`` encodes a document with, by name: the shipped
    orjson, the codec's encoder it replaced (as without orjson), and msgspec
    when installed. Each is timed through ``encoded_sets`` itself, its checks
    and its type-map cache included."""
    from zenmeta._store.sql import rows

    def codec(document: Any, _default: Any, _option: int) -> bytes:
        return b"null"  # encoded_sets then takes the codec's text

    found: dict[str, Callable[[Any, Any, int], bytes]] = {
        "the codec's C encoder (before)": codec,
        "orjson (pulled)": rows._fast_dumps,
    }
    try:
        import msgspec  # type: ignore[import-not-found]
    except ImportError:
        return found
    encode = msgspec.json.Encoder().encode
    found["msgspec Encoder().encode"] = lambda document, _default, _option: encode(document)
    return found


def _encode_time(encoder: Callable[[Any, Any, int], bytes], ops: int) -> float:
    """Per call, ``encoded_sets`` of a 3-value set with ``encoder`` in orjson's place."""
    from zenmeta._codec import encode_metadata
    from zenmeta._store.sql import rows

    sets = {"user": encode_metadata(_VALUES)[0]}
    cache: rows.TypeCache = {}
    shipped, rows._fast_dumps = rows._fast_dumps, encoder
    try:
        start = time.perf_counter()
        for _ in range(ops):
            rows.encoded_sets(sets, cache)
        return (time.perf_counter() - start) / ops
    finally:
        rows._fast_dumps = shipped


def figures(quick: bool = False) -> list[dict[str, object]]:
    """The shared contract: one dict per figure, no targets (levers, not promises)."""
    count, rounds = (_BLOCK * 2, 3) if quick else (_BLOCK * 10, 7)
    today: list[float] = []
    inline: list[float] = []
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-levers-") as folder:
        two, one = _database(f"{folder}/two.db", False), _database(f"{folder}/one.db", True)
        for round_number in range(rounds):
            first = round_number * count
            today.append(_two_rows(two, first, count))
            inline.append(_one_row(one, first, count))
        two.close()
        one.close()
    saved = statistics.median(today) - statistics.median(inline)
    out: list[dict[str, object]] = [
        _figure("SQLite per step with metadata: step row + metadata row (version 5)", today),
        _figure("SQLite per step with metadata: one step row (version 6, today)", inline),
        {
            "name": "  version 6 saves, per step",
            "value": saved * 1e6,
            "unit": "µs",
            "target": "",
            "met": None,
            "note": "raw sqlite3 inserts only; the writer's row building would lose a tuple too",
        },
    ]
    encoders = _encoders()
    times: dict[str, list[float]] = {name: [] for name in encoders}
    ops = 20_000 if quick else 100_000
    for _ in range(rounds):
        for name, encode in encoders.items():
            times[name].append(_encode_time(encode, ops))
    for name, measured in times.items():
        out.append(_figure(f"a 3-value set's JSON (encoded_sets): {name}", measured))
    for name, measured in _run_loops(rounds * 2 - 1, 200 if quick else 1000).items():
        out.append(_figure(f"run enter+exit, working folder read: {name}", measured))
    return out


def _run_loops(rounds: int, runs: int) -> dict[str, list[float]]:
    """``with pipeline_run(): pass`` into batched SQLite, per run, as the caller
    sees it and with the writes drained: the working folder read holding the
    lock (today) and by ``os.getcwd`` (before), alternating in each round."""
    import os

    import zenmeta
    from zenmeta import _project
    from zenmeta._store import close_stores

    readers = {"held (today)": _project.working_folder, "os.getcwd (before)": os.getcwd}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-levers-runs-") as folder:
        zenmeta.configure(store=f"sqlite:///{folder}/runs.db", durability="batched")
        try:
            with zenmeta.pipeline_run("warm-up"):
                pass
            zenmeta.flush()
            for _ in range(rounds):
                for name, reader in readers.items():
                    _project.working_folder = reader  # type: ignore[assignment]
                    caller, drained = batched_runs(runs)
                    times.setdefault(f"caller-visible, {name}", []).append(caller)
                    times.setdefault(f"drained, {name}", []).append(drained)
        finally:
            _project.working_folder = readers["held (today)"]  # type: ignore[assignment]
            close_stores()
            zenmeta.configure(store=None, durability=None)
    return times


def _figure(name: str, seconds: list[float]) -> dict[str, object]:
    return {
        "name": name,
        "value": statistics.median(seconds) * 1e6,
        "unit": "µs",
        "target": "",
        "met": None,
        "note": "",
    }


if __name__ == "__main__":
    for item in figures():
        print(f"{item['name']:<74} {item['value']:8.2f} {item['unit']}  {item['note']}")
