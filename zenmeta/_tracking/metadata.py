"""Adding metadata to a run or step: encode per key, show every loss.

Warnings are logged once per source, key and reason, so a component that
returns the same odd value at every step does not flood the log; the record
of each step still lists every dropped key.
"""

from __future__ import annotations

from collections.abc import Mapping

from .._codec import MAX_KEYS_PER_RECORD, MetadataSet, encode_metadata
from .._errors import describe_error
from .._log import warn
from .._records import ComponentFault, DroppedValue

__all__ = ["collect_metadata"]

_warned: set[tuple[str, str, str]] = set()
_WARNED_LIMIT = 10_000


def _warn_once(source: str, key: str, message: str) -> None:
    marker = (source, key, message)
    if marker in _warned:
        return
    if len(_warned) < _WARNED_LIMIT:
        _warned.add(marker)
    warn("zenmeta: metadata %r from %r %s", key, source, message)


def collect_metadata(
    sets: dict[str, MetadataSet],
    dropped: list[DroppedValue],
    source: str,
    mapping: object,
    *,
    faults: list[ComponentFault] | None = None,
    hook: str = "",
) -> int:
    """Coerce ``mapping`` into ``sets[source]``; return how many keys were dropped.

    A later value for the same key replaces the earlier one (latest wins).
    A mapping that cannot even be read (its ``items()`` raises) keeps what
    was read so far; from a hook (``faults`` given) that is the component's
    fault, from the user a dropped ``*``. Nothing here raises.
    """
    try:
        return _collect(sets, dropped, source, mapping)
    except Exception as error:
        error_type, message = describe_error(error)
        if faults is not None:
            faults.append(
                ComponentFault(source, hook, error_type, f"reading its metadata: {message}")
            )
            warn("zenmeta: component %r returned metadata that cannot be read: %s", source, message)
            return 0
        reason = f"reading the mapping raised {error_type}: {message}"
        dropped.append(DroppedValue(source, "*", reason))
        _warn_once(source, "*", f"was dropped: {reason}")
        return 1


def _collect(
    sets: dict[str, MetadataSet], dropped: list[DroppedValue], source: str, mapping: object
) -> int:
    if type(mapping) is not dict and not isinstance(mapping, Mapping):
        reason = f"expected a mapping of metadata, got {type(mapping).__name__}"
        dropped.append(DroppedValue(source, "*", reason))
        _warn_once(source, "*", f"was dropped: {reason}")
        return 1
    target = sets.get(source)
    if target is None:
        target = sets[source] = MetadataSet()
    used = sum(len(values) for values in sets.values())
    cut = 0
    if used + len(mapping) > MAX_KEYS_PER_RECORD:  # only then is each key checked
        mapping, cut = _within_limit(mapping, target, MAX_KEYS_PER_RECORD - used)
    _, lost, notes = encode_metadata(mapping, target)
    if cut:
        reason = (
            f"{cut} more keys were dropped: a step or run keeps at most "
            f"{MAX_KEYS_PER_RECORD} keys (the limit, all sources together)"
        )
        dropped.append(DroppedValue(source, "*", reason))
        _warn_once(source, "*", f"was truncated: {reason}")
    for key, note in notes:
        _warn_once(source, key, f"was converted: {note}")
    for loss in lost:
        dropped.append(DroppedValue(source, loss.key, loss.reason))
        _warn_once(source, loss.key, f"was dropped: {loss.reason}")
    return len(lost) + cut


def _within_limit(
    mapping: Mapping[object, object], target: MetadataSet, room: int
) -> tuple[dict[object, object], int]:
    """The keys that fit: every key already held (it is replaced), and new
    ones while there is room; and how many new ones were cut."""
    kept: dict[object, object] = {}
    held = target.values
    cut = 0
    for key, value in mapping.items():
        if key in held:
            kept[key] = value
        elif room > 0:
            kept[key] = value
            room -= 1
        else:
            cut += 1
    return kept, cut


def snapshot(sets: Mapping[str, MetadataSet]) -> dict[str, MetadataSet]:
    """A copy safe to hand to a background writer."""
    return {source: values.copy() for source, values in sets.items()}
