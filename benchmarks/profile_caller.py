"""What the writer thread costs the step loop: the same batched SQLite steps
with the writer writing alongside, and with it held off until the loop ends.

The two per-step targets of ``make bench`` (caller-visible, caller + drained)
are measured with the writer alongside. Holding it off shows how much of the
caller's time is the writer's turn with the interpreter lock rather than the
step's own work. Rounds are interleaved with the OpenTelemetry span, as in
``bench.py``; the ratios are to that span. With ``--levers`` the rounds
instead time the loop by this thread's CPU with the writer held off, as
shipped and with each of issue 16's last two caller levers undone, then
both: the codec's own encoder for the step rows' JSON in place of orjson
(``rows.encoded_sets``), and every mapping through ``encode_metadata``
rather than the plain path (``codec.encode_plain``).

    .venv/bin/python benchmarks/profile_caller.py [--ops 20000] [--rounds 7] [--levers]

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
from zenmeta._tracking import metadata


def _codec_text(document: Any, _default: Any, _option: int) -> bytes:
    return b"null"  # what encoded_sets answers with the codec's text (no orjson)


def _no_plain_path(*_fields: Any) -> None:
    return None  # encode_plain declines: encode_metadata takes every mapping


LEVERS: dict[str, tuple[Any, str, Any]] = {
    "codec's encoder": (rows, "_fast_dumps", _codec_text),
    "no plain path": (metadata, "encode_plain", _no_plain_path),
}
"""Each lever undone: the module, the name patched, and what stands in."""


def _variants() -> dict[str, list[tuple[Any, str, Any]]]:
    """The loops ``--levers`` compares, by name: as shipped, each lever
    undone, and both."""
    found: dict[str, list[tuple[Any, str, Any]]] = {"as shipped": []}
    for name, patch in LEVERS.items():
        found[name] = [patch]
    found["both undone"] = list(LEVERS.values())
    return found


def _undone(patches: list[tuple[Any, str, Any]]) -> Callable[[], None]:
    """Apply ``patches``; the function that puts the shipped code back."""
    shipped = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, stand_in in patches:
        setattr(module, name, stand_in)

    def restore() -> None:
        for module, name, original in shipped:
            setattr(module, name, original)

    return restore


def _hold_off(writer: Any) -> None:
    writer.nudge_at = writer.limit = 10**9  # neither woken nor waited for
    writer._interval = 3600.0
    writer._wake.set()  # its current wait ends now: no interval write in the loop
    time.sleep(0.05)


def _caller_cpu(ops: int) -> float:
    """The step loop's own CPU per step (this thread's), the writes drained after."""
    with zenmeta.pipeline_run("bench"):
        start = time.thread_time()
        for i in range(ops):
            logging_step(i)
        spent = time.thread_time() - start
    zenmeta.flush()
    return spent / ops


def _span_cpu(span: Callable[[int], float], ops: int) -> float:
    start = time.thread_time()
    span(ops)
    return (time.thread_time() - start) / ops


def _writer_rounds(args: argparse.Namespace, writer: Any) -> dict[str, list[float]]:
    """Wall per step: the writer alongside, as ``make bench`` measures, and held off."""
    span = otel_span()
    span(2_000)
    usual = writer.nudge_at, writer.limit, writer._interval
    found: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        found.setdefault("OpenTelemetry span", []).append(span(args.ops) / args.ops)
        caller, drained = batched_steps(logging_step, args.ops)
        found.setdefault("caller-visible, writer alongside", []).append(caller)
        found.setdefault("caller + drained, writer alongside", []).append(drained)
        _hold_off(writer)
        caller, drained = batched_steps(logging_step, args.ops)
        writer.nudge_at, writer.limit, writer._interval = usual
        found.setdefault("caller-visible, writer held off", []).append(caller)
        found.setdefault("caller + drained, writer held off", []).append(drained)
    return found


def _lever_rounds(args: argparse.Namespace, writer: Any) -> dict[str, list[float]]:
    """This thread's CPU per step, the writer held off: the caller's own cost,
    which the levers change, without the writer's turns or the disk. The
    order of the loops alternates (ABCD, DCBA): in wall time a loop's place
    in the round moved it more than a lever did."""
    span = otel_span()
    span(2_000)
    _hold_off(writer)
    variants = list(_variants().items())
    found: dict[str, list[float]] = {"OpenTelemetry span": []}
    found.update({name: [] for name, _ in variants})
    for number in range(args.rounds):
        found["OpenTelemetry span"].append(_span_cpu(span, args.ops))
        for name, patches in variants if number % 2 == 0 else variants[::-1]:
            restore = _undone(patches)
            try:
                found[name].append(_caller_cpu(args.ops))
            finally:
                restore()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--levers", action="store_true", help="the levers, by the caller's CPU")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zenmeta-profile-") as folder:
        zenmeta.configure(store=f"sqlite:///{folder}/profile.db", durability="batched")
        batched_steps(logging_step, 2_000)
        writer = resolve_store().opened()._writer  # type: ignore[attr-defined]
        found = (_lever_rounds if args.levers else _writer_rounds)(args, writer)
        close_stores()  # before its folder goes
    reference = statistics.median(found["OpenTelemetry span"])
    clock = "thread CPU, writer held off" if args.levers else "wall"
    print(f"{args.rounds} interleaved rounds of {args.ops:,} steps logging 3 values ({clock})")
    for name, times in found.items():
        median = statistics.median(times)
        print(
            f"  {name:36s} median {median * 1e6:6.2f} µs  {median / reference:.2f}x span"
            f"  (min {min(times) * 1e6:6.2f})"
        )


if __name__ == "__main__":
    main()
