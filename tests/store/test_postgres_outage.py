"""A PostgreSQL restart in the middle of a batched run loses no step."""

from __future__ import annotations

import threading
import time

import pytest
from _postgres import PostgresServer

import zenmeta
from zenmeta import log_metadata, pipeline_run, track_step
from zenmeta._store.sql import SQLStore

STEPS = 3000


@track_step
def step(i: int) -> int:
    log_metadata({"i": i, "loss": 0.5, "split": "train"})
    return i


@pytest.mark.slow
def test_a_server_restart_during_a_batched_run_loses_no_step(
    postgres_server: PostgresServer,
    postgres_database: str,
    zenmeta_log: pytest.LogCaptureFixture,
) -> None:
    """`pg_ctl restart -m fast` while steps are written: the writer keeps its
    batch and reconnects, the steps wait for room; every step is stored and
    the run completes."""
    postgres_server.empty_database(postgres_database)
    store = SQLStore(postgres_database, durability="batched", queue_size=512)
    zenmeta.configure(store=store)
    halfway = threading.Event()
    restarted = threading.Event()

    failed: list[BaseException] = []

    def restart() -> None:
        try:
            halfway.wait(60)
            postgres_server.pg_ctl("restart")
        except BaseException as error:  # reported below; the step loop must end
            failed.append(error)
        finally:
            restarted.set()

    restarter = threading.Thread(target=restart)
    restarter.start()
    done = 0
    try:
        with pipeline_run("outage", run_name="outage") as run:
            for _ in range(STEPS // 2):
                step(done)
                done += 1
            zenmeta.flush()  # the writer's connection is open when the server goes
            halfway.set()
            while not restarted.is_set():  # step all through the outage: the queue
                step(done)  # fills, then the steps wait for room
                done += 1
                if done % 20 == 0:
                    time.sleep(0.001)
            for _ in range(STEPS // 2):
                step(done)
                done += 1
    finally:
        halfway.set()
        restarter.join(120)
    assert restarted.is_set() and not failed, failed
    reader = zenmeta.Client(postgres_database)
    stored = reader.get_run(str(run.id))
    assert done > STEPS and stored.status == "completed" and stored.step_count == done
    values = sorted(s.metadata["user"]["i"] for s in reader.list_steps(stored))
    assert values == list(range(done))
    messages = [record.getMessage() for record in zenmeta_log.records]
    assert any("lost the connection" in message for message in messages), messages
    assert not any("cannot write" in message for message in messages), messages
    store.close()


def test_a_batch_resent_after_its_commit_reached_the_server_adds_nothing(
    postgres_server: PostgresServer,
    postgres_database: str,
    zenmeta_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection drops just after the server committed a batch: the writer
    cannot know, resends it, and duplicate ids are skipped, not a lost batch."""
    import psycopg

    from zenmeta._store.sql import postgres

    postgres_server.empty_database(postgres_database)
    committed = postgres.PostgresSession.commit
    dropped: list[int] = []

    def commit_then_lose_the_answer(self: postgres.PostgresSession) -> None:
        committed(self)
        if not dropped:
            dropped.append(1)
            self._driver.close()  # the acknowledgement never reaches the writer
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(postgres.PostgresSession, "commit", commit_then_lose_the_answer)
    store = SQLStore(postgres_database, durability="batched", interval_s=30.0)
    zenmeta.configure(store=store)
    with pipeline_run("resent", run_name="resent") as run:
        for i in range(300):
            step(i)
    store.close()
    assert dropped
    stored = zenmeta.Client(postgres_database).get_run(str(run.id))
    assert stored.status == "completed" and stored.step_count == 300
    steps = zenmeta.Client(postgres_database).list_steps(stored)
    assert sorted(s.metadata["user"]["i"] for s in steps) == list(range(300))
    messages = [record.getMessage() for record in zenmeta_log.records]
    assert any("lost the connection" in message for message in messages), messages
    assert not any("cannot write" in message for message in messages), messages
