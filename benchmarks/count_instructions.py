"""Instructions a step costs, counted by valgrind: a comparison noise cannot move.

On these shared 2-core machines a lever of 2-5% drowns in the caller's
wall and CPU times (one loop's median moved by 10-20% between runs). The
count of instructions executed does not: each tree's loop runs under
valgrind's callgrind at two step counts, and the difference, per step, is
what a step costs, start-up excluded (repeat runs agree within 0.5%, with
the string hash seed fixed).

The loop is ``profile_caller.py``'s: steps logging 3 values into batched
SQLite, with the writer held off; ``--drain`` adds the writer's work of
the same steps, SQLite's own included (the driver releases the interpreter
lock while SQLite runs, so compare the two modes to see what the writer
adds). Trees are checkouts of this project (``git worktree add``); each
is measured with its own ``zenmeta`` first on the path. Needs Debian's
``valgrind`` package; one tree takes about 90 s (two run in parallel).

    .venv/bin/python benchmarks/count_instructions.py /tmp/before . [--drain]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOOP = """
import sys, tempfile
import zenmeta
from zenmeta._store import resolve_store

@zenmeta.track_step
def logging_step(x):
    zenmeta.log_metadata({"loss": 0.5, "rows": x, "split": "train"})
    return x

count, drain = int(sys.argv[1]), sys.argv[2] == "drain"
with tempfile.TemporaryDirectory(prefix="zenmeta-count-") as folder:
    zenmeta.configure(store=f"sqlite:///{folder}/count.db")
    with zenmeta.pipeline_run("warm-up"):
        logging_step(0)
    zenmeta.flush()
    writer = resolve_store().opened()._writer
    writer.close()
    writer.start = lambda: None
    writer.nudge_at = writer.limit = 10**9
    with zenmeta.pipeline_run("counted"):
        for i in range(count):
            logging_step(i)
    if drain:
        writer._drain()
    writer.pending.clear()
"""

COUNTS = (10_000, 30_000)
HASH_SEED = "0"
"""Fixed: with a random seed each run, a dict's probes for the same keys
differ, and one tree measured twice gave 55,889 and 57,411 instructions a
step; with this seed, 56,903 and 56,821."""


def _collected(tree: Path, count: int, mode: str) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-c", LOOP, str(count), mode]
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": HASH_SEED}
    # In the tree: ``-c`` puts the working directory first on the path, and
    # run from a checkout it measured that checkout's zenmeta for every tree.
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"valgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_step(tree: Path, mode: str) -> float:
    """Instructions per step in ``tree``: the difference of two loop lengths."""
    low, high = (_collected(tree, count, mode) for count in COUNTS)
    return (high - low) / (COUNTS[1] - COUNTS[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("trees", nargs="+", type=Path, help="checkouts to compare")
    parser.add_argument("--drain", action="store_true", help="the writer's work too")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind: apt-get install -y valgrind")
    mode = "drain" if args.drain else "loop"
    trees = [tree.resolve() for tree in args.trees]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda tree: per_step(tree, mode), trees))
    first = counts[0]
    for tree, count in zip(trees, counts, strict=True):
        print(f"{count:10,.0f} instructions a step ({mode})  {count / first:.3f}x  {tree}")


if __name__ == "__main__":
    main()
