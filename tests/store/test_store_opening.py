"""A SQLite store opened on its own thread: no run waits for it, nothing is lost,
and a store that cannot be opened is still reported."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path as FilePath
from typing import Any

import pytest

import zenmeta
from zenmeta import Client, log_metadata, pipeline_run, track_step
from zenmeta import _store as store_front
from zenmeta._store import opening


@track_step
def step(i: int) -> int:
    log_metadata({"i": i})
    return i


_A_STEP = """
import json, os, sys, time
import zenmeta

@zenmeta.track_step
def step():
    return 1
"""
"""The head of the fresh processes' scripts: a step to run."""

_FIRST_RUN = (
    _A_STEP
    + """
with zenmeta.pipeline_run("cold"):
    step()
zenmeta.flush()
(run,) = zenmeta.Client(os.environ["ZENMETA_STORE"]).list_runs()
print(json.dumps((run.end_time - run.start_time).total_seconds()))
"""
)

_IMPORT_SQLALCHEMY = """
import time
started = time.perf_counter()
import sqlalchemy
print(time.perf_counter() - started)
"""


def _slow_open(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every SQL store opens ``seconds`` late, on its opening thread."""
    real_open = store_front._open_sql

    def slow_open(url: str) -> Any:
        time.sleep(seconds)
        return real_open(url)

    monkeypatch.setattr(store_front, "_open_sql", slow_open)


def _python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_first_run_of_a_fresh_process_records_only_the_users_code(
    tmp_path: FilePath,
) -> None:
    """The first run's recorded duration is far below what importing SQLAlchemy takes."""
    env = {"ZENMETA_STORE": f"sqlite:///{tmp_path}/cold.db", "ZENMETA_DURABILITY": "batched"}
    recorded = float(_python(_FIRST_RUN, env))
    importing = float(_python(_IMPORT_SQLALCHEMY))
    # Opened on the caller's thread, the run lasted the import and the schema check.
    assert recorded < importing / 4, (recorded, importing)


_IMPORTED_BY_EACH_RUN = (
    _A_STEP
    + """
with zenmeta.pipeline_run("first"):
    step()
print("ctypes" in sys.modules, "random" in sys.modules)
with zenmeta.pipeline_run("second"):
    step()
print("ctypes" in sys.modules)
"""
)


def test_the_first_run_imports_neither_ctypes_nor_random() -> None:
    """3 ms and 1.4 ms of a fresh process's first run (``make bench``'s cold
    start): the working folder is read with ``os.getcwd`` once, ids come from
    the C generator; the lock-holding ``getcwd`` is loaded by the next run."""
    out = _python(_IMPORTED_BY_EACH_RUN, {"ZENMETA_STORE": "memory://first-run"})
    assert out.split() == ["False", "False", str(os.name == "posix")]


def test_a_store_opening_thread_loads_what_the_next_run_asks_for(tmp_path: FilePath) -> None:
    code = (
        "import sys, zenmeta\n"
        "with zenmeta.pipeline_run('first'):\n"
        "    pass\n"
        "zenmeta.flush()  # waits for the store to open\n"
        "from zenmeta import _project\n"
        "print(bool(_project._held_getcwd))\n"
    )
    out = _python(code, {"ZENMETA_STORE": f"sqlite:///{tmp_path}/opened.db"})
    assert out.split() == ["True"]


_KILLED_AFTER_FIRST_STEP = """
import os, zenmeta

@zenmeta.track_step
def step():
    return 1

run = zenmeta.start_run("immediate")
step()
os._exit(0)  # no exit hooks: only what was committed survives
"""


def test_immediate_durability_waits_for_the_store_it_promised(tmp_path: FilePath) -> None:
    """Immediate mode: a fresh process that dies right after its first step left run and step."""
    url = f"sqlite:///{tmp_path}/immediate.db"
    _python(_KILLED_AFTER_FIRST_STEP, {"ZENMETA_STORE": url, "ZENMETA_DURABILITY": "immediate"})
    (run,) = Client(url).list_runs()
    assert run.pipeline_name == "immediate" and run.step_count == 1


def test_a_store_that_cannot_be_opened_in_the_background_is_reported(
    tmp_path: FilePath, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """A file that is not a database fails the background open: warned, steps go on, retried."""
    path = tmp_path / "runs.db"
    path.write_text("not a database, " * 100)
    zenmeta.configure(store=str(path))
    with pipeline_run("p"):
        assert [step(i) for i in range(3)] == [0, 1, 2]
    zenmeta.flush()  # waits for the open, so its report is made
    messages = [
        r.getMessage() for r in zenmeta_log.records if "cannot open store" in r.getMessage()
    ]
    assert len(messages) == 1 and str(path) in messages[0]
    path.unlink()  # mended: the next run opens the store anew
    with pipeline_run("again"):
        step(7)
    zenmeta.flush()
    (run,) = Client(str(path)).list_runs()
    assert run.pipeline_name == "again" and run.step_count == 1


def test_a_store_that_cannot_be_opened_raises_at_the_run_start_in_strict_mode(
    tmp_path: FilePath,
) -> None:
    """Strict mode waits for the open, so the failure is the run's error, naming the store."""
    path = tmp_path / "runs.db"
    path.write_text("not a database, " * 100)
    zenmeta.configure(store=str(path), strict=True)
    with pytest.raises(zenmeta.StoreError, match="cannot open store"), pipeline_run("p"):
        pass


def test_records_saved_while_the_store_opens_wait_when_too_many_and_keep_order(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow open with a full list makes steps wait; every record lands, in order."""
    monkeypatch.setattr(opening, "PENDING_LIMIT", 5)
    _slow_open(monkeypatch, 0.3)
    url = str(tmp_path / "slow.db")
    zenmeta.configure(store=url)
    started = time.monotonic()
    with pipeline_run("slow") as run:
        for i in range(20):
            step(i)
    assert time.monotonic() - started >= 0.25  # the sixth record waited for the open
    zenmeta.flush()
    steps = Client(url).list_steps(run.id)
    assert [s.metadata["user"]["i"] for s in steps] == list(range(20))
    (recorded,) = Client(url).list_runs()
    assert recorded.status == "completed"


def test_a_run_does_not_wait_for_a_slow_open(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batched: a run and its steps return while the store is still opening."""
    _slow_open(monkeypatch, 0.5)
    url = str(tmp_path / "slow.db")
    zenmeta.configure(store=url)
    started = time.monotonic()
    with pipeline_run("quick"):
        step(1)
    assert time.monotonic() - started < 0.4
    zenmeta.flush()
    (recorded,) = Client(url).list_runs()
    assert recorded.step_count == 1 and json.dumps(recorded.status) == '"completed"'


def test_reading_a_store_that_cannot_be_opened_is_one_store_error(tmp_path: FilePath) -> None:
    """A reader in the same process, while or after the open fails, gets a StoreError."""
    path = tmp_path / "runs.db"
    path.write_text("not a database, " * 100)
    zenmeta.configure(store=str(path))
    with pipeline_run("p"):
        step(1)
    with pytest.raises(zenmeta.StoreError):
        Client(str(path)).list_runs()


_REFUSE_THREADS = """
import threading

def refuse(*args, **kwargs):
    raise RuntimeError("can't create new thread at interpreter shutdown")

def refuse_threads():
    for name in ("_start_new_thread", "_start_joinable_thread"):  # 3.10-3.12, 3.13
        if hasattr(threading, name):
            setattr(threading, name, refuse)
"""


def test_a_script_that_ends_while_its_store_opens_is_recorded_on_python_3_12(
    tmp_path: FilePath,
) -> None:
    """Python 3.12 starts no thread once the interpreter is exiting, where the
    exit's flush finds a store a short script left opening: its writer (and
    lock-wait timer) cannot start. Refused here as 3.12 refuses them (an exit
    handler that runs before zenmeta's), the records are written anyway."""
    script = (
        _A_STEP
        + _REFUSE_THREADS
        + """
import atexit
from zenmeta._store import resolve_store
with zenmeta.pipeline_run("short", run_name="short"):
    step()
    step()

def at_exit():
    refuse_threads()
    print(json.dumps(resolve_store().opening))

atexit.register(at_exit)
"""
    )
    url = f"sqlite:///{tmp_path}/runs.db"
    assert _python(script, {"ZENMETA_STORE": url}).strip() == "true"  # still opening at exit
    (run,) = Client(url).list_runs()
    assert (run.name, run.status, run.step_count) == ("short", "completed", 2)


def test_a_process_that_cannot_start_threads_records_everything_itself(
    tmp_path: FilePath,
) -> None:
    """No thread at all (refused from the start): the store opens on the
    caller's thread and every record is written there, none lost."""
    script = (
        _REFUSE_THREADS
        + """
refuse_threads()
"""
        + _A_STEP
        + """
with zenmeta.pipeline_run("threadless", run_name="threadless"):
    for _ in range(20_000):  # beyond the writer's queue: written as it fills
        step()
print(threading.active_count())
"""
    )
    url = f"sqlite:///{tmp_path}/runs.db"
    assert _python(script, {"ZENMETA_STORE": url}).strip() == "1"
    (run,) = Client(url).list_runs()
    assert (run.name, run.status, run.step_count) == ("threadless", "completed", 20_000)


def test_this_process_s_own_store_is_read_through_methods_it_has(tmp_path: FilePath) -> None:
    """Python 3.12's ``isinstance`` against a protocol looks methods up
    statically, past the ``__getattr__`` an ``OpeningStore`` forwards reads
    through: every ``Client`` of the store this process writes failed there,
    named or given. The reader is the opened store itself."""
    url = str(tmp_path / "runs.db")
    zenmeta.configure(store=url)
    with pipeline_run("own"):
        step(1)
    for reader in (store_front.open_reader(url), Client(store_front.resolve_store()).reader):
        for name in ("list_runs", "find_runs", "list_steps", "find_steps", "get_step"):
            inspect.getattr_static(reader, name)
    zenmeta.flush()
    assert [run.pipeline_name for run in Client(url).list_runs()] == ["own"]


def test_a_run_begun_once_its_store_is_open_hands_plain_steps_to_that_store(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opening store's forwarder is for runs that began while it opened;
    a later run reaches the opened store's own method, and its steps are
    stored all the same."""
    _slow_open(monkeypatch, 0.2)
    url = str(tmp_path / "later.db")
    zenmeta.configure(store=url)
    with pipeline_run("first") as first:
        assert first._plain_store is store_front.resolve_store()  # still opening
        step(0)
    opened = store_front.resolve_store().opened()
    with pipeline_run("later") as later:
        assert later._plain_store is opened
        for i in range(3):
            step(i)
    zenmeta.flush()
    reader = Client(url)
    assert [s.metadata["user"]["i"] for s in reader.list_steps(later.id)] == [0, 1, 2]
    assert len(reader.list_steps(first.id)) == 1


def test_a_run_begun_while_its_store_opens_then_queues_through_the_opened_store(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script's first run begins before its store is open. Once it is, the
    run's plain steps go to the opened store's own method, not on through
    the opening store's forwarder at every step for the rest of the run."""
    _slow_open(monkeypatch, 0.2)
    forwarded: list[int] = []
    real_forward = opening.OpeningStore.save_plain_step

    def counting(self: opening.OpeningStore, *fields: Any) -> bool:
        forwarded.append(1)
        return real_forward(self, *fields)

    monkeypatch.setattr(opening.OpeningStore, "save_plain_step", counting)
    url = str(tmp_path / "first.db")
    zenmeta.configure(store=url)
    with pipeline_run("first") as run:
        step(0)  # held by the opening store
        store_front.resolve_store().opened()
        before = len(forwarded)
        for i in range(1, 50):
            step(i)
        assert len(forwarded) == before
    zenmeta.flush()
    assert [s.metadata["user"]["i"] for s in Client(url).list_steps(run.id)] == list(range(50))
