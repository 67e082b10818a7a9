"""Where a carried Dask task's cost goes: the same map with parts switched off.

One LocalCluster (two worker processes of one thread each, loopback only,
``zenmeta.integrations.dask.install``-ed) maps 1,000 tiny tasks per kind,
three rounds; each line is the middle round's wall time per task and the
CPU per task of the client process (client and scheduler) and of the
workers. The kinds switch parts off in the workers, to see what each costs:

- ``plain``: the bare function; ``attach only``: ``carried`` of it (no step);
- ``carried step``: the real thing (started record, step, flush);
- ``no started record``, ``no flush``, ``no store writes``: that part skipped.

This is how the started record's per-task wake of the writer was found to
cost a worker more CPU than the task's own write.

    .venv/bin/python benchmarks/profile_dask_worker.py
"""

from __future__ import annotations

import resource
import tempfile
import time
from typing import Any

import _dask_tasks
from bench_dask import local_cluster

import zenmeta
from zenmeta.testing import reset

KINDS = ("plain", "attach only", "carried step", "no started record", "no flush", "no store writes")


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def _switch_off(kind: str) -> None:
    """In a worker: skip the parts ``kind`` names (and restore the others)."""
    from zenmeta._tracking.attach import AttachedRun

    originals = AttachedRun.__dict__.get("_originals")
    if originals is None:
        names = ("_save_step_started", "flush", "_save_step")
        originals = {name: getattr(AttachedRun, name) for name in names}
        AttachedRun._originals = originals  # type: ignore[attr-defined]
    for name, method in originals.items():
        setattr(AttachedRun, name, method)

    def skip(self: Any, *args: Any) -> None:
        return None

    if kind in ("no started record", "no store writes"):
        AttachedRun._save_step_started = skip  # type: ignore[method-assign]
    if kind in ("no flush", "no store writes"):
        AttachedRun.flush = skip  # type: ignore[method-assign]
    if kind == "no store writes":
        AttachedRun._save_step = skip  # type: ignore[method-assign]


def _per_task(client: Any, fn: Any, tasks: int) -> tuple[float, float, float]:
    client.gather(client.map(fn, range(tasks // 10), pure=False))
    workers_before = sum(client.run(_cpu).values())
    client_before, started = _cpu(), time.perf_counter()
    client.gather(client.map(fn, range(tasks), pure=False))
    wall, client_cpu = time.perf_counter() - started, _cpu() - client_before
    workers = sum(client.run(_cpu).values()) - workers_before
    return wall / tasks * 1e6, client_cpu / tasks * 1e6, workers / tasks * 1e6


def main(tasks: int = 1_000, rounds: int = 3) -> None:
    import distributed

    from zenmeta.integrations import dask as zenmeta_dask

    with tempfile.TemporaryDirectory(prefix="zenmeta-profile-dask-") as folder:
        zenmeta.configure(store=f"sqlite:///{folder}/zenmeta.db")
        with local_cluster() as cluster, distributed.Client(cluster) as client:
            zenmeta_dask.install(client)
            with zenmeta.pipeline_run("profile_dask"):
                step = zenmeta.carried(_dask_tasks.tiny_step)
                functions = {
                    "plain": _dask_tasks.tiny,
                    "attach only": zenmeta.carried(_dask_tasks.tiny),
                }
                found: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in KINDS}
                for _ in range(rounds):
                    for kind in KINDS:
                        client.run(_switch_off, kind)
                        found[kind].append(_per_task(client, functions.get(kind, step), tasks))
        reset()
    print(f"{'per task, µs':<20} {'wall':>8} {'client+scheduler CPU':>22} {'workers CPU':>12}")
    for kind, measured in found.items():
        wall, client_cpu, workers = sorted(measured)[len(measured) // 2]
        print(f"{kind:<20} {wall:8.0f} {client_cpu:22.0f} {workers:12.0f}")


if __name__ == "__main__":
    main()
