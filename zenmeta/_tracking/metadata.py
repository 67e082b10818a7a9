"""Adding metadata to a run or step: encode per key, mask secrets, show every loss.

Every value passes the redaction rules (``_redaction``) right after it is
encoded, before anything is queued for the store; each redaction is noted
on the record as a ``DroppedValue`` whose reason starts with ``redacted:``
(the value was kept, masked), which every reader already shows.

Warnings are logged once per source, key and reason, so a component that
returns the same odd value at every step does not flood the log; the record
of each step still lists every dropped key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .._codec import (
    MAX_BYTES_PER_RECORD,
    MAX_KEYS_PER_RECORD,
    MetadataSet,
    encode_metadata,
    encode_plain,
    encoded_size,
)
from .._errors import describe_error
from .._log import warn
from .._records import ComponentFault, DroppedValue
from .._redaction import DEFAULT_RULES, REDACTED_PREFIX, Rules, redact_set
from .._secret_rules import SHORTEST_SECRET

__all__ = [
    "collect_metadata",
    "forget_warnings",
    "mask_message",
    "masked_faults",
    "snapshot",
]

_NONE_CLEAN: dict[str, bool] = {}
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
    rules: Rules = DEFAULT_RULES,
    *,
    faults: list[ComponentFault] | None = None,
    hook: str = "",
) -> int:
    """Coerce ``mapping`` into ``sets[source]``; return how many keys were dropped.

    A later value for the same key replaces the earlier one (latest wins).
    A mapping that cannot even be read (its ``items()`` raises) keeps what
    was read so far; from a hook (``faults`` given) that is the component's
    fault, from the user a dropped ``*``. Nothing here raises.
    Secrets are masked by ``rules``; redactions are noted in ``dropped``
    before the losses, so that ``dropped[-1]`` is a loss when one is counted.
    """
    if type(mapping) is dict:
        # Copied at once, in C: another thread changing the caller's dict can
        # neither break the loops below nor change what they checked.
        mapping = mapping.copy()
        if not sets and rules.plain:
            plain = encode_plain(mapping, rules.known_keys, SHORTEST_SECRET)
            if plain is not None:  # the common first set of a step: nothing to drop or mask
                sets[source] = plain
                return 0
    try:
        return _collect(sets, dropped, source, mapping, rules)
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
    sets: dict[str, MetadataSet],
    dropped: list[DroppedValue],
    source: str,
    mapping: object,
    rules: Rules,
) -> int:
    if type(mapping) is not dict and not isinstance(mapping, Mapping):
        reason = f"expected a mapping of metadata, got {type(mapping).__name__}"
        dropped.append(DroppedValue(source, "*", reason))
        _warn_once(source, "*", f"was dropped: {reason}")
        return 1
    target = sets.get(source)
    if target is None:
        target = sets[source] = MetadataSet()
    used = total = 0
    for values in sets.values():  # one to three sources: a loop beats sum()
        used += len(values.values)
        total += values.size
    cut = 0
    if used + len(mapping) > MAX_KEYS_PER_RECORD:  # only then is each key checked
        mapping, cut = _within_limit(mapping, target, MAX_KEYS_PER_RECORD - used)
        if cut:
            reason = f"{cut} more keys were dropped: a step or run keeps at most "
            _truncated(
                dropped, source, f"{reason}{MAX_KEYS_PER_RECORD} keys (the limit, all sources)"
            )
    held_before, size_before = len(target.values), target.size
    if rules.enabled:
        suspects: list[str] = []
        # With extra patterns any text may match: no key is known to be clean.
        clean = _NONE_CLEAN if rules.extra else rules.known_keys
        _, lost, notes = encode_metadata(mapping, target, clean_keys=clean, suspects=suspects)
        if suspects:
            redactions = redact_set(target, suspects, rules)
            if redactions:
                _note_redactions(dropped, source, redactions)
    else:
        _, lost, notes = encode_metadata(mapping, target)
    if total + target.size - size_before > MAX_BYTES_PER_RECORD:
        over = _within_bytes(sets, target, held_before)
        if over:
            reason = f"{over} keys were dropped: a step or run keeps about "
            _truncated(
                dropped, source, f"{reason}{MAX_BYTES_PER_RECORD} bytes (the limit, all sources)"
            )
            cut += over
    for key, note in notes:
        _warn_once(source, key, f"was converted: {note}")
    for loss in lost:
        dropped.append(DroppedValue(source, loss.key, loss.reason))
        _warn_once(source, loss.key, f"was dropped: {loss.reason}")
    return len(lost) + cut


def _truncated(dropped: list[DroppedValue], source: str, reason: str) -> None:
    dropped.append(DroppedValue(source, "*", reason))
    _warn_once(source, "*", f"was truncated: {reason}")


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


def _within_bytes(sets: dict[str, MetadataSet], target: MetadataSet, held_before: int) -> int:
    """Measure exactly (the running count only ever overestimates); if the
    record is still over its byte limit, drop the keys this call added,
    newest first, until it fits. Returns how many were dropped."""
    for values in sets.values():
        values.measure()
    total = sum(values.size for values in sets.values())
    added = list(target.values)[held_before:]
    dropped = 0
    while total > MAX_BYTES_PER_RECORD and added:
        key = added.pop()
        total -= len(key) + 4 + encoded_size(target.values.pop(key))
        target.types.pop(key, None)
        dropped += 1
    target.measure()
    return dropped


def _note_redactions(
    dropped: list[DroppedValue], source: str, redactions: Iterable[tuple[str, str]]
) -> None:
    for key, rule in redactions:
        note = DroppedValue(source, key, REDACTED_PREFIX + rule)
        if note not in dropped:  # a re-logged key is noted once
            dropped.append(note)
        _warn_once(source, key, f"was {REDACTED_PREFIX}{rule}")


def mask_message(message: str | None, rules: Rules) -> str | None:
    """An error or fault message with its secrets masked (a failed connection
    names its URL, password and all)."""
    if message is None or not rules.enabled:
        return message
    return rules.mask_text(message)[0]


def masked_faults(faults: Sequence[ComponentFault], rules: Rules) -> tuple[ComponentFault, ...]:
    """Faults as recorded: their messages masked like any other value."""
    if not faults or not rules.enabled:
        return tuple(faults)
    return tuple(fault._replace(message=rules.mask_text(fault.message)[0]) for fault in faults)


def snapshot(sets: Mapping[str, MetadataSet]) -> dict[str, MetadataSet]:
    """A copy safe to hand to a background writer."""
    if not sets:  # most runs' records: a comprehension's frame costs more than the copy
        return {}
    return {source: values.copy() for source, values in sets.items()}
