"""Fast UUIDs: time-ordered (version 7) for steps, random (version 4) for runs.

``uuid.uuid4()`` costs about 2 µs, most of a step's budget; building a UUID
from a private generator costs a fraction of that. Steps, of which a store
holds millions, get version 7 ids (48-bit millisecond clock first), which
keep database indexes append-only. Runs get version 4 ids: their first hex
digits are random, so a short id prefix tells runs apart, as people expect
from MLflow and git. The generator is private so a user's ``random.seed(42)``
never makes two processes mint the same ids, and it is reseeded after
``fork``. ``uuid`` and the C generator under ``random`` are imported on the
first id.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uuid import UUID

__all__ = ["new_id", "new_run_id"]

_VERSION_7 = 0x7 << 76
_VERSION_4 = 0x4 << 76
_VERSION_MASK = 0xF << 76
_VARIANT_MASK = 0b11 << 62
_VARIANT = 0b10 << 62
_RANDOM_80 = ((1 << 80) - 1) & ~(_VERSION_MASK | _VARIANT_MASK)  # 74 random bits
_VERSION_7_VARIANT = _VERSION_7 | _VARIANT  # one operation less per id, on 128-bit ints
_new = object.__new__
_state: list[Any] = []
"""UUID class, setters of its two slots, SafeUUID.unknown, random bits function."""


def _seed() -> int:
    return int.from_bytes(os.urandom(32), "big")


def _start() -> list[Any]:
    try:  # the C generator itself: ``random`` would add 1.4 ms to a process's first run
        from _random import Random
    except ImportError:  # pragma: no cover - an interpreter without it
        from random import Random  # type: ignore[assignment]
    from uuid import UUID, SafeUUID

    generator = Random(_seed())
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=lambda: generator.seed(_seed()))
    # A slot's own setter skips UUID.__setattr__ (which refuses) and costs
    # half of object.__setattr__; SafeUUID.unknown is an Enum lookup (~300 ns).
    slots = vars(UUID)
    _state[:] = [
        UUID,
        slots["int"].__set__,
        slots["is_safe"].__set__,
        SafeUUID.unknown,
        generator.getrandbits,
    ]
    return _state


def new_id(now_ns: int | None = None) -> UUID:
    """A new random UUIDv7, built without ``UUID.__init__``'s checks; its
    clock is ``now_ns`` when given (a step's start: one clock read, not two)."""
    uuid_class, set_int, set_safe, unknown, random_bits = _state or _start()
    if now_ns is None:
        now_ns = time.time_ns()
    uuid = _new(uuid_class)
    set_int(uuid, (now_ns // 1_000_000) << 80 | (random_bits(80) & _RANDOM_80) | _VERSION_7_VARIANT)
    set_safe(uuid, unknown)
    return uuid  # type: ignore[no-any-return]


def new_run_id() -> UUID:
    """A new random UUIDv4."""
    uuid_class, set_int, set_safe, unknown, random_bits = _state or _start()
    uuid = _new(uuid_class)
    set_int(uuid, (random_bits(128) & ~(_VERSION_MASK | _VARIANT_MASK)) | _VERSION_4 | _VARIANT)
    set_safe(uuid, unknown)
    return uuid  # type: ignore[no-any-return]
