"""What the writer thread costs the step loop: the same batched SQLite steps
with the writer writing alongside, and with it held off until the loop ends.

The two per-step targets of ``make bench`` (caller-visible, caller + drained)
are measured with the writer alongside. Holding it off shows how much of the
caller's time is the writer's turn with the interpreter lock rather than the
step's own work. Rounds are interleaved with the OpenTelemetry span, as in
``bench.py``; the ratios are to that span. With ``--codec`` each round also
runs the loop with the codec's own encoder for the step rows' JSON in place
of orjson (``rows.encoded_sets``): the encoder lever, in the very loop the
targets are measured on.

    .venv/bin/python benchmarks/profile_caller.py [--ops 20000] [--rounds 7] [--codec]

For where the caller's own time goes, sample the loop with py-spy (not a
dependency of the project): ``py-spy record -r 1000 -f raw --threads -o
prof.txt -- .venv/bin/python benchmarks/profile_caller.py --rounds 1 --ops
600000``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _timing import batched_steps, otel_span
from bench import logging_step

import zenmeta
from zenmeta._store import close_stores, resolve_store
from zenmeta._store.sql import rows

pulled = rows._fast_dumps


def _refused(document: Any, _default: Any, _option: int) -> bytes:
    return b"null"  # what encoded_sets answers with the codec's text (no orjson)


def _encoders(with_codec: bool) -> dict[str, Callable[[Any, Any, int], bytes]]:
    """The step rows' JSON, by the loop each is measured in."""
    found = {"writer alongside": pulled}
    if with_codec:
        found["writer alongside, codec's encoder"] = _refused
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--codec", action="store_true", help="also the loop with the codec's")
    args = parser.parse_args()
    encoders = _encoders(args.codec)
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
            for name, encode in encoders.items():
                rows._fast_dumps = encode
                caller, drained = batched_steps(logging_step, args.ops)
                rows._fast_dumps = pulled
                found.setdefault(f"caller-visible, {name}", []).append(caller)
                found.setdefault(f"caller + drained, {name}", []).append(drained)
            writer.nudge_at = writer.limit = 10**9  # neither woken nor waited for
            writer._interval = 3600.0
            writer._wake.set()  # its current wait ends now: no interval write in the loop
            time.sleep(0.05)
            caller, drained = batched_steps(logging_step, args.ops)
            writer.nudge_at, writer.limit, writer._interval = usual
            found.setdefault("caller-visible, writer held off", []).append(caller)
            found.setdefault("caller + drained, writer held off", []).append(drained)
        close_stores()  # before its folder goes
    reference = statistics.median(found["OpenTelemetry span"])
    print(f"median of {args.rounds} interleaved rounds of {args.ops:,} steps logging 3 values")
    for name, times in found.items():
        median = statistics.median(times)
        print(f"  {name:44s} {median * 1e6:7.2f} µs  {median / reference:.2f}x span")


if __name__ == "__main__":
    main()
