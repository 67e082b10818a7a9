"""Finding secrets already stored, and masking them in place.

Runs recorded before redaction existed, or with it switched off, may hold
credentials. The scan reads through the reader protocol, puts each stored
metadata set back through the same rules the tracking core applies, and
reports what they would mask; the fix hands the masked sets to the store's
``rewrite_metadata``, one transaction per run, with a ``redacted:`` note on
each run or step it changed, as if the value had been masked when recorded.
Error and fault messages, masked when recorded too, are checked the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from uuid import UUID

    from .._values import MetadataType

from .._codec import encode_metadata
from .._errors import StoreError
from .._records import (
    DroppedValue,
    MessageRewrite,
    MetadataRewrite,
    MetadataRewriter,
    RecordedRun,
    RecordedStep,
    RecordReader,
)
from .._redaction import REDACTED_PREFIX, Rules, redact_set

__all__ = ["SecretFinding", "scan_store"]


class SecretFinding(NamedTuple):
    """A stored value the redaction rules would mask: where, and which rule."""

    run_id: UUID
    run_name: str
    step_id: UUID | None
    step_name: str | None
    source: str
    key: str
    rule: str


def scan_store(reader: RecordReader, rules: Rules, *, fix: bool) -> list[SecretFinding]:
    """Every finding in the store, newest run first; with ``fix``, masked in place."""
    rewriter = reader if fix else None
    if fix and not isinstance(reader, MetadataRewriter):
        raise StoreError(f"{reader!r} cannot rewrite stored metadata")
    findings: list[SecretFinding] = []
    for run in reader.list_runs():
        rewrites: list[MetadataRewrite | MessageRewrite] = []
        entities: list[RecordedRun | RecordedStep] = [run, *reader.list_steps(run.id)]
        for entity in entities:
            for source, values in entity.metadata.items():
                found = _scan_set(run, entity, source, values, rules, rewrites)
                findings.extend(found)
            findings.extend(_scan_messages(run, entity, rules, rewrites))
        if rewriter is not None and rewrites:
            rewriter.rewrite_metadata(run.id, rewrites)  # type: ignore[attr-defined]
    return findings


def _scan_set(
    run: RecordedRun,
    entity: RecordedRun | RecordedStep,
    source: str,
    values: Mapping[str, MetadataType],
    rules: Rules,
    rewrites: list[MetadataRewrite | MessageRewrite],
) -> list[SecretFinding]:
    encoded, _, _ = encode_metadata(values)  # values read back re-encode to what was stored
    redactions = redact_set(encoded, list(values), rules)
    if not redactions:
        return []
    is_step = isinstance(entity, RecordedStep)
    notes = tuple(DroppedValue(source, key, REDACTED_PREFIX + rule) for key, rule in redactions)
    rewrites.append(
        MetadataRewrite("step" if is_step else "run", entity.id, source, encoded, notes)
    )
    return [
        SecretFinding(
            run.id,
            run.name,
            entity.id if is_step else None,
            entity.name if is_step else None,
            source,
            key,
            rule,
        )
        for key, rule in redactions
    ]


def _scan_messages(
    run: RecordedRun,
    entity: RecordedRun | RecordedStep,
    rules: Rules,
    rewrites: list[MetadataRewrite | MessageRewrite],
) -> list[SecretFinding]:
    """A failure's message and the components' fault messages: an exception
    names the URL it could not reach, password and all."""
    is_step = isinstance(entity, RecordedStep)
    step_id = entity.id if is_step else None
    step_name = entity.name if is_step else None
    found: list[SecretFinding] = []
    message = entity.error_message
    if message is not None:
        message, fired = rules.mask_text(message)
        found += [
            SecretFinding(run.id, run.name, step_id, step_name, "error", "error_message", rule)
            for rule in fired
        ]
    faults = []
    for fault in entity.faults:
        masked, fired = rules.mask_text(fault.message)
        faults.append(fault._replace(message=masked))
        found += [
            SecretFinding(
                run.id, run.name, step_id, step_name, fault.component, f"{fault.hook} error", rule
            )
            for rule in fired
        ]
    if found:
        kind: Literal["run", "step"] = "step" if is_step else "run"
        rewrites.append(MessageRewrite(kind, entity.id, message, tuple(faults)))
    return found
