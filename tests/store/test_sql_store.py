"""The SQL store on SQLite and PostgreSQL: files, types, crashes, many writers, failures."""

from __future__ import annotations

import base64
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path as FilePath
from typing import Any

import pytest
from _processes import sql as _sql
from _same import same as _same

import zenmeta
from zenmeta import DType, Path, StorageSize, Uri, log_metadata, pipeline_run, track_step
from zenmeta._process import host_name, process_start_time
from zenmeta._records import RunRecord
from zenmeta._store import close_stores, resolve_store
from zenmeta._store.liveness import STALE_AFTER_S, writer_is_gone
from zenmeta._store.sql import SQLStore
from zenmeta._store.sql.schema import SCHEMA_VERSION

AWKWARD: dict[str, Any] = {
    "int": 3,
    "big_int": 2**62,
    "float": 0.1,
    "nan": math.nan,
    "inf": math.inf,
    "minus_inf": -math.inf,
    "true": True,
    "none": None,
    "text": "plain",
    "unicode": "héllo ✓ 日本 \U0001f600",
    "lone_surrogate": "bad \udcff byte",
    "nul": "a\x00b",
    "big_float": 1e20,
    "empty": "",
    "tuple": (1, "a", 2.5),
    "set": {3, 1, 2},
    "frozenset": frozenset({"x", "y"}),
    "list": [1, [2, 3], {"k": math.nan}],
    "infinities": [math.inf, -math.inf],
    "dollar_key": {"$ref": 1},
    "tag_lookalike": {"a": {"$float": "NaN"}, "b": {"$dict": {"c": 1}}},
    "nested": {"a": {"b": {"c": [1, 2, {"d": "é"}]}}},
    "uri": Uri("https://example.org/runs/1?x=1&y=<2>"),
    "path": Path("/data/train.csv"),
    "dtype": DType("float32"),
    "size": StorageSize(3 * 1024**3),
}


