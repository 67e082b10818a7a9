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
so the documents are queued as their JSON: encoded here, on the caller's
side, they are that much less for the writer to do while it shares the
interpreter lock; ``rows.add_plain_rows`` is left with the rest.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .rows import TypeCache, encoded_sets

if TYPE_CHECKING:
    from collections.abc import Mapping
    from uuid import UUID

    from ..._codec import MetadataSet
    from ..._records import StepRecord

__all__ = ["PlainRow", "plain_row", "plain_values"]

PlainRow = tuple[Any, ...]
"""``(id, run_id, name, step_name, status, start_ns, end_ns, *sets)``: the
``zenmeta_steps`` columns of ``PLAIN_STEP``, then ``source, document,
types`` for each metadata set with values, both as JSON text. Flat: the
collector untracks a tuple only once everything in it is untracked, and
finds a nested one in a later collection than its parent, too late."""


def plain_row(record: StepRecord, last_run: list[Any], last_types: TypeCache) -> PlainRow | None:
    """The queued form of a plain step; ``None`` for any other step, or for
    one whose values no encoder takes (the writer then drops it alone).

    ``last_run`` holds the previous step's run id and its hex: consecutive
    steps share their run, and a ``UUID``'s ``hex`` costs a Python call.
    ``last_types`` is the store's ``encoded_sets`` cache."""
    (
        step_run_id,
        run_id,
        parent,
        name,
        step_name,
        status,
        start_ns,
        end_ns,
        error_type,
        _message,
        sets,
        faults,
        dropped,
        process_id,
        task_key,
        attempt,
    ) = record  # one unpacking: a NamedTuple's attribute is a Python-level lookup each
    if (
        parent is not None
        or error_type is not None
        or faults
        or dropped
        or process_id is not None
        or task_key is not None
        or attempt is not None
    ):
        return None
    return plain_values(
        step_run_id,
        run_id,
        name,
        step_name,
        status,
        start_ns,
        end_ns,
        sets,
        last_run,
        last_types,
    )


def plain_values(
    step_run_id: UUID,
    run_id: UUID,
    name: str,
    step_name: str,
    status: str,
    start_ns: int,
    end_ns: int,
    sets: Mapping[str, MetadataSet],
    last_run: list[Any],
    last_types: TypeCache,
) -> PlainRow | None:
    """The queued row from a plain step's fields (``plain_row``, or a step
    that never built its record: ``SQLStore.save_plain_step``)."""
    if run_id is not last_run[0]:
        last_run[0] = run_id
        last_run[1] = run_id.hex
    documents: list[str] = []
    if sets:
        try:
            documents = encoded_sets(sets, last_types)
        except Exception:  # a value no store can take: the writer drops it alone, visibly
            return None
    return (
        step_run_id.int.to_bytes(16, "big").hex(),
        last_run[1],
        name,
        step_name,
        status,
        start_ns,
        end_ns,
        *documents,
    )
