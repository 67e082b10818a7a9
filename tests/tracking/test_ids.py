"""Ids: valid UUIDs, unique, and safe from user seeding and fork."""

from __future__ import annotations

import os
import random
import uuid

from zenmeta._tracking.ids import new_id, new_run_id


def test_step_ids_are_version_7_and_run_ids_version_4() -> None:
    """Both kinds are RFC 4122 UUIDs that equal their parsed text."""
    for make, version in ((new_id, 7), (new_run_id, 4)):
        value = make()
        assert value.version == version
        assert value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value and hash(uuid.UUID(str(value))) == hash(value)


def test_run_id_prefixes_tell_runs_apart() -> None:
    """Short run-id prefixes are random, unlike a v7 id's clock prefix."""
    assert len({new_run_id().hex[:8] for _ in range(2000)}) == 2000


def test_seeding_random_does_not_repeat_ids() -> None:
    """A user's random.seed() leaves zenmeta's private generator alone."""
    random.seed(42)
    first = new_run_id()
    random.seed(42)
    assert new_run_id() != first


def test_forked_child_mints_different_ids() -> None:
    """After fork the child reseeds, so parent and child never collide."""
    read, write = os.pipe()
    new_run_id()  # make sure the generator exists before forking
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.write(write, new_run_id().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    child = uuid.UUID(bytes=os.read(read, 16))
    assert child != new_run_id()


def test_step_id_carries_its_clock_and_74_random_bits() -> None:
    """The first 48 bits are the given millisecond; every other bit but the
    version and variant varies from id to id."""
    now_ns = 1_796_000_000_123_456_789
    ids = [new_id(now_ns).int for _ in range(500)]
    assert {value >> 80 for value in ids} == {now_ns // 1_000_000}
    varied = 0
    for value in ids:
        varied |= value ^ ids[0]
    fixed = (0xF << 76) | (0b11 << 62)  # the version and variant bits
    assert varied == ((1 << 80) - 1) & ~fixed
    assert all(uuid.UUID(int=value).version == 7 for value in ids)
