"""Plain steps wait in the writer's queue as the rows they will become.

A plain step is one that finished with no error, fault, dropped value,
parent step or remote process: nearly every step of a fast loop. Queued as
its ``StepRecord``, it held four objects the garbage collector tracks (the
record, its UUID, its metadata mapping and ``MetadataSet``) for as long as
it waited, and a million-step loop spent 3-5 µs a step in the collector's
full collections, each walking every queued record (``bench_store.py
--million --metadata``, GC pauses). Queued as a tuple of text, numbers and
plain dicts instead, it is untracked at its first young collection and
never reaches the old generation. (A tuple holding a dict stays tracked,
so the documents are queued as their JSON: encoded on the caller's side
(``SQLStore.save_plain_step``), they are that much less for the writer to
do while it shares the interpreter lock; ``rows.add_plain_rows`` is left
with the rest.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..._records import COMPLETED

if TYPE_CHECKING:
    from ..._records import StepRecord

__all__ = ["PlainRow", "is_plain"]

PlainRow = tuple[Any, ...]
"""``(id, run_id, name, step_name, status, start_ns, end_ns, *sets)``: the
``zenmeta_steps`` columns of ``PLAIN_STEP``, then ``source, document,
types`` for each metadata set with values, both as JSON text. Flat: the
collector untracks a tuple only once everything in it is untracked, and
finds a nested one in a later collection than its parent, too late.
``SQLStore.save_plain_step`` builds it."""


def is_plain(record: StepRecord) -> bool:
    """Whether a step record can wait in the queue as its row (``PlainRow``)."""
    return (
        record.status == COMPLETED
        and record.parent_step_run_id is None
        and record.error_type is None
        and not record.faults
        and not record.dropped
        and record.process_id is None
        and record.task_key is None
        and record.attempt is None
    )
