"""Turn any value into storable JSON text plus a type name, and back.

Coercion runs in the user's step, so the common scalars take a fast path
that never builds intermediate objects; containers are converted once and
measured against the size limit. Nothing here raises for a bad value:
a value that cannot be kept becomes a ``Dropped`` reason that the caller
records and shows.
"""

from __future__ import annotations

import enum
import json
import math
import sys
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, NamedTuple

from ._errors import describe_error
from ._values import DType, MetadataType, Path, StorageSize, Uri

__all__ = [
    "MAX_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_VALUE_BYTES",
    "MAX_ARRAY_ITEMS",
    "MAX_INT_DIGITS",
    "MAX_KEYS_PER_RECORD",
    "MAX_BYTES_PER_RECORD",
    "Encoded",
    "Dropped",
    "MetadataSet",
    "restore_value",
    "encode_metadata",
    "encode_plain",
    "join_documents",
    "encoded_size",
    "decode_documents",
    "round_trip_sets",
    "UNDECODABLE",
]

MAX_DEPTH = 32
MAX_KEY_LENGTH = 255
MAX_VALUE_BYTES = 64 * 1024
MAX_ARRAY_ITEMS = 10_000
MAX_INT_DIGITS = 600
"""Longer ints are dropped: JSON writes ints in decimal, and Python refuses to
turn an int of more than 4,300 digits (640 at the strictest setting) into
text; so the codec, not the writer, is where such an int stops."""
MAX_KEYS_PER_RECORD = 10_000
"""Keys one step or run keeps, all sources together; later new keys are
dropped, with one ``*`` entry saying how many."""
MAX_BYTES_PER_RECORD = 4 * 1024 * 1024
"""About how much text one step or run keeps, all sources together."""

_INT_LIMIT = 10**MAX_INT_DIGITS
_NEGATIVE_INT_LIMIT = -_INT_LIMIT  # not negated again for every int

# Non-finite floats have no JSON token; they travel as {"$float": "NaN"}.
# A user dict whose only key starts with "$" is wrapped in {"$dict": ...}
# so that it can never be mistaken for such a tag.
_FLOAT_TAG = "$float"
_DICT_TAG = "$dict"
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

_BY_TYPE_NAME: dict[str, Callable[[Any], Any]] = {
    "Uri": Uri,
    "Path": Path,
    "DType": DType,
    "StorageSize": StorageSize,
    "tuple": tuple,
    "set": lambda items: set(map(_hashable, items)),
    "frozenset": lambda items: frozenset(map(_hashable, items)),
}


def _hashable(item: Any) -> Any:
    """A set's member back from JSON: its tuples (stored as lists) as tuples."""
    if isinstance(item, list):
        return tuple(map(_hashable, item))
    return item


class Encoded(NamedTuple):
    """A value made storable: ``value`` is JSON-ready (only dicts, lists,
    str, int, finite float, bool, None), ``type_name`` restores its type,
    ``note`` says how it was converted when that lost something.

    The JSON text itself is produced by the store's writer, off the step's
    thread, one document per metadata set (``join_documents``).
    """

    value: Any
    type_name: str
    note: str | None = None


class Dropped(NamedTuple):
    """A key that could not be kept, and why; it is stored with the record."""

    key: str
    reason: str


_tuple_new = tuple.__new__


def _encoded(value: Any, type_name: str, note: str | None = None) -> Encoded:
    """``Encoded(...)`` without the named tuple's Python-level ``__new__``."""
    return _tuple_new(Encoded, (value, type_name, note))


class _Drop(Exception):  # noqa: N818 - a signal, not an error
    """Internal: abandons one value with a reason."""


def _float_json(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {_FLOAT_TAG: "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")}


def _dumps(value: Any) -> str:
    # ASCII-only JSON: lone surrogates and any text survive every database.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


# Strings up to this length cannot exceed the size limit even when every
# character is escaped (a character outside the BMP becomes 12 ASCII bytes).
_SAFE_STR_LENGTH = MAX_VALUE_BYTES // 12 - 1


