"""Where the writer's time goes: cProfile of one drain of queued records.

Records are queued with the writer thread stopped, then drained once in this
thread under cProfile, so the profile is the writer's work alone (the table's
"writer thread CPU per step" is the same work, measured while it competes).

    .venv/bin/python benchmarks/profile_write_path.py steps   # steps logging 3 values
    .venv/bin/python benchmarks/profile_write_path.py runs    # `with pipeline_run(): pass`
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

import zenmeta
from zenmeta._store import resolve_store


@zenmeta.track_step
def logging_step(x: int) -> int:
    zenmeta.log_metadata({"loss": 0.5, "rows": x, "split": "train"})
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kind", choices=["steps", "runs"])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zenmeta-profile-") as folder:
        zenmeta.configure(store=f"sqlite:///{folder}/profile.db")
        with zenmeta.pipeline_run("warm-up"):
            logging_step(0)
        zenmeta.flush()
        writer = resolve_store().opened()._writer  # type: ignore[attr-defined]
        writer.close()  # no thread: records stay queued until drained below
        writer.start = lambda: None
        writer.nudge_at = writer.limit = 10**9
        if args.kind == "steps":
            run = zenmeta.start_run("profile")
            for i in range(args.count):
                logging_step(i)
        else:
            for _ in range(args.count):
                with zenmeta.pipeline_run("profile"):
                    pass
        queued = len(writer.pending)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.runcall(writer._drain)
        elapsed = time.perf_counter() - started
        each = elapsed / args.count * 1e6
        print(f"{queued:,} records of {args.count:,} {args.kind}: {each:.2f} µs each, profiled")
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
        if args.kind == "steps":
            run.end()
        writer._drain()


if __name__ == "__main__":
    main()
