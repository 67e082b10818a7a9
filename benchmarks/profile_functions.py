"""Where the real step's instructions go, beside the flat step's: per C function.

``count_instructions.py`` says how many instructions a step costs and
``profile_flat_step.py`` how many the same guarantees cost written flat;
this says what the difference is made of. Both loops run under valgrind's
callgrind at two step counts; each function's own (exclusive) instructions
at the high count minus the low, per step, are printed side by side. The
interpreter's own loop (``_PyEval_EvalFrameDefault``) stands for bytecodes
executed; ``_PyFrame_*`` and ``initialize_locals`` for Python calls made.
Needs Debian's ``valgrind`` package (``callgrind_annotate`` comes with it);
about 40 s.

    .venv/bin/python benchmarks/profile_functions.py [--top 30]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from count_instructions import COUNTS, HASH_SEED, LOOP

HERE = Path(__file__).resolve().parent
FLAT = """
import sys
import profile_flat_step as flat
flat.flat_steps(100)
flat.flat_steps(int(sys.argv[1]))
"""
_LINE = re.compile(r"\s*([\d,]+) \([^)]*\)\s+(?:\S+):(\S+)")


def _own_costs(label: str, loop: str, count: int, folder: Path) -> collections.Counter[str]:
    out = folder / f"{label}.{count}.out"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    command += [sys.executable, "-c", loop, str(count), "loop"]
    env = {**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    env["PYTHONHASHSEED"] = HASH_SEED
    subprocess.run(command, env=env, cwd=HERE.parent, capture_output=True, check=True)
    annotated = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: collections.Counter[str] = collections.Counter()
    for line in annotated.splitlines():
        found = _LINE.match(line)
        if found:
            costs[found.group(2).split("'")[0]] += int(found.group(1).replace(",", ""))
    return costs


def per_step(label: str, loop: str, folder: Path) -> dict[str, float]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        low, high = pool.map(lambda count: _own_costs(label, loop, count, folder), COUNTS)
    steps = COUNTS[1] - COUNTS[0]
    return {name: (high[name] - low[name]) / steps for name in set(low) | set(high)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind: apt-get install -y valgrind")
    with tempfile.TemporaryDirectory(prefix="zenmeta-functions-") as name:
        real, flat = per_step("real", LOOP, Path(name)), per_step("flat", FLAT, Path(name))
    print(f"real step {sum(real.values()):,.0f} instructions, flat {sum(flat.values()):,.0f}")
    print(f"{'function':44s} {'real':>8s} {'flat':>8s} {'real-flat':>10s}")
    for function in sorted(real, key=lambda name: -real[name])[: args.top]:
        mine, floor = real[function], flat.get(function, 0.0)
        print(f"{function[:44]:44s} {mine:8,.0f} {floor:8,.0f} {mine - floor:10,.0f}")


if __name__ == "__main__":
    main()