def _encode(value: object, sizes: list[int] | None = None) -> Encoded:
    kind = type(value)
    # Fast path: exact built-in scalars need no conversion.
    if kind is str:
        return _encode_str(value, "str")  # type: ignore[arg-type]
    if kind is int:
        return _encoded(_checked_int(value), "int")  # type: ignore[arg-type]
    if kind is float:
        return _encoded(_float_json(value), "float")  # type: ignore[arg-type]
    if kind is bool:
        return _encoded(value, "bool")
    if value is None:
        return _encoded(None, "None")
    name = _special_name(value)
    if name is not None:
        if name == "StorageSize":
            return _encoded(_checked_int(int(value)), name)  # type: ignore[call-overload]
        return _encode_str(str.__str__(value), name)
    notes: list[str] = []
    converted = _to_json(value, 0, set(), notes)
    if kind is tuple or kind is set or kind is frozenset:
        type_name = kind.__name__
    else:
        type_name = _json_type_name(converted)
    if isinstance(converted, (dict, list)) or (
        isinstance(converted, str) and len(converted) > _SAFE_STR_LENGTH
    ):
        size = len(_dumps(converted))
        if size > MAX_VALUE_BYTES:
            raise _Drop(f"encodes to {size} bytes, over the {MAX_VALUE_BYTES}-byte limit")
        if sizes is not None:
            sizes.append(size)
    return _encoded(converted, type_name, "; ".join(notes) or None)


def _checked_int(value: int) -> int:
    if _NEGATIVE_INT_LIMIT < value < _INT_LIMIT:
        return value
    raise _Drop(f"an int of more than {MAX_INT_DIGITS} digits; log it as text or a float")


def _encode_str(text: str, type_name: str) -> Encoded:
    if len(text) > _SAFE_STR_LENGTH:
        size = len(_quote(text))
        if size > MAX_VALUE_BYTES:
            raise _Drop(f"text encodes to {size} bytes, over the {MAX_VALUE_BYTES}-byte limit")
    return _encoded(str.__str__(text), type_name)


def _special_name(value: object) -> str | None:
    if isinstance(value, str):
        if isinstance(value, Uri):
            return "Uri"
        if isinstance(value, Path):
            return "Path"
        if isinstance(value, DType):
            return "DType"
    elif isinstance(value, StorageSize):
        return "StorageSize"
    return None


def _json_type_name(converted: object) -> str:
    special = _special_name(converted)
    if special is not None:
        return special
    if isinstance(converted, bool):
        return "bool"
    if isinstance(converted, str):
        return "str"
    if isinstance(converted, int):
        return "int"
    if isinstance(converted, float):
        return "float"
    if isinstance(converted, dict):
        return "float" if set(converted) == {_FLOAT_TAG} else "dict"
    if isinstance(converted, list):
        return "list"
    return "None"


