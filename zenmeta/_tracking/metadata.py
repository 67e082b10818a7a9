"""Adding metadata to a run or step: encode per key, show every loss.

Warnings are logged once per source, key and reason, so a component that
returns the same odd value at every step does not flood the log; the record
of each step still lists every dropped key.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._codec import MetadataSet, encode_metadata
from .._log import warn
from .._records import DroppedValue

__all__ = ["collect_metadata", "forget_warnings", "snapshot"]

_warned: set[tuple[str, str, str]] = set()
_WARNED_LIMIT = 10_000


def _warn_once(source: str, key: str, message: str) -> None:
    marker = (source, key, message)
    if marker in _warned:
        return
    if len(_warned) < _WARNED_LIMIT:
        _warned.add(marker)
    warn("zenmeta: metadata %r from %r %s", key, source, message)


def forget_warnings() -> None:
    """Warn again about keys warned about before (``testing.reset``)."""
    _warned.clear()


def collect_metadata(
    sets: dict[str, MetadataSet],
    dropped: list[DroppedValue],
    source: str,
    mapping: object,
) -> int:
    """Coerce ``mapping`` into ``sets[source]``; return how many keys were dropped.

    A later value for the same key replaces the earlier one (latest wins).
    """
    if type(mapping) is not dict and not isinstance(mapping, Mapping):
        reason = f"expected a mapping of metadata, got {type(mapping).__name__}"
        dropped.append(DroppedValue(source, "*", reason))
        _warn_once(source, "*", f"was dropped: {reason}")
        return 1
    target = sets.get(source)
    if target is None:
        target = sets[source] = MetadataSet()
    _, lost, notes = encode_metadata(mapping, target)
    for key, note in notes:
        _warn_once(source, key, f"was converted: {note}")
    for loss in lost:
        dropped.append(DroppedValue(source, loss.key, loss.reason))
        _warn_once(source, loss.key, f"was dropped: {loss.reason}")
    return len(lost)


def snapshot(sets: Mapping[str, MetadataSet]) -> dict[str, MetadataSet]:
    """A copy safe to hand to a background writer."""
    return {source: values.copy() for source, values in sets.items()}
