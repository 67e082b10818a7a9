"""The batched write path's two mechanisms for a fast step loop: queued steps
the garbage collector does not walk, and a batch written in a few statements
(each one gives up the interpreter lock, and getting it back from a busy
loop costs up to the 5 ms switch interval)."""

from __future__ import annotations

import gc
import math
import platform
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Any

import pytest
from _processes import sql
from hypothesis import given, settings
from hypothesis import strategies as st

import zenmeta
from zenmeta import Client, Uri, log_metadata, pipeline_run, track_step
from zenmeta._codec import MetadataSet, decode_documents, encode_metadata, join_documents
from zenmeta._store import resolve_store
from zenmeta._store.sql import batches as batches_module
from zenmeta._store.sql import rows
from zenmeta._store.sql.rows import encoded_sets
from zenmeta._store.sql.schema import open_engine, runs
from zenmeta._store.sql.sessions import ROWS_PER_STATEMENT, SHARED_FROM, open_session, shape_of
from zenmeta._store.sql.turns import SWITCH_INTERVAL_S, prompt_turns


@track_step
def logging_step(i: int) -> int:
    log_metadata({"loss": 0.5, "rows": i, "split": "train"})
    return i


@pytest.fixture
def held_writer(tmp_path: FilePath) -> Iterator[Any]:
    """A batched SQLite store whose writer thread is stopped: records stay
    queued until the test drains them, in its own thread."""
    zenmeta.configure(store=f"sqlite:///{tmp_path}/runs.db", durability="batched")
    with pipeline_run("warm-up"):
        logging_step(0)
    zenmeta.flush()
    writer = resolve_store().opened()._writer  # type: ignore[attr-defined]
    writer.close()
    writer.start = lambda: None
    writer.nudge_at = writer.limit = 10**9
    yield writer


def test_queued_plain_steps_are_not_walked_by_the_garbage_collector(held_writer: Any) -> None:
    """Once through a young collection, a queued step is untracked: a million
    queued-and-written steps no longer fill the old generation."""
    run = zenmeta.start_run("held")
    for i in range(100):
        logging_step(i)
    queued = [item for item in held_writer.pending if type(item) is tuple]
    assert len(queued) == 100
    gc.collect(0)
    assert not any(gc.is_tracked(item) for item in queued)
    held_writer._drain()
    run.end()
    held_writer._drain()
    steps = Client(held_writer.url).list_steps(run.id)
    assert [s.metadata["user"] for s in steps] == [
        {"loss": 0.5, "rows": i, "split": "train"} for i in range(100)
    ]


def _at_each_statement(monkeypatch: pytest.MonkeyPatch, writer: Any, call: Any) -> None:
    """Call ``call(sql, parameters)`` as the writer's session runs each statement."""

    class Watched:
        def __init__(self, cursor: Any) -> None:
            self.cursor = cursor

        def execute(self, sql: str, *parameters: Any) -> Any:
            call(sql, parameters[0] if parameters else ())
            return self.cursor.execute(sql, *parameters)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.cursor, name)

    def watched(engine: Any, *args: Any, **kwargs: Any) -> Any:
        session = open_session(engine, *args, **kwargs)
        session._cursor = Watched(session._cursor)
        return session

    monkeypatch.setattr(batches_module, "open_session", watched)
    writer._discard_session()


def _target(sql: str) -> str:
    """``INSERT INTO <table>`` of an insert, after any ``WITH`` before it."""
    found = re.search(r"INSERT (?:OR \w+ )?INTO \w+", sql)
    return found.group(0) if found else ""


