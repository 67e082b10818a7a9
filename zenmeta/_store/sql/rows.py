"""Records to table rows and back.

Row builders run in the writer thread, never in the user's step, and build
plain tuples in the tables' column order so that the hot insert can hand
them straight to the database driver. Readers rebuild ``RecordedRun`` and
``RecordedStep`` exactly as the in-memory store does, with types restored.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ..._codec import MetadataSet, decode_documents
from ..._export import encodable_text
from ..._info import utc_from_ns
from ..._records import (
    CRASHED,
    RUNNING,
    ComponentFault,
    DroppedValue,
    RecordedRun,
    RecordedStep,
    RunRecord,
    Status,
    StepRecord,
)
from ..._values import MetadataType
from ..liveness import ProcessFacts, process_is_gone, writer_is_gone
from .schema import runs, steps
from .sessions import Row, Shape, Shaped, shape_of

if TYPE_CHECKING:
    from .plain import PlainRow

__all__ = [
    "text",
    "run_row",
    "RUN_SHAPE",
    "add_step_rows",
    "add_plain_rows",
    "encoded_sets",
    "TypeCache",
    "PLAIN_IN_ROW",
    "PLAIN_STEP",
    "FULL_METADATA",
    "metadata_rows",
    "recorded_run",
    "recorded_step",
    "group_metadata",
    "normalized_document",
    "Undecodable",
    "Unbuildable",
    "unbuildable",
    "refused_content",
    "latest_runs",
]

Grouped = dict[str, dict[str, dict[str, MetadataType]]]

TypeCache = dict[str, tuple[dict[str, str], str]]
"""Each source's previous type map, and its JSON (``encoded_sets``)."""


def text(value: str) -> str:
    """Text every database accepts: lone surrogates (from a bad decode in an
    error message, say) become visible ``\\udcxx`` escapes instead of failing
    the whole batch."""
    return value if value.isascii() else encodable_text(value)  # the check is per row


def _text(value: str | None) -> str | None:
    return None if value is None else text(value)


def _faults_json(faults: Sequence[ComponentFault]) -> str | None:
    if not faults:
        return None
    return json.dumps([[f.component, f.hook, f.error_type, f.message] for f in faults])


def _dropped_json(dropped: Sequence[DroppedValue]) -> str | None:
    if not dropped:
        return None
    return json.dumps([[d.source, d.key, d.reason] for d in dropped])


RUN_SHAPE: Shape = tuple(range(len(runs.columns)))
"""Every column of a run's row, NULLs and all: a run's start and its end then
share one statement, and a batch of short runs is one call to the driver
(``shape_of`` would have made two, and cost 0.8 µs a run on its own)."""


def run_row(record: RunRecord, heartbeat_ns: int) -> Row:
    """A ``zenmeta_runs`` row, in column order (``RUN_SHAPE``)."""
    return (
        record.run_id.hex,
        text(record.name),
        text(record.pipeline_name),
        None if record.parent_run_id is None else record.parent_run_id.hex,
        json.dumps(list(record.tags)) if record.tags else "[]",
        record.status,
        record.start_ns,
        record.end_ns,
        text(record.host),
        record.pid,
        record.process_start,
        heartbeat_ns,
        _text(record.error_type),
        _text(record.error_message),
        _faults_json(record.faults),
        _dropped_json(record.dropped),
        record.process_id,
    )


PLAIN_STEP: Shape = (0, 1, 3, 4, 5, 6, 7)
"""The columns of a top-level step that succeeded: no parent, error, fault or loss."""

PLAIN_IN_ROW: Shape = (
    *PLAIN_STEP,
    *(
        list(steps.columns).index(column)
        for column in (steps.c.source, steps.c.document, steps.c.types)
    ),
)
"""The same with its one metadata set in the row (``source, document, types``):
in the order a ``PlainRow`` with one set is queued, so it is inserted as it is."""

FULL_METADATA: Shape = tuple(range(7))

_REMOTE_SHAPES: dict[tuple[bool, bool, bool], Shape] = {
    (parent, task, attempt): (0, 1)
    + ((2,) if parent else ())
    + (3, 4, 5, 6, 7, 12)
    + ((13,) if task else ())
    + ((14,) if attempt else ())
    for parent in (False, True)
    for task in (False, True)
    for attempt in (False, True)
}
"""The columns of a remote step with no error, fault or drop, by whether it
has a parent, a task key and an attempt: built without ``shape_of``, which
costs ~3 µs a row more in the writer."""