def _to_json(value: object, depth: int, active: set[int], notes: list[str]) -> Any:
    """Convert to JSON-ready Python objects, enforcing depth and cycle rules."""
    if depth > MAX_DEPTH:
        raise _Drop(f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value if _special_name(value) else str.__str__(value)
    if isinstance(value, int):
        return _checked_int(int(value))
    if isinstance(value, float):
        return _float_json(float(value))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            if value.size > MAX_ARRAY_ITEMS or value.nbytes > 8 * MAX_VALUE_BYTES:
                raise _Drop(
                    f"array of {value.size} items ({value.nbytes} bytes) exceeds "
                    f"{MAX_ARRAY_ITEMS} items; log a summary instead"
                )
            return _to_json(value.tolist(), depth, active, notes)
        if isinstance(value, numpy.generic):
            return _to_json(value.item(), depth, active, notes)
        if isinstance(value, numpy.dtype):
            return DType(value)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        # Checked before converting: n items take at least 2n+1 bytes of JSON
        # ("[1,2]"), n entries 5n+1 ('{"":0}'), so a list of 10**7 ints is
        # refused at once instead of after seconds of conversion.
        least = (5 if isinstance(value, Mapping) else 2) * len(value) + 1
        if least > MAX_VALUE_BYTES:
            raise _Drop(
                f"{len(value)} items encode to over the {MAX_VALUE_BYTES}-byte limit; "
                "log a summary instead"
            )
        marker = id(value)
        if marker in active:
            raise _Drop("recursive container")
        active.add(marker)
        try:
            if isinstance(value, Mapping):
                return _mapping_to_json(value, depth, active, notes)
            items = value
            if isinstance(value, (set, frozenset)):
                items = _stable_order(value)
            return [_to_json(item, depth + 1, active, notes) for item in items]
        finally:
            active.discard(marker)
    if isinstance(value, enum.Enum):
        return _to_json(value.value, depth, active, notes)
    # A value can only be an instance of a class whose module is loaded, so
    # these checks cost no import (the same trick as for numpy).
    dates = sys.modules.get("datetime")
    if dates is not None:
        if isinstance(value, (dates.datetime, dates.date, dates.time)):
            return value.isoformat()
        if isinstance(value, dates.timedelta):
            return value.total_seconds()
    for module, kind in (("uuid", "UUID"), ("decimal", "Decimal")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(value, getattr(loaded, kind)):
            return str(value)
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and isinstance(value, pathlib.PurePath):
        return Path(value)
    return _fallback_text(value, notes)


def _mapping_to_json(
    value: Mapping[Any, Any], depth: int, active: set[int], notes: list[str]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in value.items():
        text_key = key if isinstance(key, str) else _fallback_key(key)
        if text_key in result:
            raise _Drop(f"two keys are both {text_key!r} once converted to text")
        result[str.__str__(text_key)] = _to_json(item, depth + 1, active, notes)
    if len(result) == 1 and next(iter(result)).startswith("$"):
        return {_DICT_TAG: result}
    return result


def _fallback_key(key: object) -> str:
    try:
        return str(key)
    except Exception as error:
        raise _Drop(f"a key's str() raised {type(error).__name__}") from None


def _fallback_text(value: object, notes: list[str]) -> str:
    try:
        text = str(value)
    except Exception as error:
        raise _Drop(
            f"{type(value).__name__} is not a metadata type and its str() raised "
            f"{type(error).__name__}"
        ) from None
    if not isinstance(text, str):
        raise _Drop(f"{type(value).__name__}.__str__ returned a non-string")
    notes.append(f"{type(value).__qualname__} stored as its str()")
    return str.__str__(text)


def _stable_order(items: set[Any] | frozenset[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


class MetadataSet:
    """The metadata one source gave one run or step: a JSON-ready value per
    key and, beside it, the type name that restores each value.

    Stored as two JSON documents, so the caller only fills two dicts and the
    writer serializes the whole set in one ``json.dumps`` call.
    """

    __slots__ = ("size", "types", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.types: dict[str, str] = {}
        self.size = 0
        """About how many bytes of text the values take: counted as they are
        added (numbers not at all: the key limit bounds them), never less
        than the truth, re-measured exactly by ``measure()`` when it matters."""

    def copy(self) -> MetadataSet:
        twin = MetadataSet()
        twin.values = dict(self.values)
        twin.types = dict(self.types)
        twin.size = self.size
        return twin

    def measure(self) -> int:
        """The exact size of the values' JSON, kept as the new ``size``."""
        self.size = len(_dumps(self.values))
        return self.size

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"MetadataSet({self.values!r}, types={self.types!r})"


def encode_metadata(
    mapping: Mapping[Any, Any],
    into: MetadataSet | None = None,
    *,
    clean_keys: Mapping[str, bool] | None = None,
    suspects: list[str] | None = None,
) -> tuple[MetadataSet, list[Dropped], list[tuple[str, str]]]:
    """Coerce a whole mapping key by key, so one bad value loses nothing else.

    Returns the set (``into`` if given: later keys replace earlier ones), the
    dropped keys with reasons, and (key, note) for lossy conversions.

    For redaction, which must cost next to nothing on an ordinary step: with
    ``clean_keys`` (key -> is it secret, as far as known) and ``suspects``,
    every stored key that might hold a secret is appended to ``suspects``;
    a number or a word shorter than 8 characters under a key known to be
    clean is not, so the common step needs no second pass at all.
    """
    target = MetadataSet() if into is None else into
    values, types = target.values, target.types
    dropped: list[Dropped] = []
    notes: list[tuple[str, str]] = []
    sizes: list[int] = []  # the slow path's measured sizes, as it measures them
    size = 0
    screening = suspects is not None and clean_keys is not None
    known: Mapping[str, bool] = {} if clean_keys is None else clean_keys
    suspect = (suspects if suspects is not None else []).append
    for key, value in mapping.items():
        kind = type(value)
        if type(key) is str and 0 < len(key) <= MAX_KEY_LENGTH:
            # Fast path for the common scalars: two dict stores, nothing else.
            if kind is float and value - value == 0.0:  # finite
                values[key] = value
                types[key] = "float"
                if screening and known.get(key) is not False:
                    suspect(key)
                continue
            if kind is bool or (kind is int and _NEGATIVE_INT_LIMIT < value < _INT_LIMIT):
                values[key] = value
                types[key] = kind.__name__
                if screening and known.get(key) is not False:
                    suspect(key)
                continue
            if kind is StorageSize:  # what resource components report, at every step
                values[key] = int(value)
                types[key] = "StorageSize"
                if screening and known.get(key) is not False:
                    suspect(key)
                continue
            if kind is str and len(value) <= _SAFE_STR_LENGTH:
                values[key] = value
                types[key] = "str"
                size += len(value)
                if screening and (len(value) >= 8 or known.get(key) is not False):
                    suspect(key)
                continue
        elif type(key) is not str:
            if not isinstance(key, str):
                dropped.append(Dropped(_safe_repr(key), "metadata keys must be strings"))
                continue
            key = str.__str__(key)
        if not key or len(key) > MAX_KEY_LENGTH:
            dropped.append(
                Dropped(key[:MAX_KEY_LENGTH], f"keys must have 1 to {MAX_KEY_LENGTH} characters")
            )
            continue
        measured = len(sizes)
        try:
            encoded = _encode(value, sizes)
        except _Drop as drop:
            dropped.append(Dropped(key, str(drop)))
            continue
        except Exception as error:  # a hostile __eq__/__len__/__iter__ and the like
            kind_name, message = describe_error(error)
            dropped.append(Dropped(key, f"encoding raised {kind_name}: {message}"))
            continue
        stored = values[key] = encoded.value
        types[key] = encoded.type_name
        if len(sizes) > measured:
            size += sizes[-1]
        elif type(encoded.value) is str:
            size += len(encoded.value)
        if screening and (
            known.get(key) is not False
            or not (type(stored) is int or type(stored) is float or stored is None)
        ):
            suspect(key)  # a StorageSize under a known key is a plain number by now
        if encoded.note is not None:
            notes.append((key, encoded.note))
    target.size += size
    return target, dropped, notes


_new_set = object.__new__


def encode_plain(
    mapping: dict[Any, Any], clean_keys: Mapping[str, bool], short_text: int
) -> MetadataSet | None:
    """The set of what a step loop logs at every step, or ``None`` for
    anything else (``encode_metadata`` then takes the whole mapping): finite
    floats, ints, bools and text shorter than ``short_text``, all of their
    exact built-in types, under keys already judged clean (``clean_keys``
    maps a key to whether it needs attention). Such a mapping has nothing to
    convert, drop, note or screen for secrets: its values are stored as they
    are, with the type names ``encode_metadata`` gives them, in one pass
    with no lists beside it: ``collect_metadata`` of three values then takes
    1.5 µs, against 2.5 µs through ``encode_metadata``. ``mapping`` itself
    becomes the set's values: pass a copy nobody else holds, as
    ``collect_metadata`` does."""
    if len(mapping) > MAX_KEYS_PER_RECORD:
        return None
    types: dict[str, str] = {}
    size = 0
    for key, value in mapping.items():
        if type(key) is not str or clean_keys.get(key) is not False:
            return None  # a key judged clean is one encode_metadata stored: its length is valid
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # not finite: tagged by encode_metadata
                return None
            types[key] = "float"  # a constant: a built-in type's __name__ is a new string each time
        elif kind is int:
            if not _NEGATIVE_INT_LIMIT < value < _INT_LIMIT:
                return None
            types[key] = "int"
        elif kind is str:
            length = len(value)
            if length >= short_text:
                return None
            size += length
            types[key] = "str"
        elif kind is bool:
            types[key] = "bool"
        else:
            return None
    target: MetadataSet = _new_set(MetadataSet)
    target.values = mapping
    target.types = types
    target.size = size
    return target


def _safe_repr(key: object) -> str:
    try:
        return repr(key)[:MAX_KEY_LENGTH]
    except Exception:
        return f"<{type(key).__name__} key>"


def encoded_size(value: Any) -> int:
    """The length of one JSON-ready value's stored text."""
    return len(_dumps(value))


def join_documents(values: MetadataSet) -> tuple[str, str]:
    """One metadata set as a JSON object of values and one of type names."""
    return _dumps(values.values), _dumps(values.types)


def round_trip_sets(sets: Mapping[str, MetadataSet]) -> dict[str, dict[str, MetadataType]]:
    """Metadata sets by source, through their stored JSON and back: exactly
    what a database store would return, for readers that hold sets in memory."""
    return {source: decode_documents(*join_documents(values)) for source, values in sets.items()}


def decode_documents(
    document: str, types: str, problems: list[tuple[str, str]] | None = None
) -> dict[str, MetadataType]:
    """The inverse of ``join_documents``: every value with its type restored.

    Decoded value by value: one that cannot be restored reads as an
    ``UNDECODABLE`` placeholder text, a document that is not JSON as one
    placeholder under ``*``; each is noted in ``problems`` as (key, reason).
    Never raises, so one damaged value never fails a reader.
    """
    try:
        values = json.loads(document)
        type_names = json.loads(types) if types else {}
        if not isinstance(values, dict) or not isinstance(type_names, dict):
            raise TypeError("not a JSON object")
    except Exception as error:
        return {"*": _undecodable("*", error, problems)}
    tagged = '"$' in document
    decoded: dict[str, MetadataType] = {}
    for key, value in values.items():
        try:
            restored = _untag(value) if tagged else value
            decoded[key] = restore_value(restored, type_names.get(key, ""))
        except Exception as error:
            decoded[key] = _undecodable(key, error, problems)
    return decoded


UNDECODABLE = "<undecodable"
"""How a stored value that cannot be restored starts when read back."""


def _undecodable(key: str, error: Exception, problems: list[tuple[str, str]] | None) -> str:
    kind, message = describe_error(error)
    reason = f"the stored value cannot be decoded: {kind}: {message}"
    if problems is not None:
        problems.append((key, reason))
    return f"{UNDECODABLE} {kind}>"


def restore_value(value: Any, type_name: str) -> MetadataType:
    """Give a parsed JSON value back its recorded type."""
    restore = _BY_TYPE_NAME.get(type_name)
    if restore is None:
        return value  # type: ignore[no-any-return]
    return restore(value)  # type: ignore[no-any-return]


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == _FLOAT_TAG and isinstance(inner, str) and inner in _SPECIAL_FLOATS:
                return _SPECIAL_FLOATS[inner]
            if key == _DICT_TAG and isinstance(inner, dict):
                return {k: _untag(v) for k, v in inner.items()}
        return {key: _untag(item) for key, item in value.items()}
    return value
