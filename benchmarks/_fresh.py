"""Figures that need a fresh process: the first run after ``import zenmeta``, and
a million steps (whose memory growth a long-lived process would hide).

Each returns figure dicts (``_table.figure``) with the issue's targets.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _table import Figure, figure

import zenmeta


def _compile_zenmeta() -> None:
    """Bytecode first, as ``pip install`` does: this machine sets PYTHONDONTWRITEBYTECODE."""
    import compileall

    compileall.compile_dir(str(Path(zenmeta.__file__).parent), quiet=1)


# -- a fresh process: the first run, and what SQLAlchemy's import would add --

_COLD_START = """
import json, os, sys, time
started = time.perf_counter()
import zenmeta
imported = time.perf_counter()
imported_cpu = time.thread_time()

@zenmeta.track_step
def step():
    return 1

with zenmeta.pipeline_run("cold") as run:
    step()
returned = time.perf_counter()
returned_cpu = time.thread_time()
zenmeta.flush()
client = zenmeta.Client(os.environ["ZENMETA_STORE"])
(recorded,) = client.list_runs(limit=1)
(recorded_step,) = client.list_steps(recorded.id)
print(json.dumps({
    "after_import_ms": (returned - imported) * 1e3,
    "after_import_cpu_ms": (returned_cpu - imported_cpu) * 1e3,
    "run_ms": (recorded.end_time - recorded.start_time).total_seconds() * 1e3,
    "step_ms": (recorded_step.end_time - recorded_step.start_time).total_seconds() * 1e3,
    "sqlalchemy_before_run": "sqlalchemy" in sys.modules,
}))
"""

_SQLALCHEMY_IMPORT = """
import time
started = time.perf_counter()
import sqlalchemy
print((time.perf_counter() - started) * 1e3)
"""


def cold_start(processes: int) -> list[Figure]:
    """Medians over fresh processes, alternating with SQLAlchemy's own import
    time (what the first run used to wait for), each store a new file."""
    _compile_zenmeta()
    found: dict[str, list[float]] = {
        "after_import_ms": [],
        "after_import_cpu_ms": [],
        "run_ms": [],
        "step_ms": [],
    }
    sqlalchemy_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-cold-") as folder:
        for number in range(processes):
            env = {
                **os.environ,
                "ZENMETA_STORE": f"sqlite:///{folder}/cold-{number}.db",
            }
            done = subprocess.run(
                [sys.executable, "-c", _COLD_START], check=True, capture_output=True, env=env
            )
            measured = json.loads(done.stdout)
            for key in found:
                found[key].append(measured[key])
            done = subprocess.run(
                [sys.executable, "-c", _SQLALCHEMY_IMPORT], check=True, capture_output=True
            )
            sqlalchemy_ms.append(float(done.stdout))
    after_import = statistics.median(found["after_import_ms"])
    run_ms = statistics.median(found["run_ms"])
    importing = statistics.median(sqlalchemy_ms)
    note = f"median of {processes} fresh processes, each with a new SQLite store"
    return [
        figure(
            "fresh process: first `with pipeline_run(): step()` after import",
            after_import,
            "ms",
            "≤ 20 ms",
            after_import <= 20,
            note,
        ),
        figure(
            "  the same, CPU time of the caller's thread",
            statistics.median(found["after_import_cpu_ms"]),
            "ms",
            note="what the wall time is when the machine is not shared",
        ),
        figure(
            "fresh process: the first run's recorded duration",
            run_ms,
            "ms",
            "< ¼ of SQLAlchemy's import",
            run_ms < importing / 4,
            "the user's code only: the store opens on its own thread",
        ),
        figure(
            "fresh process: the first step's recorded duration",
            statistics.median(found["step_ms"]),
            "ms",
        ),
        figure(
            "fresh process: import sqlalchemy (what the first run no longer waits for)",
            importing,
            "ms",
        ),
    ]


# -- a million steps, each in a fresh process ---------------------------------


ROUNDS = 3
"""Fresh processes per kind of million-step loop. One loop's rate moved by
a third between runs of the same code on this project's 2-core machine
(72-108k steps/s on 2026-12-03), so the table shows the median round."""


def _million_once(script: str, count: int, with_values: bool) -> dict[str, float]:
    extra = ["--metadata"] if with_values else []
    done = subprocess.run(
        [sys.executable, script, "--million", "--json", "--count", str(count), *extra],
        check=True,
        capture_output=True,
        text=True,
    )
    measured: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


def million(count: int, rounds: int = ROUNDS) -> list[Figure]:
    """Each kind of loop ``rounds`` times, the kinds alternating; each kind's
    figures are those of its median round by rate, so that its split adds up."""
    script = str(Path(__file__).resolve().parent / "bench_store.py")
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(rounds):
        for with_values in (True, False):
            runs[with_values].append(_million_once(script, count, with_values))
    out = []
    for with_values in (True, False):
        ranked = sorted(runs[with_values], key=lambda measured: measured["steps_per_s"])
        measured = ranked[len(ranked) // 2]
        kind = "logging 3 values" if with_values else "no values"
        rate = measured["steps_per_s"]
        growth = max(round_["growth_mib"] for round_ in ranked)  # the target bounds every round
        spread = f"{ranked[0]['steps_per_s']:,.0f}-{ranked[-1]['steps_per_s']:,.0f}"
        name = f"{count:,} steps {kind} into batched SQLite"
        split = (
            f"median of {rounds} fresh processes ({spread} steps/s); "
            f"per step: wall {measured['wall_us']:.1f} µs; loop CPU "
            f"{measured['caller_cpu_us']:.1f} µs (GC pauses {measured['gc_us']:.1f} µs of it); "
            f"writer thread CPU {measured['writer_cpu_us']:.1f} µs, and its waits inside "
            f"transactions {measured['writer_wait_us']:.1f} µs (the GIL, the disk)"
        )
        if with_values:
            out.append(figure(name, rate, "steps/s", "≥ 100,000 steps/s", rate >= 100_000, split))
            out.append(
                figure(
                    f"  memory growth, {kind}",
                    growth,
                    "MiB",
                    "< 50 MB",
                    growth < 50,
                    f"the largest of the {rounds} rounds",
                )
            )
        else:
            out.append(figure(name, rate, "steps/s", note=split))
            out.append(figure(f"  memory growth, {kind}", growth, "MiB"))
        for key, label in (
            ("caller_cpu_us", "loop thread CPU"),
            ("gc_us", "  GC pauses within it (wall)"),
            ("writer_cpu_us", "writer thread CPU"),
            ("writer_wait_us", "  writer waits within its transactions (GIL, disk)"),
        ):
            out.append(figure(f"  {kind}: {label} per step", measured[key], "µs"))
    return out
