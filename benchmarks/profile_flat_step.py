"""How much of the caller-visible step is zenmeta's structure: the same step
written as one flat function with the plain path's checks, beside the real one.

The flat step does what zenmeta's plain path does for a step logging 3
values, and nothing else: the run lookup in two context variables and the
fork check, a UUIDv7, the invocation name, the step in a context variable,
the late-writes lock twice, each value's exact type and range checked
under a key judged clean, the type map's JSON from a cache, orjson's text
with its two checks, and a flat row queued. No hooks, no nested or remote
steps, no strict mode, no fallbacks: where zenmeta would take another path,
this raises. It is the floor for zenmeta's own guarantees, where
``bench.py``'s floor is the floor for any tracker.

    .venv/bin/python benchmarks/profile_flat_step.py [--ops 20000] [--rounds 9]

Instructions a step, as ``count_instructions.py`` counts them (valgrind)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/profile_flat_step.py --count 30000
    (and 10000: the difference over 20,000 is one step's instructions)
"""

from __future__ import annotations

import argparse
import contextvars
import itertools
import os
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from _timing import batched_steps, otel_span
from bench import logging_step

import zenmeta
from zenmeta._store import close_stores
from zenmeta._tracking import ids

_step: contextvars.ContextVar[Any] = contextvars.ContextVar("flat_step", default=None)
_run: contextvars.ContextVar[Any] = contextvars.ContextVar("flat_run", default=None)
_pid = [os.getpid()]
_lock = threading.Lock()
_queue: deque[tuple[Any, ...]] = deque()
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_INT_LIMIT = 1 << 63
_clean_keys = {"loss": False, "rows": False, "split": False}


class _Run:
    __slots__ = ("counts", "hex", "pid", "types")


class _State:
    __slots__ = ("ended", "metadata", "name", "run")


def _flat_track(fn: Callable[..., Any]) -> Callable[..., Any]:
    step_name = fn.__name__
    uuid_class, set_int, set_safe, unknown, random_bits = ids._state or ids._start()
    new = object.__new__

    def call_step(*args: Any, **kwargs: Any) -> Any:
        parent = _step.get()
        run = parent.run if parent is not None else _run.get()
        if run is None or run.pid != _pid[0]:
            raise NotImplementedError("zenmeta: another path")
        start = time.time_ns()
        uuid = new(uuid_class)
        bits = (start // 1_000_000) << 80 | (random_bits(80) & ids._RANDOM_80)
        set_int(uuid, bits | ids._VERSION_7 | ids._VARIANT)
        set_safe(uuid, unknown)
        counter = run.counts.get(step_name)
        if counter is None:
            counter = run.counts.setdefault(step_name, itertools.count(1))
        number = next(counter)
        state = new(_State)
        state.run, state.metadata, state.ended = run, None, False
        state.name = step_name if number == 1 else f"{step_name}_{number}"
        token = _step.set(state)
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            _step.reset(token)
            raise
        end = time.time_ns()
        with _lock:
            state.ended = True
        _step.reset(token)
        step_hex = uuid.int.to_bytes(16, "big").hex()
        if state.metadata is None:
            _queue.append((step_hex, run.hex, state.name, step_name, "completed", start, end))
            return result
        values, kinds, _ = state.metadata
        seen = run.types.get("user")
        if seen is None or seen[0] != kinds:
            seen = run.types["user"] = (dict(kinds), orjson.dumps(kinds).decode())
        encoded = orjson.dumps(values, None, _OPTIONS).decode()
        if not encoded.isascii() or "null" in encoded:
            raise NotImplementedError("zenmeta: the codec's text")
        types_text = seen[1]
        _queue.append(
            (
                step_hex,
                run.hex,
                state.name,
                step_name,
                "completed",
                start,
                end,
                "user",
                encoded,
                types_text,
            )
        )
        return result

    return call_step


def _flat_log(mapping: dict[str, Any]) -> None:
    state = _step.get()
    with _lock:
        if state.ended or type(mapping) is not dict or state.metadata is not None:
            raise NotImplementedError("zenmeta: another path")
        if len(mapping) > 10_000:
            raise NotImplementedError("zenmeta: cut to the limit")
        values = mapping.copy()
        types: dict[str, str] = {}
        size = 0
        for key, value in values.items():
            if type(key) is not str or _clean_keys.get(key) is not False:
                raise NotImplementedError("zenmeta: a key to screen")
            kind = type(value)
            if kind is float:
                if value - value != 0.0:
                    raise NotImplementedError("zenmeta: tagged")
                types[key] = "float"
            elif kind is int:
                if not -_INT_LIMIT < value < _INT_LIMIT:
                    raise NotImplementedError("zenmeta: the codec")
                types[key] = "int"
            elif kind is str:
                length = len(value)
                if length >= 8:
                    raise NotImplementedError("zenmeta: text to screen")
                size += length
                types[key] = "str"
            elif kind is bool:
                types[key] = "bool"
            else:
                raise NotImplementedError("zenmeta: the codec")
        state.metadata = (values, types, size)


@_flat_track
def flat_step(x: int) -> int:
    _flat_log({"loss": 0.5, "rows": x, "split": "train"})
    return x


def flat_steps(ops: int) -> float:
    """Seconds per flat step, in a run of its own."""
    run = _Run()
    run.hex, run.pid, run.counts, run.types = ids.new_run_id().hex, _pid[0], {}, {}
    token = _run.set(run)
    start = time.perf_counter()
    for i in range(ops):
        flat_step(i)
    spent = (time.perf_counter() - start) / ops
    _run.reset(token)
    _queue.clear()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, help="only run this many flat steps (valgrind)")
    args = parser.parse_args()
    if args.count:
        flat_steps(100)
        flat_steps(args.count)
        return
    span = otel_span()
    span(2_000)
    with tempfile.TemporaryDirectory(prefix="zenmeta-flat-") as folder:
        zenmeta.configure(store=f"sqlite:///{folder}/flat.db", durability="batched")
        batched_steps(logging_step, 2_000)
        flat_steps(2_000)
        found: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            found.setdefault("OpenTelemetry span", []).append(span(args.ops) / args.ops)
            caller, _ = batched_steps(logging_step, args.ops)
            found.setdefault("zenmeta step, caller-visible", []).append(caller)
            found.setdefault("flat step, same checks", []).append(flat_steps(args.ops))
        close_stores()  # before its folder goes
        zenmeta.configure(store=None)
    reference = statistics.median(found["OpenTelemetry span"])
    print(f"{args.rounds} interleaved rounds of {args.ops:,} steps logging 3 values (wall)")
    for name, seconds in found.items():
        median = statistics.median(seconds)
        print(f"  {name:32s} {median * 1e6:6.2f} µs  {median / reference:.3f}x span")


if __name__ == "__main__":
    main()
