"""Coercion and encoding: every value stored or visibly dropped, types restored."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import pathlib
import time
import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zenmeta import DType, Path, StorageSize, Uri
from zenmeta._codec import (
    MAX_KEYS_PER_RECORD,
    MAX_VALUE_BYTES,
    decode_documents,
    encode_metadata,
    encode_plain,
    join_documents,
    round_trip_sets,
)


def stored(value: object) -> tuple[Any, str]:
    """One value through the path every store takes: a metadata set, its two
    JSON documents, and back; with the type name it was stored under."""
    target, dropped, _ = encode_metadata({"k": value})
    assert not dropped, dropped
    document, types = join_documents(target)
    json.loads(document)  # strict JSON: no NaN tokens, valid text
    return decode_documents(document, types)["k"], target.types["k"]


def round_trip(value: object) -> Any:
    return stored(value)[0]


def drop_reason(value: object) -> str:
    """Why a value was dropped; fails if it was kept."""
    _, dropped, _ = encode_metadata({"k": value})
    assert [drop.key for drop in dropped] == ["k"], dropped
    return dropped[0].reason


def same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN, and checks container types."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_json_compatible_values_round_trip(value: Any) -> None:
    """Any JSON-shaped value, NaN and infinities included, comes back equal."""
    assert same(round_trip(value), value)


metadata_values = st.one_of(
    st.text(max_size=30).map(Uri),
    st.text(max_size=30).map(Path),
    st.sampled_from(["float32", "int64", "<U5"]).map(DType),
    st.integers(min_value=0, max_value=2**62).map(StorageSize),
    st.tuples(st.integers(), st.text(max_size=5)),
    st.frozensets(st.integers(), max_size=5).map(set),
    st.frozensets(st.text(max_size=5), max_size=5),
)


@given(metadata_values)
@settings(max_examples=200, deadline=None)
def test_every_metadata_type_round_trips_with_its_type(value: Any) -> None:
    """Uri, Path, DType, StorageSize, tuple, set, frozenset keep their type."""
    restored = round_trip(value)
    assert type(restored) is type(value)
    assert restored == value


_plain_values = (
    st.booleans()
    | st.integers()
    | st.integers(min_value=10**599, max_value=10**601)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.none()
    | st.lists(st.integers(), max_size=2)
    | st.text(max_size=3).map(Uri)
    | st.integers(min_value=0, max_value=99).map(StorageSize)
)


@given(
    st.dictionaries(st.text(max_size=300) | st.integers(), _plain_values, max_size=6),
    st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_the_plain_path_stores_exactly_what_encode_metadata_does(
    mapping: dict[Any, Any], judged: bool
) -> None:
    """Where ``encode_plain`` takes a mapping, ``encode_metadata`` would have
    dropped, noted and screened nothing, and stores the same values, types
    and size; otherwise it declines and ``encode_metadata`` takes it all."""
    # Rules.known_keys judges only keys that were stored: text of a valid length.
    clean = {key: False for key in mapping if type(key) is str and 0 < len(key) < 256 and judged}
    plain = encode_plain(mapping, clean, 8)
    suspects: list[str] = []
    full, dropped, notes = encode_metadata(mapping, clean_keys=clean, suspects=suspects)
    if plain is None:
        return
    assert not dropped and not notes and not suspects
    assert (plain.values, plain.types, plain.size) == (full.values, full.types, full.size)
    assert [type(value) for value in plain.values.values()] == [
        type(value) for value in full.values.values()
    ]


def test_the_plain_path_takes_a_step_loops_mapping_and_declines_the_rest() -> None:
    clean = {"loss": False, "rows": False, "split": False, "token": True}
    logged = {"loss": 0.5, "rows": 3, "split": "train"}
    taken = encode_plain(logged, clean, 8)
    assert taken is not None
    assert (taken.values, taken.types) == (logged, {"loss": "float", "rows": "int", "split": "str"})
    for declined in (
        {"loss": math.nan},
        {"rows": True, "new": 1},  # a key never judged
        {"token": 1},  # a key that needs attention
        {"split": "validation"},  # text long enough to hold a secret
        {"rows": StorageSize(3)},
        {"rows": np.int64(3)},
    ):
        assert encode_plain(declined, clean, 8) is None


class Hostile:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _recursive_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


anything = st.recursive(
    st.one_of(
        json_values,
        st.builds(Hostile),
        st.builds(object),
        st.binary(max_size=10),
        st.just(_recursive_list()),
        st.integers(min_value=65_000, max_value=70_000).map(lambda n: "\u00e9" * n),
        st.complex_numbers(allow_nan=True),
        st.dates(),
        st.datetimes(),
        st.decimals(),
        st.uuids(),
    ),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.integers() | st.text(max_size=3) | st.none(), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=300) | st.integers() | st.none(), anything, max_size=5))
@settings(max_examples=300, deadline=None)
def test_coercion_never_raises_and_accounts_for_every_key(mapping: dict[Any, Any]) -> None:
    """Arbitrary objects: each key is either stored (as valid JSON) or dropped with a reason."""
    encoded, dropped, _ = encode_metadata(mapping)
    assert len(encoded) + len(dropped) == len(mapping)
    assert all(item.reason for item in dropped)
    document, types = join_documents(encoded)
    decoded = decode_documents(document, types)
    assert decoded.keys() == encoded.values.keys()


@pytest.mark.parametrize(
    ("value", "expected", "type_name"),
    [
        (True, True, "bool"),
        (np.bool_(True), True, "bool"),
        (np.float64(0.5), 0.5, "float"),
        (np.int32(7), 7, "int"),
        (np.arange(3), [0, 1, 2], "list"),
        (np.dtype("float32"), "float32", "DType"),
        (dt.date(2026, 1, 2), "2026-01-02", "str"),
        (dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone.utc), "2026-01-02T03:04:00+00:00", "str"),
        (dt.timedelta(minutes=1), 60.0, "float"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001", "str"),
        (Decimal("0.1"), "0.1", "str"),
        (pathlib.PurePosixPath("/data/x.csv"), "/data/x.csv", "Path"),
        ({1: "a", None: "b"}, {"1": "a", "None": "b"}, "dict"),
        ({"$float": 1}, {"$float": 1}, "dict"),
        ((1, (2, 3)), (1, [2, 3]), "tuple"),
        (frozenset({3, 1}), frozenset({1, 3}), "frozenset"),
        (StorageSize(2**40), 2**40, "StorageSize"),
    ],
)
def test_documented_coercion_rules(value: object, expected: object, type_name: str) -> None:
    """Each documented rule gives the documented value and type name."""
    assert stored(value) == (expected, type_name)


def test_enums_store_their_value() -> None:
    """An Enum member is stored as its value."""

    class Color(enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert round_trip(Color.RED) == "red"
    assert round_trip(Level.HIGH) == 3 and type(round_trip(Level.HIGH)) is int


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_recursive_list(), "recursive container"),
        ("x" * (MAX_VALUE_BYTES + 1), "over the 65536-byte limit"),
        (list(range(20_000)), "over the 65536-byte limit"),
        (np.zeros(20_000), "exceeds 10000"),
        (Hostile(), "its str() raised RuntimeError"),
        ({1: "a", "1": "b"}, "both '1'"),
    ],
)
def test_unkeepable_values_are_dropped_with_a_reason(value: object, reason: str) -> None:
    """Values that cannot be kept become a Dropped carrying why."""
    assert reason in drop_reason(value)


def test_over_deep_nesting_is_dropped() -> None:
    """Nesting deeper than the limit is dropped, not a RecursionError."""
    deep: Any = 0
    for _ in range(100):
        deep = [deep]
    assert "deeper" in drop_reason(deep)


def test_bad_keys_are_dropped_and_good_ones_kept() -> None:
    """Non-string, empty and over-long keys are dropped; the rest survive."""
    encoded, dropped, _ = encode_metadata({1: "a", "": "b", "k" * 256: "c", "ok": 1})
    assert list(encoded.values) == ["ok"]
    assert sorted(d.reason for d in dropped) == [
        "keys must have 1 to 255 characters",
        "keys must have 1 to 255 characters",
        "metadata keys must be strings",
    ]


def test_str_fallback_carries_a_note() -> None:
    """An unknown object is kept as its str(), and says so."""

    class Thing:
        def __str__(self) -> str:
            return "thing!"

    assert stored(Thing()) == ("thing!", "str")
    _, _, notes = encode_metadata({"k": Thing()})
    assert len(notes) == 1 and "Thing" in notes[0][1]


def test_a_huge_list_is_refused_before_it_is_converted() -> None:
    """A list of 10**7 ints is dropped in well under a second, not after seconds."""
    values = list(range(10**7))
    started = time.perf_counter()
    _, dropped, _ = encode_metadata({"big": values, "kept": 1})
    assert time.perf_counter() - started < 0.2
    assert [d.key for d in dropped] == ["big"]


def test_an_int_json_cannot_write_is_dropped_by_the_codec() -> None:
    """An int of thousands of digits is the codec's drop, never the writer's failure."""
    encoded, dropped, _ = encode_metadata({"huge": 10**5000, "nested": [10**5000], "ok": 10**100})
    assert sorted(d.key for d in dropped) == ["huge", "nested"]
    assert encoded.values == {"ok": 10**100}


def test_sets_of_tuples_round_trip() -> None:
    """A set or frozenset of tuples comes back as one, not as a TypeError."""
    encoded, _, _ = encode_metadata({"s": {(1, "a"), (2, (3,))}, "f": frozenset({(0,)})})
    assert round_trip_sets({"u": encoded}) == {"u": {"s": {(1, "a"), (2, (3,))}, "f": {(0,)}}}


def test_too_many_keys_for_one_record_are_cut_visibly() -> None:
    """Past the per-record key limit, new keys are dropped with one `*` entry."""
    from zenmeta._tracking.metadata import collect_metadata

    sets: dict[str, Any] = {}
    dropped: list[Any] = []
    started = time.perf_counter()
    collect_metadata(sets, dropped, "user", {f"k{i}": i for i in range(MAX_KEYS_PER_RECORD + 500)})
    collect_metadata(sets, dropped, "other", {"late": 1, "later": "x"})
    assert time.perf_counter() - started < 1.0
    assert sum(len(s) for s in sets.values()) == MAX_KEYS_PER_RECORD
    assert [(d.source, d.key) for d in dropped] == [("user", "*"), ("other", "*")]
    assert "500" in dropped[0].reason and "limit" in dropped[0].reason


def test_too_many_bytes_for_one_record_are_cut_visibly() -> None:
    """Past the per-record byte limit new keys are dropped; re-logging one key is not."""
    from zenmeta._codec import MAX_BYTES_PER_RECORD
    from zenmeta._tracking.metadata import collect_metadata

    text = "x" * 5_000
    sets: dict[str, Any] = {}
    dropped: list[Any] = []
    for _ in range(2 * MAX_BYTES_PER_RECORD // len(text)):
        collect_metadata(sets, dropped, "user", {"same": text})
    assert dropped == [] and sets["user"].values == {"same": text}
    collect_metadata(sets, dropped, "user", {f"k{i}": text for i in range(1_000)})
    assert 0 < len(sets["user"]) < 1_000
    assert sets["user"].measure() <= MAX_BYTES_PER_RECORD
    assert [(d.source, d.key) for d in dropped] == [("user", "*")] and "bytes" in dropped[0].reason


def test_a_large_array_is_refused_by_its_size_before_tolist() -> None:
    """An array is measured by `.size`/`.nbytes`, never converted first."""
    wide = np.full(100, "x" * 10_000)  # 100 items, 4 MB
    _, dropped, _ = encode_metadata({"wide": wide})
    assert [d.key for d in dropped] == ["wide"] and "bytes" in dropped[0].reason