def add_step_rows(
    records: Iterable[StepRecord],
    step_rows: Shaped,
    meta_rows: list[Any],
    run_hex: dict[UUID, str],
    remote: list[str] | None = None,
) -> None:
    """Append the rows of finished steps, flat (see ``Shaped``): the step rows
    by shape, the metadata rows (``FULL_METADATA``) to ``meta_rows``, and to
    ``remote`` the ids of steps that name their process (a started record of
    theirs may be stored, to be deleted). The writer thread's hot loop.

    Written out flat, without a call per field: whenever this loop and the
    user's steps compete for the interpreter lock, its time is theirs. A
    record is unpacked in one go rather than read field by field, a run's
    hex id is reused while consecutive steps share the run (a ``UUID`` hashes
    in Python), ids are hexed through ``bytes.hex`` (twice as fast as
    formatting), and a source's type map is checked against its previous one
    before the shared cache is consulted.
    """
    last_types: TypeCache = {}
    plain = step_rows.setdefault(PLAIN_STEP, []).extend
    meta = meta_rows.extend
    last_run: UUID | None = None
    owner = ""
    for (
        step_run_id,
        run_id,
        parent,
        name,
        step_name,
        status,
        start_ns,
        end_ns,
        error_type,
        error_message,
        sets,
        faults,
        dropped,
        process_id,
        task_key,
        attempt,
    ) in records:
        if run_id is not last_run:
            last_run = run_id
            owner = run_hex.get(run_id)  # type: ignore[assignment]
            if owner is None:
                owner = run_hex[run_id] = run_id.hex
        entity = step_run_id.int.to_bytes(16, "big").hex()
        if not name.isascii():
            name = text(name)
        if not step_name.isascii():
            step_name = text(step_name)
        if process_id is not None and remote is not None:
            remote.append(entity)
        clean = error_type is None and not faults and not dropped
        if clean and parent is None and process_id is None and task_key is None and attempt is None:
            plain((entity, owner, name, step_name, status, start_ns, end_ns))
        elif clean and process_id is not None:  # a remote step: its own few shapes
            row: list[Any] = [entity, owner]
            if parent is not None:
                row.append(parent.int.to_bytes(16, "big").hex())
            row += (name, step_name, status, start_ns, end_ns, process_id)
            if task_key is not None:
                row.append(task_key if task_key.isascii() else text(task_key))
            if attempt is not None:
                row.append(attempt)
            shape = _REMOTE_SHAPES[parent is not None, task_key is not None, attempt is not None]
            step_rows.setdefault(shape, []).extend(row)
        else:
            shape, values = shape_of(
                (
                    entity,
                    owner,
                    None if parent is None else parent.int.to_bytes(16, "big").hex(),
                    name,
                    step_name,
                    status,
                    start_ns,
                    end_ns,
                    _text(error_type),
                    _text(error_message),
                    _faults_json(faults),
                    _dropped_json(dropped),
                    process_id,
                    _text(task_key),
                    attempt,
                )
            )
            step_rows.setdefault(shape, []).extend(values)
        if sets:
            _extend_metadata(meta, entity, owner, encoded_sets(sets, last_types), 0)


def add_plain_rows(plains: Iterable[PlainRow], step_rows: Shaped, meta_rows: list[Any]) -> None:
    """Append the rows of plain steps (``plain.py``): they come queued as
    their row values and JSON, so little is left to do."""
    plain = step_rows.setdefault(PLAIN_STEP, []).extend
    in_row = step_rows.setdefault(PLAIN_IN_ROW, []).extend
    meta = meta_rows.extend
    for row in plains:
        if len(row) == 10 and row[2].isascii() and row[3].isascii() and row[7].isascii():
            # Nearly every step: ASCII names and one set, kept in the step's
            # own row (schema version 6). Against a zenmeta_metadata row, that
            # is one table (two B-trees) and one statement per batch fewer:
            # 1.5-2.1 µs of the writer's CPU a step, and one wait for the
            # interpreter lock the step loop holds; the queued row is
            # inserted as it is, with nothing built in this thread.
            in_row(row)
            continue
        entity, owner, name, step_name = row[:4]
        if name.isascii() and step_name.isascii():
            plain(row[:7])
        else:
            plain((entity, owner, text(name), text(step_name), *row[4:7]))
        _extend_metadata(meta, entity, owner, row, 7)


