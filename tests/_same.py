"""Type-exact equality for values read back from a store: NaN equals NaN,
and a tuple is not a list. Shared by the store tests (not part of zenmeta)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["same"]


def same(left: Any, right: Any) -> bool:
    """Equal, with the same types all the way down, NaN equal to NaN."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(same, left, right))
    return bool(left == right)