def test_a_batch_of_thousands_of_steps_is_a_few_statements(
    held_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []  # each driver call gives up the interpreter lock
    _at_each_statement(monkeypatch, held_writer, lambda sql, _: statements.append(sql))
    run = zenmeta.start_run("held")
    for i in range(ROWS_PER_STATEMENT):
        logging_step(i)
    held_writer._drain()
    inserts = [_target(sql) for sql in statements if "INSERT" in sql]
    assert inserts.count("INSERT INTO zenmeta_steps") == 1
    assert inserts.count("INSERT INTO zenmeta_metadata") == 0  # each set is in its step's row
    # BEGIN, the heartbeat (process and run), the run's row, the steps' with
    # their sets, their value index entries, COMMIT
    assert len(statements) <= 7, [sql[:50] for sql in statements]
    run.end()
    held_writer._drain()
    assert Client(held_writer.url).get_run(str(run.id)).step_count == ROWS_PER_STATEMENT


def test_what_a_batch_s_steps_share_is_bound_once_a_statement(
    held_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver copies every text it binds, holding the interpreter lock: a
    loop's steps share their run, step name, status, source and type map,
    and those are bound once per statement, not once per row."""
    bound: list[int] = []

    def count(sql: str, parameters: Any) -> None:
        if _target(sql) == "INSERT INTO zenmeta_steps":
            bound.append(len(parameters))

    _at_each_statement(monkeypatch, held_writer, count)
    run = zenmeta.start_run("held")
    for i in range(ROWS_PER_STATEMENT):
        logging_step(i)
    held_writer._drain()
    # per row: the id, the invocation name, two clocks and the document
    assert bound == [5 + 5 * ROWS_PER_STATEMENT]
    run.end()
    held_writer._drain()
    steps = Client(held_writer.url).list_steps(run.id)
    assert [(s.name, s.step_name, s.status, s.metadata["user"]) for s in steps] == [
        ("logging_step" if i == 0 else f"logging_step_{i + 1}", "logging_step", "completed",
         {"loss": 0.5, "rows": i, "split": "train"})
        for i in range(ROWS_PER_STATEMENT)
    ]  # fmt: skip


def test_no_statement_numbers_or_names_its_parameters(
    held_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only plain ``?``: SQLite scans a statement's numbered parameters for
    each one it compiles, and Python 3.12's driver looks each parameter's name
    up at every execute (0.7 s a 2,048-row statement on 3.13; 3.12.1 warns for
    each), so ``?1`` in every row made a batch quadratic in its rows."""
    statements: list[str] = []
    _at_each_statement(monkeypatch, held_writer, lambda sql, _: statements.append(sql))
    run = zenmeta.start_run("held")
    for i in range(ROWS_PER_STATEMENT):
        logging_step(i)
    for _ in range(SHARED_FROM):
        with pipeline_run("short"):
            pass
    held_writer._drain()
    shared = [sql for sql in statements if sql.startswith("WITH shared")]
    assert {_target(sql) for sql in shared} == {
        "INSERT INTO zenmeta_steps",
        "INSERT OR REPLACE INTO zenmeta_runs",
    }
    assert [sql[:60] for sql in statements if re.search(r"\?\d|[:@$][A-Za-z_]", sql)] == []
    run.end()
    held_writer._drain()
    assert len(Client(held_writer.url).list_runs(pipeline="short")) == SHARED_FROM


def test_rows_share_only_text_that_is_alike_in_all(tmp_path: FilePath) -> None:
    """Numbers that compare equal keep their own types (``1 == 1.0 == True``),
    a column alike in all rows but one is bound row by row, and every row
    reads back as it was given."""
    count = SHARED_FROM + 3
    statuses = ["completed"] * count
    statuses[count // 2] = "failed"
    rows_given = [  # error_type holds a number here: TEXT keeps how each was bound
        (f"{n:032x}", "same", "pipe", None, '["a"]', statuses[n], n, None,
         "host", 7, None, None, [1, 1.0, True][n % 3], None, None, None, "p")
        for n in range(count)
    ]  # fmt: skip
    shaped: dict[Any, list[Any]] = {}
    for row in rows_given:
        shape, values = shape_of(row)
        shaped.setdefault(shape, []).extend(values)
    assert len(shaped) == 1
    engine = open_engine(f"sqlite:///{tmp_path}/store.db")
    try:
        session = open_session(engine)
        session.begin()
        session.insert(runs, shaped)
        session.commit()
        session.close()
        with engine.connect() as connection:
            stored = connection.exec_driver_sql(
                "SELECT id, name, pipeline_name, status, start_ns, pid, error_type, process_id "
                "FROM zenmeta_runs ORDER BY id"
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in stored] == [
        (row[0], "same", "pipe", row[5], n, 7, ["1", "1.0", "1"][n % 3], "p")
        for n, row in enumerate(rows_given)
    ]


@pytest.fixture
def switch_interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)


def test_the_writer_asks_for_the_lock_back_sooner_while_it_writes(
    held_writer: Any, monkeypatch: pytest.MonkeyPatch, switch_interval: float
) -> None:
    """Each statement gives up the interpreter lock; a busy loop would hold it
    for the whole switch interval before the writer's next statement."""
    seen: list[float] = []
    _at_each_statement(
        monkeypatch, held_writer, lambda _sql, _: seen.append(sys.getswitchinterval())
    )
    assert switch_interval > SWITCH_INTERVAL_S
    run = zenmeta.start_run("held")
    for i in range(100):
        logging_step(i)
    held_writer._drain()
    assert len(seen) >= 3 and set(seen) == {SWITCH_INTERVAL_S}
    assert sys.getswitchinterval() == switch_interval  # restored after the batch
    run.end()
    held_writer._drain()
    assert Client(held_writer.url).get_run(str(run.id)).step_count == 100


def test_a_switch_interval_set_while_a_batch_is_written_is_kept(
    held_writer: Any, monkeypatch: pytest.MonkeyPatch, switch_interval: float
) -> None:
    _at_each_statement(monkeypatch, held_writer, lambda _sql, _: sys.setswitchinterval(0.02))
    logging_step(1)
    held_writer._drain()
    assert sys.getswitchinterval() == 0.02


def test_a_switch_interval_already_short_is_left_alone(
    held_writer: Any, monkeypatch: pytest.MonkeyPatch, switch_interval: float
) -> None:
    seen: list[float] = []
    _at_each_statement(
        monkeypatch, held_writer, lambda _sql, _: seen.append(sys.getswitchinterval())
    )
    sys.setswitchinterval(0.0001)
    logging_step(1)
    held_writer._drain()
    assert seen and seen == pytest.approx([0.0001] * len(seen))
    assert sys.getswitchinterval() == pytest.approx(0.0001)


def test_the_switch_interval_is_restored_when_a_batch_fails(switch_interval: float) -> None:
    with pytest.raises(RuntimeError), prompt_turns():
        assert sys.getswitchinterval() == SWITCH_INTERVAL_S
        raise RuntimeError("the batch failed")
    assert sys.getswitchinterval() == switch_interval


def test_plain_steps_with_odd_text_are_stored_as_any_step(store_url: str) -> None:
    """Names and sources that need ``rows.text``, taken on the plain path."""
    zenmeta.configure(store=store_url)

    @track_step(name="odd\x00step \udcff")
    def odd() -> None:
        log_metadata({"k\x00ey": "v\x00al", "é": 1.5})

    class Odd(zenmeta.StackComponent):
        def get_step_run_metadata(self, info: Any) -> dict[str, Any]:
            return {"size": 3}

    with pipeline_run("p", components=[Odd("cômponent\x00")]) as run:
        odd()
    (step,) = Client(store_url).list_steps(str(run.id))
    assert step.status == "completed"
    if store_url.startswith("sqlite"):
        assert step.name == "odd\x00step \\udcff"  # a lone surrogate, as a visible escape
        assert step.metadata == {
            "user": {"k\x00ey": "v\x00al", "é": 1.5},
            "cômponent\x00": {"size": 3},
        }
    else:  # PostgreSQL text holds neither: they are kept as visible escapes
        assert step.name == "odd\\u0000step \\udcff"
        assert step.metadata["user"] == {"k\\u0000ey": "v\\u0000al", "é": 1.5}
        assert step.metadata["cômponent\\u0000"] == {"size": 3}


def test_plain_steps_with_one_set_and_odd_text_are_stored_as_any_step(store_url: str) -> None:
    """The one-set rows the writer reads by position: an odd name, an odd source."""
    zenmeta.configure(store=store_url)

    @track_step(name="odd \udcff", components=[])
    def odd_name() -> None:
        log_metadata({"k": 1})

    @track_step
    def odd_source() -> None:
        pass

    class Odd(zenmeta.StackComponent):
        def get_step_run_metadata(self, info: Any) -> dict[str, Any]:
            return {"size": 3}

    with pipeline_run("p", components=[Odd("cômponent \udcff")]) as run:
        odd_name()
        odd_source()
    steps = {step.step_name: step for step in Client(store_url).list_steps(str(run.id))}
    source = "cômponent \\udcff"  # a lone surrogate, as a visible escape
    assert steps["odd \\udcff"].metadata == {"user": {"k": 1}}
    assert steps["odd_source"].metadata == {source: {"size": 3}}
    assert {step.status for step in steps.values()} == {"completed"}


def test_a_set_held_in_a_step_row_keeps_text_postgresql_refuses(store_url: str) -> None:
    """A NUL in a value of a set a step row holds: SQLite keeps it, PostgreSQL's
    JSONB refuses it and gets its visible escape, as for a metadata row."""
    zenmeta.configure(store=store_url)

    @track_step
    def nul() -> None:
        log_metadata({"k": "v\x00al", "n": 1})

    with pipeline_run("p") as run:
        nul()
    (step,) = Client(store_url).list_steps(str(run.id))
    expected = "v\x00al" if store_url.startswith("sqlite") else "v\\u0000al"
    assert step.metadata == {"user": {"k": expected, "n": 1}}
    held = "SELECT count(*) FROM zenmeta_steps WHERE document IS NOT NULL"
    assert sql(store_url, held) == [(1,)]


def test_a_plain_step_is_queued_as_its_row_without_a_record(
    held_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Completed, nothing lost, no parent: straight to its row. A failed step
    and a nested one still go through their ``StepRecord``; all are stored."""
    records: list[Any] = []
    store = resolve_store()  # the opening store, which forwards to the opened one's methods
    save_step = store.save_step

    def counted(record: Any) -> None:
        records.append(record)
        save_step(record)

    monkeypatch.setattr(store, "save_step", counted)

    @track_step
    def outer() -> None:
        logging_step(7)

    @track_step
    def failing() -> None:
        raise ValueError("no")

    run = zenmeta.start_run("paths")
    logging_step(1)
    logging_step(2)
    assert records == []
    assert [type(item) for item in held_writer.pending][-2:] == [tuple, tuple]  # the run's first
    outer()  # the nested step has a parent; the outer one is plain again
    with pytest.raises(ValueError):
        failing()
    assert [(r.name, r.status) for r in records] == [
        ("logging_step_3", "completed"),
        ("failing", "failed"),
    ]
    held_writer._drain()
    run.end()
    held_writer._drain()
    steps = {s.name: s for s in Client(held_writer.url).list_steps(run.id)}
    assert {name: s.status for name, s in steps.items()} == {
        "logging_step": "completed",
        "logging_step_2": "completed",
        "logging_step_3": "completed",
        "outer": "completed",
        "failing": "failed",
    }
    assert steps["logging_step_2"].metadata == {"user": {"loss": 0.5, "rows": 2, "split": "train"}}
    assert steps["logging_step_3"].parent_step_run_id == steps["outer"].id


def test_immediate_durability_writes_a_plain_step_before_it_returns(tmp_path: FilePath) -> None:
    """The plain path declines in immediate mode: the record is committed at once."""
    url = f"sqlite:///{tmp_path}/now.db"
    zenmeta.configure(store=url, durability="immediate")
    with pipeline_run("now") as run:
        logging_step(5)
        (step,) = Client(url).list_steps(str(run.id))  # no flush: already there
    assert step.metadata == {"user": {"loss": 0.5, "rows": 5, "split": "train"}}


def test_a_plain_step_the_store_fails_on_is_reported_and_the_program_goes_on(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that raises on the plain path is a warning, never the user's
    error, and the step is not then saved a second time another way."""
    zenmeta.configure(store=f"sqlite:///{tmp_path}/runs.db", durability="batched")
    with pipeline_run("warm-up"):
        pass
    zenmeta.flush()

    def broken(*fields: Any) -> bool:
        raise OSError("disk on fire")

    saved: list[Any] = []
    store = resolve_store().opened()  # where an open store's runs hand their plain steps
    monkeypatch.setattr(store, "save_plain_step", broken)
    monkeypatch.setattr(store, "save_step", saved.append)
    with caplog.at_level("WARNING", logger="zenmeta"), pipeline_run("broken"):
        assert logging_step(3) == 3
    assert saved == []
    assert "cannot write steps" in caplog.text and "disk on fire" in caplog.text


# -- a step's document: orjson's text, the codec's meaning ---------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**65)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.text(max_size=20).map(Uri)
)
_documents = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.recursive(
        _scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=4), children, max_size=4)
        ),
        max_leaves=12,
    ),
    max_size=6,
)


