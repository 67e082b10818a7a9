"""What the writer thread costs the step loop: the same batched SQLite steps
with the writer writing alongside, and with it held off until the loop ends.

The two per-step targets of ``make bench`` (caller-visible, caller + drained)
are measured with the writer alongside. Holding it off shows how much of the
caller's time is the writer's turn with the interpreter lock rather than the
step's own work. Rounds are interleaved with the OpenTelemetry span, as in
``bench.py``; the ratios are to that span.

    .venv/bin/python benchmarks/profile_caller.py [--ops 20000] [--rounds 7]

For where the caller's own time goes, sample the loop with py-spy (not a
dependency of the project): ``py-spy record -r 1000 -f raw --threads -o
prof.txt -- .venv/bin/python benchmarks/profile_caller.py --rounds 1 --ops
600000``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from _timing import batched_steps, otel_span
from bench import logging_step

import zenmeta
from zenmeta._store import close_stores, resolve_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    span = otel_span()
    found: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="zenmeta-profile-") as folder:
        zenmeta.configure(store=f"sqlite:///{folder}/profile.db", durability="batched")
        batched_steps(logging_step, 2_000)
        writer = resolve_store().opened()._writer  # type: ignore[attr-defined]
        usual = writer.nudge_at, writer.limit, writer._interval
        span(2_000)
        for _ in range(args.rounds):
            found.setdefault("OpenTelemetry span", []).append(span(args.ops) / args.ops)
            caller, drained = batched_steps(logging_step, args.ops)
            found.setdefault("caller-visible, writer alongside", []).append(caller)
            found.setdefault("caller + drained, writer alongside", []).append(drained)
            writer.nudge_at = writer.limit = 10**9  # neither woken nor waited for
            writer._interval = 3600.0
            caller, drained = batched_steps(logging_step, args.ops)
            writer.nudge_at, writer.limit, writer._interval = usual
            found.setdefault("caller-visible, writer held off", []).append(caller)
            found.setdefault("caller + drained, writer held off", []).append(drained)
        close_stores()  # before its folder goes
    reference = statistics.median(found["OpenTelemetry span"])
    print(f"median of {args.rounds} interleaved rounds of {args.ops:,} steps logging 3 values")
    for name, times in found.items():
        median = statistics.median(times)
        print(f"  {name:36s} {median * 1e6:7.2f} µs  {median / reference:.2f}x span")


if __name__ == "__main__":
    main()
