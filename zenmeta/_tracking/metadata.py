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

from .._codec import MetadataSet, encode_metadata
from .._log import warn
from .._records import ComponentFault, DroppedValue
from .._redaction import DEFAULT_RULES, REDACTED_PREFIX, Rules, redact_set

__all__ = ["collect_metadata", "mask_message", "masked_faults", "snapshot"]

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


def collect_metadata(
    sets: dict[str, MetadataSet],
    dropped: list[DroppedValue],
    source: str,
    mapping: object,
    rules: Rules = DEFAULT_RULES,
) -> int:
    """Coerce ``mapping`` into ``sets[source]``; return how many keys were dropped.

    A later value for the same key replaces the earlier one (latest wins).
    Secrets are masked by ``rules``; redactions are noted in ``dropped``
    before the losses, so that ``dropped[-1]`` is a loss when one is counted.
    """
    if type(mapping) is not dict and not isinstance(mapping, Mapping):
        reason = f"expected a mapping of metadata, got {type(mapping).__name__}"
        dropped.append(DroppedValue(source, "*", reason))
        _warn_once(source, "*", f"was dropped: {reason}")
        return 1
    target = sets.get(source)
    if target is None:
        target = sets[source] = MetadataSet()
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
    for key, note in notes:
        _warn_once(source, key, f"was converted: {note}")
    for loss in lost:
        dropped.append(DroppedValue(source, loss.key, loss.reason))
        _warn_once(source, loss.key, f"was dropped: {loss.reason}")
    return len(lost)


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
    return {source: values.copy() for source, values in sets.items()}