@given(_documents)
@settings(max_examples=400, deadline=None)
def test_a_steps_document_means_what_the_codecs_text_means(logged: dict[str, Any]) -> None:
    """Whichever encoder wrote it, the stored document is ASCII and decodes to
    exactly what the codec's own text decodes to, floats to the bit."""
    metadata, dropped, _ = encode_metadata(logged)
    assert not dropped
    flat = encoded_sets({"user": metadata}, {})
    if not metadata.values:
        assert flat == []
        return
    source, document, types = flat
    codec_text, codec_types = join_documents(metadata)
    assert (source, types) == ("user", codec_types)
    assert document.isascii()
    assert _bits(decode_documents(document, types)) == _bits(decode_documents(codec_text, types))


def _bits(value: Any) -> Any:
    """A value with every float as its bits (NaN, -0.0) and its container types."""
    if type(value) is float:
        return ("float", struct.pack(">d", value))
    if isinstance(value, dict):
        return (type(value), [(key, _bits(item)) for key, item in value.items()])
    if isinstance(value, (list, tuple, set, frozenset)):
        return (type(value), [_bits(item) for item in value])
    return (type(value), value)


def test_the_fast_encoder_writes_documents_on_cpython() -> None:
    """orjson is a dependency on CPython: the step loop's encoder is really it."""
    if platform.python_implementation() != "CPython":
        pytest.skip("orjson is installed on CPython only")
    import orjson

    assert rows._fast_dumps is orjson.dumps