def _python(code: str, *, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run ``code`` in a fresh interpreter; its stdout, or the test fails with stderr."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def url(store_url: str) -> str:
    """A fresh store on each backend (see ``store_url`` in conftest.py)."""
    return store_url


@pytest.fixture
def sqlite_url(tmp_path: FilePath) -> str:
    """For what only a SQLite file has: its session, its file."""
    return f"sqlite:///{tmp_path}/store/zenmeta.db"


def _count(url: str, table: str) -> int:
    return int(_sql(url, f"SELECT count(*) FROM {table}")[0][0])


@track_step
def add(a: int, b: int) -> int:
    log_metadata({"a": a, "b": b})
    return a + b


def test_default_store_is_a_sqlite_file_in_the_project_folder(tmp_path: FilePath) -> None:
    """With nothing configured, runs land in .zenmeta/zenmeta.db under the cwd."""
    with pipeline_run("p"):
        add(1, 2)
    zenmeta.flush()  # a batched run's end does not wait for the store (flush_after_run)
    assert (tmp_path / ".zenmeta" / "zenmeta.db").is_file()
    run = zenmeta.Client().list_runs()[0]
    assert run.pipeline_name == "p" and run.step_count == 1


def test_store_variable_and_configure_choose_the_file(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZENMETA_STORE is read at each run start; configure(store=...) wins over it."""
    monkeypatch.setenv("ZENMETA_STORE", f"sqlite:///{tmp_path}/from_env.db")
    with pipeline_run("env"):
        pass
    zenmeta.configure(store=f"sqlite:///{tmp_path}/configured.db")
    with pipeline_run("configured"):
        pass
    assert [
        r.pipeline_name for r in zenmeta.Client(f"sqlite:///{tmp_path}/from_env.db").list_runs()
    ] == ["env"]
    assert [r.pipeline_name for r in zenmeta.Client().list_runs()] == ["configured"]


def test_every_metadata_type_round_trips_through_the_file_to_a_new_process(url: str) -> None:
    """Awkward values come back equal, with their types and in their order, read
    by another process (on PostgreSQL, what JSONB refuses comes back visible)."""
    zenmeta.configure(store=url)
    with pipeline_run("types") as run:
        log_metadata(AWKWARD)

        @track_step
        def step() -> None:
            log_metadata(AWKWARD)

        step()
    close_stores()
    out = _python(
        f"""
        import base64, pickle, sys, zenmeta
        client = zenmeta.Client({url!r})
        run = client.get_run({str(run.id)!r})
        step = client.list_steps(run)[0]
        data = (dict(run.metadata["user"]), dict(step.metadata["user"]))
        sys.stdout.write(base64.b64encode(pickle.dumps(data)).decode())
        """
    )
    run_values, step_values = pickle.loads(base64.b64decode(out))
    awkward = dict(AWKWARD)
    if not url.startswith("sqlite"):  # JSONB refuses both: kept as visible escapes
        awkward.update(lone_surrogate="bad \\udcff byte", nul="a\\u0000b")
    for values in (run_values, step_values):
        assert list(values) == list(awkward), "keys come back in recorded order"
        for key, expected in awkward.items():
            assert _same(values[key], expected), (key, values[key], expected)


def test_run_in_a_subprocess_is_read_from_the_parent(url: str) -> None:
    """A pipeline run by another process is listed with its steps and metadata."""
    _python(
        """
        import zenmeta
        from zenmeta import track_step, log_metadata, Uri

        @track_step
        def train(epochs):
            log_metadata({"epochs": epochs, "model": Uri("https://models/1")})
            return epochs * 2

        with zenmeta.pipeline_run("child", run_name="from-child", tags=["sub"]):
            assert train(3) == 6
            train(4)
        """,
        env={"ZENMETA_STORE": url},
    )
    run = zenmeta.Client(url).get_run("from-child")
    assert run.status == "completed" and run.tags == ("sub",) and run.step_count == 2
    steps = zenmeta.Client(url).list_steps(run)
    assert [s.name for s in steps] == ["train", "train_2"]
    assert steps[0].metadata["user"] == {"epochs": 3, "model": "https://models/1"}
    assert type(steps[0].metadata["user"]["model"]) is Uri


_KILLED_CHILD = """
import sys, time, zenmeta
from zenmeta import track_step

@track_step
def work(i):
    zenmeta.log_metadata({"i": i})
    return i

with zenmeta.pipeline_run("doomed", run_name="doomed"):
    for i in range(5):
        work(i)
    time.sleep(float(sys.argv[1]))
    print("ready", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("durability", "settle"), [("immediate", 0.0), ("batched", 1.5)])
def test_killed_process_keeps_finished_steps_and_reads_crashed(
    url: str, durability: str, settle: float
) -> None:
    """kill -9 mid-run: every finished step is on disk (batched: all but the last
    second) and the run reads `crashed`, never `running` forever."""
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(settle)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ZENMETA_STORE": url, "ZENMETA_DURABILITY": durability},
    ) as child:
        try:
            assert child.stdout is not None and child.stderr is not None
            line = child.stdout.readline().strip()
            assert line == "ready", child.stderr.read()
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
    client = zenmeta.Client(url)
    run = client.get_run("doomed")
    assert run.status == "crashed" and run.end_time is None
    assert [s.metadata["user"]["i"] for s in client.list_steps(run)] == [0, 1, 2, 3, 4]
    assert [r.name for r in client.list_runs(status="crashed")] == ["doomed"]
    assert client.list_runs(status="running") == []


def test_open_run_of_a_live_process_reads_running(url: str) -> None:
    """A run still open in a living process is `running`, not `crashed`."""
    zenmeta.configure(store=url)
    run = zenmeta.start_run("open")
    try:
        zenmeta.flush()
        assert zenmeta.Client(url).get_run(str(run.id)).status == "running"
    finally:
        run.end()
    assert zenmeta.Client(url).get_run(str(run.id)).status == "completed"


def _record(pid: int, process_start: float | None, host: str) -> RunRecord:
    from zenmeta._tracking.ids import new_id

    return RunRecord(
        new_id(), "r", "p", None, (), "running", time.time_ns(), None, host, pid, process_start
    )


def test_run_of_a_reused_pid_or_a_silent_remote_host_reads_crashed(url: str) -> None:
    """Same host: a pid now owned by a later process means the writer died.
    Another host: a heartbeat older than the limit means it died."""
    store = SQLStore(url, durability="immediate")
    try:
        me = os.getpid()
        started = process_start_time()
        reused = _record(me, (started or 0) - 3600, host_name())
        alive = _record(me, started, host_name())
        remote = _record(12345, 1.0, "some-other-host")
        for record in (reused, alive, remote):
            store.save_run(record)
        statuses = {r.id: r.status for r in store.list_runs()}
        assert statuses[reused.run_id] == "crashed"
        assert statuses[alive.run_id] == "running"
        assert statuses[remote.run_id] == "running"  # its heartbeat is fresh
    finally:
        store.close()
    now = time.time_ns()
    stale = now - int((STALE_AFTER_S + 1) * 1e9)
    assert writer_is_gone("some-other-host", 1, None, stale, now)
    assert not writer_is_gone("some-other-host", 1, None, now, now)


@pytest.mark.slow
def test_four_processes_write_one_store_at_once(url: str, tmp_path: FilePath) -> None:
    """4 processes x 500 steps at once: 2,000 steps stored, no 'locked' anywhere."""
    go = time.time() + 2.0  # every child starts stepping at the same moment
    code = textwrap.dedent(
        f"""
        import time, zenmeta
        from zenmeta import track_step

        @track_step
        def step(i):
            zenmeta.log_metadata({{"i": i}})

        from zenmeta._store import resolve_store
        resolve_store()  # open the store before the start line
        time.sleep(max(0.0, {go} - time.time()))
        with zenmeta.pipeline_run("many"):
            for i in range(500):
                step(i)
        """
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "ZENMETA_STORE": url},
        )
        for _ in range(4)
    ]
    errors = []
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        errors.append(err)
    assert not any("locked" in err.lower() for err in errors), errors
    runs = zenmeta.Client(url).list_runs(pipeline="many")
    assert len(runs) == 4 and sum(r.step_count for r in runs) == 2000
    for run in runs:
        values = sorted(s.metadata["user"]["i"] for s in zenmeta.Client(url).list_steps(run))
        assert values == list(range(500))