def _extend_metadata(
    meta: Callable[[Iterable[Any]], None], entity: str, owner: str, flat: Sequence[Any], at: int
) -> None:
    """A step's metadata rows, from ``source, document, types`` triples laid
    flat in ``flat`` from ``at`` on (``encoded_sets``)."""
    for position, start in enumerate(range(at, len(flat), 3)):
        source = flat[start]
        if not source.isascii():
            source = text(source)
        meta((entity, source, "step", owner, position, flat[start + 1], flat[start + 2]))


def encoded_sets(sets: Mapping[str, MetadataSet], last_types: TypeCache) -> list[str]:
    """``source, document, types`` for each set with values, flat, both as
    JSON text. A component gives the same keys and types at every step, so
    ``last_types`` (each source's previous type map and its JSON) saves
    rebuilding the type map's JSON; raises what the codec's encoder raises.

    The document is orjson's where that is the codec's text in meaning
    (``_fast_dumps``), else the codec's own."""
    flat: list[str] = []
    for source, values in sets.items():
        document = values.values
        if not document:
            continue
        kinds = values.types
        seen = last_types.get(source)
        if seen is None or seen[0] != kinds:
            seen = last_types[source] = (dict(kinds), type_map(kinds))
        try:
            encoded = _fast_dumps(document, None, _FAST_OPTIONS).decode()
        except TypeError:  # orjson refuses it (an int over 64 bits, a lone surrogate)
            encoded = "null"
        if not encoded.isascii() or "null" in encoded:  # on str, not bytes: 4x faster
            encoded = "".join(_json_chunks(document, 0))
        flat += (source, encoded, seen[1])
    return flat


def type_map(kinds: dict[str, str]) -> str:
    """A type map's JSON, from a cache shared by every step and thread."""
    shape_key = tuple(kinds.items())
    found = _type_maps.get(shape_key)
    if found is None:
        if len(_type_maps) >= _TYPE_MAPS_KEPT:
            _type_maps.clear()
        found = _type_maps[shape_key] = _json(kinds)
    return found


_type_maps: dict[tuple[tuple[str, str], ...], str] = {}
_TYPE_MAPS_KEPT = 4096


def metadata_rows(
    kind: str, entity_hex: str, run_hex: str, sets: Mapping[str, MetadataSet]
) -> list[Row]:
    """One ``zenmeta_metadata`` row per source: its values as one JSON document."""
    rows: list[Row] = []
    for source, metadata_set in sets.items():
        if metadata_set:
            document, types = _json(metadata_set.values), _json(metadata_set.types)
            rows.append((entity_hex, text(source), kind, run_hex, len(rows), document, types))
    return rows


def _json_encoder() -> tuple[Callable[[Any], str], Callable[[Any, int], Iterable[str]]]:
    """The codec's exact JSON (compact, ASCII, no NaN token), about twice as
    fast as ``json.dumps`` per call: the encoder is built once, and CPython's
    C encoder is called directly when it is there and gives the same text.

    Returned twice: as a function giving the text, and as the bare encoder
    giving its pieces (``"".join`` them), which the hot loop calls without
    a Python frame in between."""
    slow = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False).encode

    def slow_chunks(value: Any, _level: int) -> Iterable[str]:  # pragma: no cover - not CPython
        return (slow(value),)

    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - not CPython
        return slow, slow_chunks
    try:
        encode = make(
            None,
            json.JSONEncoder().default,  # raises TypeError, as json.dumps would
            json.encoder.encode_basestring_ascii,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )

        def fast(value: Any) -> str:
            return "".join(encode(value, 0))

        sample = {"a": [1, 0.5, "\u00e9\ud800", None, True], "$b": {"c": -2}}
        if fast(sample) == slow(sample) == json.dumps(sample, separators=(",", ":")):
            return fast, encode
    except Exception:  # pragma: no cover - a CPython whose C encoder differs
        pass
    return slow, slow_chunks  # pragma: no cover


_json, _json_chunks = _json_encoder()