def test_a_nan_the_codec_did_not_tag_is_refused_never_written_as_null() -> None:
    """orjson writes NaN as ``null``; the codec's encoder refuses it, and the
    writer then drops the record visibly. The codec tags every non-finite
    float, so only a hand-built set can hold one: it is refused all the same."""
    untagged = MetadataSet()
    untagged.values["loss"] = math.nan
    untagged.types["loss"] = "float"
    with pytest.raises(ValueError, match="not JSON compliant"):
        encoded_sets({"user": untagged}, {})


_EDGES: dict[str, Any] = {
    "int64_max": 2**63 - 1,
    "uint64_max": 2**64 - 1,
    "over_64_bits": 2**64,
    "int64_min": -(2**63),
    "under_int64": -(2**63) - 1,
    "big_float": 1e16,
    "small_float": 1e-7,
    "subnormal": 5e-324,
    "largest": 1.7976931348623157e308,
    "word_null": "nullable",
    "escapes": 'tab\t "quoted" back\\slash \x1f',
    "unicode": "héllo ✓ \U0001f600",
    "surrogate": "bad \udcff byte",
    "nested": [Uri("https://example.org/?a=1&b=<2>"), 2.5e-300, {"k": [True, 3]}],
}


def test_numbers_and_text_at_the_encoders_edges_are_stored_as_logged(store_url: str) -> None:
    """Each edge alone in its step's document, so each document takes the
    encoder path its one value leads to (orjson's, or the codec's when orjson
    refuses the value or writes what the codec would not)."""
    zenmeta.configure(store=store_url)

    @track_step
    def edge(key: str) -> None:
        log_metadata({key: _EDGES[key]})

    with pipeline_run("edges") as run:
        for key in _EDGES:
            edge(key)
    steps = Client(store_url).list_steps(str(run.id))
    stored = {key: value for step in steps for key, value in step.metadata["user"].items()}
    expected = dict(_EDGES)
    expected["nested"] = [str(_EDGES["nested"][0]), *_EDGES["nested"][1:]]  # types of the top level
    if not store_url.startswith("sqlite"):  # JSONB refuses it: kept as a visible escape
        expected["surrogate"] = "bad \\udcff byte"
    assert {key: _bits(value) for key, value in stored.items()} == {
        key: _bits(value) for key, value in expected.items()
    }
    assert {step.status for step in steps} == {"completed"}