def test_threads_write_one_store_at_once(url: str) -> None:
    """Threads of one process, each in its own run, lose nothing."""
    zenmeta.configure(store=url)

    def worker(n: int) -> None:
        with pipeline_run("threads", run_name=f"thread-{n}"):
            for i in range(200):
                add(n, i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = zenmeta.Client(url).list_runs(pipeline="threads")
    assert sorted(r.step_count for r in runs) == [200] * 4


def _unwritable_url(tmp_path: FilePath) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # root ignores permissions; a file as parent stops it
    return f"sqlite:///{blocker}/store/zenmeta.db"


def test_unwritable_store_still_runs_the_pipeline_and_warns(
    tmp_path: FilePath, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """The steps run and return their results; a warning says what failed."""
    zenmeta.configure(store=_unwritable_url(tmp_path))
    with pipeline_run("p"):
        assert add(2, 3) == 5
    assert any("cannot open store" in r.getMessage() for r in zenmeta_log.records)


def test_unwritable_store_raises_in_strict_mode(tmp_path: FilePath) -> None:
    """Strict mode turns the store fault into a ZenmetaError."""
    zenmeta.configure(store=_unwritable_url(tmp_path), strict=True)
    with pytest.raises(zenmeta.ZenmetaError, match="cannot open store"), pipeline_run("p"):
        pass


def _break_steps_table(url: str) -> None:
    """Another program removes the steps table: every later step write fails."""
    _sql(
        url,
        "DROP TABLE zenmeta_steps CASCADE"
        if url.startswith("postgresql")
        else "DROP TABLE zenmeta_steps",
    )


def test_failed_writes_are_warned_and_the_steps_go_on(
    url: str, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """A store that breaks after opening: results still return, one warning."""
    zenmeta.configure(store=url)
    resolve_store().flush()  # create the store (a SQLite one opens in the background)
    _break_steps_table(url)
    with pipeline_run("p"):
        assert [add(i, i) for i in range(3)] == [0, 2, 4]
    zenmeta.flush()  # a batched run's end does not wait for the writer
    warnings = [r.getMessage() for r in zenmeta_log.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1 and "zenmeta_steps" in warnings[0]


def test_failed_writes_make_flush_raise_in_strict_mode(url: str) -> None:
    """Strict mode: the batch that failed surfaces as StoreError from flush()."""
    zenmeta.configure(store=url, strict=True)
    resolve_store().flush()
    _break_steps_table(url)
    run = zenmeta.start_run("p")
    add(1, 1)
    with pytest.raises(zenmeta.StoreError, match="zenmeta_steps"):
        zenmeta.flush()
    run.end()


def test_immediate_failures_reach_the_core_as_store_faults(
    url: str, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """Immediate mode: a step whose write fails still returns, with a warning."""
    zenmeta.configure(store=url, durability="immediate")
    resolve_store()
    _break_steps_table(url)
    with pipeline_run("p"):
        assert add(1, 2) == 3
    assert any("zenmeta_steps" in r.getMessage() for r in zenmeta_log.records)


def test_batched_records_appear_without_a_flush(url: str) -> None:
    """The writer stores queued steps within a second or two by itself."""
    zenmeta.configure(store=url)
    run = zenmeta.start_run("p")
    try:
        for i in range(10):
            add(i, i)
        reader = SQLStore(url, durability="batched")  # a separate reader
        deadline = time.monotonic() + 2.0
        while len(reader.list_steps(run.id)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(reader.list_steps(run.id)) == 10
        reader.close()
    finally:
        run.end()


def test_flush_makes_queued_records_visible_at_once(url: str) -> None:
    """zenmeta.flush() returns only when everything queued is stored."""
    slow = SQLStore(url, durability="batched", interval_s=30.0)
    zenmeta.configure(store=slow)
    try:
        with pipeline_run("p") as run:
            for i in range(20):
                add(i, i)
            zenmeta.flush()
            assert _count(url, "zenmeta_steps") == 20
        assert slow.list_runs()[0].id == run.id
    finally:
        slow.close()


def test_tiny_queue_makes_callers_wait_and_loses_nothing(url: str) -> None:
    """A queue bound of 2 with 4 threads writing: backpressure, no loss."""
    tiny = SQLStore(url, durability="batched", queue_size=2)
    zenmeta.configure(store=tiny)
    try:
        with zenmeta.ContextThreadPoolExecutor(4) as pool, pipeline_run("tiny") as run:
            assert sum(pool.map(lambda i: add(i, 0), range(400))) == sum(range(400))
        assert len(tiny.list_steps(run.id)) == 400
    finally:
        tiny.close()


def test_immediate_mode_commits_each_step_before_it_returns(url: str) -> None:
    """configure(durability='immediate'), read at run start, writes synchronously."""
    zenmeta.configure(store=url, durability="immediate")
    with pipeline_run("p"):
        for i in range(3):
            add(i, i)
            assert _count(url, "zenmeta_steps") == i + 1


def test_durability_change_takes_effect_at_the_next_run(url: str) -> None:
    """A store opened batched switches to immediate when configured between runs."""
    zenmeta.configure(store=url)
    with pipeline_run("first"):
        add(1, 1)
    zenmeta.configure(durability="immediate")
    with pipeline_run("second"):
        add(2, 2)
        assert _count(url, "zenmeta_steps") == 2


def test_store_records_its_schema_version_and_refuses_a_newer_one(url: str) -> None:
    """The schema is versioned; a store from a newer zenmeta is not misread."""
    store = SQLStore(url)
    assert store.describe()["schema_version"] == SCHEMA_VERSION == 6
    store.close()
    _sql(url, "UPDATE zenmeta_schema SET value = '99' WHERE name = 'version'")
    with pytest.raises(zenmeta.StoreError, match=r"version 99, newer .* understands \(6\)"):
        SQLStore(url)


def test_metadata_is_one_json_document_per_entity_and_source(url: str) -> None:
    """Each (entity, source) set is one row: a JSON document and its type map,
    queryable with SQLite's JSON functions and PostgreSQL's JSONB operators."""

    class Probe:
        name = "probe"

        def get_step_run_metadata(self, info: object) -> dict[str, object]:
            return {"rows": 10, "uri": Uri("https://x")}

    zenmeta.configure(store=url)
    with pipeline_run("p", components=[Probe()]):
        add(1, 2)
    zenmeta.flush()  # read below with plain SQL, not through a reader that flushes
    if url.startswith("sqlite"):
        picked = "json_extract(document, '$.rows'), json_extract(types, '$.uri')"
    else:
        picked = "(document->>'rows')::int, types::jsonb->>'uri'"
    rows = _sql(
        url,
        f"SELECT source, {picked} FROM zenmeta_metadata WHERE entity_kind = 'step' ORDER BY source",
    )
    assert [tuple(row) for row in rows] == [("probe", 10, "Uri"), ("user", None, None)]


def test_faults_and_dropped_values_are_stored(url: str) -> None:
    """A failing hook and an unstorable value are kept with the step."""

    class Broken:
        name = "broken"

        def get_step_run_metadata(self, info: object) -> dict[str, object]:
            raise RuntimeError("boom \udcff")

    loop: list[object] = []
    loop.append(loop)

    @track_step
    def step() -> None:
        log_metadata({"loop": loop, "fine": 1})

    zenmeta.configure(store=url)
    with pipeline_run("p", components=[Broken()]) as run, pytest.raises(ValueError):

        @track_step
        def failing() -> None:
            raise ValueError("bad input")

        step()
        failing()
    first, second = zenmeta.Client(url).list_steps(str(run.id))
    assert first.metadata["user"] == {"fine": 1}
    assert [(d.key, "recursive" in d.reason) for d in first.dropped] == [("loop", True)]
    assert first.faults[0].component == "broken" and first.faults[0].error_type == "RuntimeError"
    assert second.status == "failed" and second.error_type == "ValueError"
    assert second.error_message == "bad input"


def test_text_a_database_refuses_is_stored_not_lost(url: str) -> None:
    """NUL characters and lone surrogates in names, errors and values: SQLite
    keeps them as they are, PostgreSQL as visible escapes; the batch is never lost."""
    zenmeta.configure(store=url)

    @track_step(name="odd\x00step")
    def odd() -> None:
        log_metadata({"k\x00ey": "v\x00al", "bad": "\udcff"})
        raise ValueError("nul \x00 and \udcff here")

    with pytest.raises(ValueError), pipeline_run("p\x00ipe", run_name="r\x00un") as run:
        odd()
    stored = zenmeta.Client(url).get_run(str(run.id))
    (step,) = zenmeta.Client(url).list_steps(stored)
    if url.startswith("sqlite"):
        assert (stored.name, step.name) == ("r\x00un", "odd\x00step")
        assert step.error_message == "nul \x00 and \\udcff here"
        assert step.metadata["user"] == {"k\x00ey": "v\x00al", "bad": "\udcff"}
    else:
        assert (stored.name, step.name) == ("r\\u0000un", "odd\\u0000step")
        assert step.error_message == "nul \\u0000 and \\udcff here"
        assert step.metadata["user"] == {"k\\u0000ey": "v\\u0000al", "bad": "\\udcff"}
    assert stored.pipeline_name.startswith("p") and step.status == "failed"


def test_batched_postgresql_commits_skip_the_disk_wait_and_immediate_ones_never(
    postgres_server: Any, postgres_database: str
) -> None:
    """SET LOCAL synchronous_commit = off for batched transactions only."""
    from zenmeta._store.sql.schema import open_engine
    from zenmeta._store.sql.sessions import open_session

    postgres_server.empty_database(postgres_database)
    database = postgres_database.rsplit("/", 1)[1]
    postgres_server.psql(f"ALTER DATABASE {database} SET synchronous_commit = on")
    engine = open_engine(postgres_database)
    try:
        for durable, expected in ((False, "off"), (True, "on")):
            session: Any = open_session(engine, lambda durable=durable: durable)
            assert type(session).__name__ == "PostgresSession"
            session.begin()
            seen = session._cursor.execute("SHOW synchronous_commit").fetchone()[0]
            session.rollback()
            session.close()
            assert seen == expected, (durable, seen)
    finally:
        engine.dispose()
        postgres_server.psql(f"ALTER DATABASE {database} RESET synchronous_commit")


def test_import_zenmeta_stays_free_of_sqlalchemy() -> None:
    """The store's libraries load only when a store is opened."""
    out = _python("import sys, zenmeta; print('sqlalchemy' in sys.modules, 'click' in sys.modules)")
    assert out.split() == ["False", "False"]


def test_close_writes_what_is_queued(url: str) -> None:
    """Closing a store (as close_stores() does at exit) writes its queue first."""
    slow = SQLStore(url, durability="batched", interval_s=30.0)
    slow.save_run(_record(os.getpid(), process_start_time(), host_name()))
    slow.close()
    assert _count(url, "zenmeta_runs") == 1


def test_the_portable_sqlalchemy_path_stores_the_same_records(
    sqlite_url: str, tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Core session (what PostgreSQL would use) writes what the SQLite
    driver session writes: runs, nested and failed steps, every metadata set."""
    import zenmeta._store.sql.batches as batches
    from zenmeta._store.sql.sessions import CoreSession

    def pipeline() -> list[dict[str, Any]]:
        with pytest.raises(ValueError), pipeline_run("p", run_name="r", tags=["a"]) as run:
            log_metadata({"size": StorageSize(5), "nan": math.nan})

            @track_step
            def inner() -> None:
                log_metadata({"t": (1, 2)})
                raise ValueError("inner failed")

            @track_step
            def outer() -> None:
                inner()

            outer()
        client = zenmeta.Client()
        exported = client.export_run(str(run.id))
        for item in (exported, *exported["steps"]):
            for volatile in (
                "id",
                "run_id",
                "parent_step_run_id",
                "start_time",
                "end_time",
                "duration",
                "pid",
            ):
                item.pop(volatile, None)
        return [exported]

    zenmeta.configure(store=sqlite_url)
    direct = pipeline()
    assert [s["status"] for s in direct[0]["steps"]] == ["failed", "failed"]
    assert direct[0]["metadata"]["user"] == {"size": 5, "nan": "NaN"}
    close_stores()
    monkeypatch.setattr(batches, "open_session", CoreSession)
    zenmeta.configure(store=f"sqlite:///{tmp_path}/core.db")
    assert pipeline() == direct


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_through_its_own_writer(url: str) -> None:
    """After fork the child starts with an empty queue and no connection (the
    parent's queued records are written once, by the parent), and both
    processes' runs are stored."""
    import warnings

    store = SQLStore(url, interval_s=30.0)  # records stay queued until a flush
    zenmeta.configure(store=store)
    parent_run = zenmeta.start_run("parent")
    add(1, 1)
    assert len(store._writer.pending) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            if store._writer.pending or store._writer._session is not None:
                code = 2
            else:
                zenmeta._tracking.context.remove_detached(parent_run)  # the parent's to end
                with pipeline_run("child"):
                    add(2, 2)
                zenmeta.flush()  # os._exit skips the exit hooks; batched: flush first
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent_run.end()
    runs = {r.pipeline_name: r for r in store.list_runs()}
    store.close()
    assert {name: run.step_count for name, run in runs.items()} == {"parent": 1, "child": 1}
    assert runs["child"].status == "completed" and runs["child"].pid == pid