def _fast_encoder() -> tuple[Callable[[Any, Any, int], bytes], int]:
    """orjson's ``dumps`` and options, for a step's document: 0.2 µs against
    the C encoder's 1.2 µs for three values, a tenth of the step loop
    (``benchmarks/bench_levers.py``). Imported here, on the thread that opens
    the store, never by ``import zenmeta``.

    Its text means what the codec's does (a float may be spelled otherwise:
    ``1e-7`` for ``1e-07``), except where ``encoded_sets`` takes the codec's:
    text outside ASCII (orjson writes UTF-8; the stored text stays ASCII, as
    the codec writes it), and any ``null``, which orjson also writes for NaN
    where the codec refuses it (the codec tags non-finite floats, so none is
    expected; both checks cost 60 ns on the decoded text, 250 on the bytes).
    Dataclasses, dates and the like pass through to be refused, as the
    codec's encoder refuses them. Without orjson (not on CPython), the
    codec's encoder stands in."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency on CPython

        def codec_bytes(document: Any, _default: Any, _option: int) -> bytes:
            return b"null"  # always the codec's text

        return codec_bytes, 0
    return orjson.dumps, orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


_fast_dumps, _FAST_OPTIONS = _fast_encoder()


Undecodable = dict[str, list[DroppedValue]]
"""By entity id: the stored values that could not be decoded, as drops."""


def group_metadata(
    rows: Iterable[Sequence[Any]], undecodable: Undecodable | None = None
) -> Grouped:
    """``(entity_id, source, document, types)`` rows, ordered by entity then
    position, decoded into ``{entity_id: {source: {key: value}}}``; a value
    that cannot be decoded is a placeholder, noted in ``undecodable``."""
    grouped: Grouped = {}
    for entity_id, source, document, types in rows:
        problems: list[tuple[str, str]] = []
        if type(document) is str:
            values = decode_documents(document, types, problems)
        else:
            values = _from_jsonb(document, types, problems)
        grouped.setdefault(entity_id, {})[source] = values
        if problems and undecodable is not None:
            undecodable.setdefault(entity_id, []).extend(
                DroppedValue(source, key, reason) for key, reason in problems
            )
    return grouped


def _from_jsonb(
    document: bytes | Any, types: str, problems: list[tuple[str, str]]
) -> dict[str, MetadataType]:
    """A PostgreSQL JSONB document (bytes from the driver) decoded as SQLite's is.

    JSONB keeps its keys in its own order and numbers as ``numeric``, which
    prints a float such as ``1e+20`` without a decimal point: the type map
    (plain text, in recorded order) puts the keys back in order and makes
    such a top-level value a float again. Inside lists and dicts, and for
    ``-0.0``, PostgreSQL's normalisation stands (docs/configuration.md)."""
    if isinstance(document, (bytes, bytearray, memoryview)):
        document = bytes(document).decode("utf-8")
    elif not isinstance(document, str):
        document = _json(document)
    return _in_recorded_order(decode_documents(document, types, problems), types)


def _in_recorded_order(values: dict[str, Any], types: str) -> dict[str, Any]:
    """JSONB's values put back in the type map's (recorded) order, a top-level
    float that JSONB printed as an integer a float again."""
    ordered: dict[str, Any] = {}
    for key, type_name in json.loads(types).items():
        if key in values:
            value = values.pop(key)
            ordered[key] = float(value) if type_name == "float" and type(value) is int else value
    ordered.update(values)
    return ordered


def _loads(raw: str | None, build: Callable[..., Any]) -> tuple[Any, ...]:
    """A stored JSON list of records; the callers turn damage into a placeholder."""
    return () if not raw else tuple(build(*item) for item in json.loads(raw))


def _faults(raw: str | None) -> tuple[ComponentFault, ...]:
    try:
        return _loads(raw, ComponentFault)
    except Exception:
        return (ComponentFault("<undecodable>", "", "", "the stored faults cannot be decoded"),)


def _dropped(raw: str | None) -> tuple[DroppedValue, ...]:
    try:
        return _loads(raw, DroppedValue)
    except Exception:
        return (DroppedValue("<undecodable>", "*", "the stored drops cannot be decoded"),)


def _tags(raw: str | None) -> tuple[str, ...]:
    try:
        tags = json.loads(raw or "[]")
        return tuple(str(tag) for tag in tags) if isinstance(tags, list) else ()
    except Exception:
        return ()


def _uuid(raw: str | None) -> UUID | None:
    return None if raw is None else UUID(hex=raw)


