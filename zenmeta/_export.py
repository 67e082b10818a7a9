"""Metadata values as plain JSON, for ``to_dict()``, ``--json`` and exports.

The store keeps every value's exact type; an export is for tools that only
speak JSON, so values become the nearest JSON value and the type name is
given beside them. JSON has no NaN or infinity, and ``json.dumps`` would
write tokens most parsers reject, so non-finite floats become the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (their type name still says
``float``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._values import DType, Path, StorageSize, Uri

__all__ = ["json_safe", "type_name", "export_metadata", "encodable_text"]


def json_safe(value: Any) -> Any:
    """``value`` as something ``json.dumps(..., allow_nan=False)`` accepts."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        items = [json_safe(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return str(value)


def type_name(value: Any) -> str:
    """The metadata type name the store recorded for a value of this kind."""
    kinds: tuple[type, ...] = (Uri, Path, DType, StorageSize, bool, int, float, str)
    kinds += (tuple, frozenset, set, list, dict)
    if value is None:
        return "None"
    for kind in kinds:  # subclasses before their bases
        if isinstance(value, kind):
            return kind.__name__
    return type(value).__name__


def export_metadata(grouped: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    """``(values, types)``: each by source then key, both JSON-safe."""
    values = {
        source: {key: json_safe(item) for key, item in items.items()}
        for source, items in grouped.items()
    }
    types = {
        source: {key: type_name(item) for key, item in items.items()}
        for source, items in grouped.items()
    }
    return values, types


def encodable_text(text: str, encoding: str = "utf-8") -> str:
    """``text`` as ``encoding`` can carry it: what it cannot (lone surrogates
    from a bad decode, say) becomes visible ``\\udcxx`` escapes.

    The one rule for the store's text columns, the terminal and the dashboard.
    """
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # an unknown codec name: nothing better to do
        return text
    return text