def recorded_run(
    row: Any,
    metadata: Mapping[str, Mapping[str, MetadataType]],
    step_count: int,
    now_ns: int,
    failed_step_count: int = 0,
    undecodable: Sequence[DroppedValue] = (),
    owner: ProcessFacts | None = None,
    server_now_ns: int | None = None,
) -> RecordedRun:
    """A run as readers see it: ``crashed`` when its writer died while it ran.

    ``owner`` is its owning process's record, where the store has one (then
    judged by ``server_now_ns``, the clock that process's heartbeat was
    written by); runs written before version 4 keep the older rule."""
    status: Status = row.status
    if status == RUNNING:
        if owner is not None:
            gone = process_is_gone(owner, now_ns if server_now_ns is None else server_now_ns)
        else:
            gone = writer_is_gone(row.host, row.pid, row.process_start, row.heartbeat_ns, now_ns)
        if gone:
            status = CRASHED
    return RecordedRun(
        id=UUID(hex=row.id),
        name=row.name,
        pipeline_name=row.pipeline_name,
        parent_run_id=_uuid(row.parent_run_id),
        tags=_tags(row.tags),
        status=status,
        start_time=utc_from_ns(row.start_ns),
        end_time=None if row.end_ns is None else utc_from_ns(row.end_ns),
        host=row.host,
        pid=row.pid,
        error_type=row.error_type,
        error_message=row.error_message,
        metadata=metadata,
        faults=_faults(row.faults),
        dropped=_dropped(row.dropped) + tuple(undecodable),
        step_count=step_count,
        failed_step_count=failed_step_count,
    )


def recorded_step(
    row: Any,
    metadata: Mapping[str, Mapping[str, MetadataType]],
    undecodable: Sequence[DroppedValue] = (),
    run_end_ns: int | None = None,
) -> RecordedStep:
    """A finished step as readers see it; ``late`` when it ended after its
    run did (``run_end_ns``)."""
    return RecordedStep(
        id=UUID(hex=row.id),
        run_id=UUID(hex=row.run_id),
        parent_step_run_id=_uuid(row.parent_step_id),
        name=row.name,
        step_name=row.step_name,
        status=row.status,
        start_time=utc_from_ns(row.start_ns),
        end_time=utc_from_ns(row.end_ns),
        error_type=row.error_type,
        error_message=row.error_message,
        metadata=metadata,
        faults=_faults(row.faults),
        dropped=_dropped(row.dropped) + tuple(undecodable),
        process_id=row.process_id,
        task_key=row.task_key,
        attempt=row.attempt,
        late=run_end_ns is not None and row.end_ns > run_end_ns,
    )


def normalized_document(document: bytes | str | Any, types: str) -> str:
    """A document read from ``JSONB`` as the writer wrote it: the codec's compact
    JSON, keys in recorded order, a top-level float a float again (see
    ``_from_jsonb``); for copying a PostgreSQL store into another store."""
    if isinstance(document, (bytes, bytearray, memoryview)):
        document = bytes(document).decode("utf-8")
    values = json.loads(document) if isinstance(document, str) else dict(document)
    return _json(_in_recorded_order(values, types))


class Unbuildable(Exception):  # noqa: N818 - a wrapper, named for what it says
    """A record could not be turned into rows (a value the codec let through
    but JSON cannot encode, a name that is not text)."""


def unbuildable(error: BaseException) -> bool:
    return isinstance(error, Unbuildable)


def refused_content(error: BaseException) -> bool:
    """The database refused what a record holds (a duplicate id, a value it
    cannot bind), as opposed to failing as a whole (a full disk, a lock)."""
    if isinstance(error, Unbuildable):
        return True
    import sqlite3

    orig = getattr(error, "orig", error)
    if isinstance(orig, sqlite3.OperationalError):
        return False
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str):  # PostgreSQL says: class 22 data, 23 integrity
        return state.startswith(("22", "23"))
    names = {kind.__name__ for kind in type(orig).__mro__}
    return bool(names & {"IntegrityError", "DataError", "InterfaceError", "ProgrammingError"})


def latest_runs(run_records: list[RunRecord]) -> list[RunRecord]:
    """Each run's newest snapshot: a run record replaces the earlier ones."""
    latest: dict[UUID, RunRecord] = {}
    for record in run_records:
        latest[record.run_id] = record
    return list(latest.values())
