"""Schema migrations: a version-1 store upgrades in place, once, and reads back unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path as FilePath
from typing import Any

import pytest
from _processes import sql as _rows
from _sqlite import sqlite_file
from _versions import tables as _tables
from _versions import to_version_2

import zenmeta
from zenmeta._store import close_stores
from zenmeta._store.sql import SQLStore
from zenmeta._store.sql.schema import SCHEMA_VERSION

FIXTURES = FilePath(__file__).parent / "fixtures"


def _v1_copy(tmp_path: FilePath) -> str:
    """The committed version-1 file (written by zenmeta before migrations), copied."""
    target = tmp_path / "old" / "zenmeta.db"
    target.parent.mkdir()
    shutil.copyfile(FIXTURES / "v1.db", target)
    return f"sqlite:///{target}"


def _v1_postgres(url: str) -> str:
    """A PostgreSQL store taken back to version 1: what version-1 code created there."""
    SQLStore(url).close()
    _to_version_2(url)
    _rows(url, "DROP TABLE zenmeta_processes")
    _rows(url, "DROP TABLE zenmeta_alembic_version")
    _rows(url, "UPDATE zenmeta_schema SET value = '1' WHERE name = 'version'")
    return url


_to_version_2 = to_version_2


def _exported(url: str) -> list[dict[str, Any]]:
    client = zenmeta.Client(url)
    return [client.export_run(str(run.id)) for run in client.list_runs()]


def test_a_version_1_file_upgrades_in_place_and_reads_back_unchanged(tmp_path: FilePath) -> None:
    """Every run, step and value the version-1 code read from the file, read
    again after the upgrade; the old file is kept beside it; the new table is there."""
    url = _v1_copy(tmp_path)
    path = url.removeprefix("sqlite:///")
    assert _rows(url, "SELECT value FROM zenmeta_schema") == [("1",)]
    expected = json.loads((FIXTURES / "v1.json").read_text(encoding="utf-8"))
    assert json.loads(json.dumps(_exported(url))) == expected  # a reader reads it as it is
    assert _rows(url, "SELECT value FROM zenmeta_schema") == [("1",)]  # and changes nothing
    SQLStore(url).close()  # the first writer migrates it
    assert json.loads(json.dumps(_exported(url))) == expected
    assert zenmeta.Client(url).store_info()["schema_version"] == SCHEMA_VERSION == 6
    assert _rows(url, "SELECT version_num FROM zenmeta_alembic_version") == [("0006",)]
    assert "zenmeta_processes" in _tables(url)
    close_stores()
    with sqlite_file(f"{path}.v1.bak") as backup:
        assert backup.execute("SELECT value FROM zenmeta_schema").fetchall() == [("1",)]
        names = {row[0] for row in backup.execute("SELECT name FROM sqlite_master")}
        assert "zenmeta_processes" not in names and "zenmeta_runs" in names
    store = SQLStore(url)
    try:
        assert store.describe()["runs"] == len(expected)  # opening again changes nothing
    finally:
        store.close()


def test_an_upgraded_store_takes_new_runs(tmp_path: FilePath) -> None:
    """After the upgrade the store is an ordinary current store."""
    url = _v1_copy(tmp_path)
    zenmeta.configure(store=url)
    with zenmeta.pipeline_run("after", run_name="after-upgrade"):
        zenmeta.log_metadata({"fine": True})
    runs = zenmeta.Client(url).list_runs()
    assert runs[0].name == "after-upgrade" and runs[0].metadata["user"] == {"fine": True}
    assert len(runs) == 3


_OPEN_AT_ONCE = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from zenmeta._store.sql import SQLStore
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
store = SQLStore(sys.argv[1])
print(store.describe()["schema_version"])
store.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_opening_an_old_store_at_once_migrate_it_once(
    backend: str, tmp_path: FilePath, request: pytest.FixtureRequest
) -> None:
    """Both open it (the lock makes the second wait); one migrates, one finds it done."""
    if backend == "sqlite":
        url = _v1_copy(tmp_path)
    else:
        from conftest import fresh_store_url

        url = _v1_postgres(fresh_store_url(request, backend, tmp_path))
    go = time.time() + 1.5
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_OPEN_AT_ONCE), url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(SCHEMA_VERSION)] * 2
    upgrades = [line for _, err in outputs for line in err.splitlines() if "upgraded" in line]
    assert len(upgrades) == 1, outputs
    assert f"from schema version 1 to {SCHEMA_VERSION}" in upgrades[0]
    assert _rows(url, "SELECT version_num FROM zenmeta_alembic_version") == [("0006",)]
    if backend == "sqlite":
        expected = json.loads((FIXTURES / "v1.json").read_text(encoding="utf-8"))
        assert json.loads(json.dumps(_exported(url))) == expected


def test_a_new_store_is_created_current_without_importing_alembic(tmp_path: FilePath) -> None:
    """Alembic loads only to migrate: a new store is created whole and stamped."""
    url = f"sqlite:///{tmp_path}/new.db"
    code = (
        "import sys; from zenmeta._store.sql import SQLStore; "
        f"SQLStore({url!r}).close(); SQLStore({url!r}).close(); "
        "print('alembic' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False"]
    assert _rows(url, "SELECT version_num FROM zenmeta_alembic_version") == [("0006",)]
    assert _rows(url, "SELECT value FROM zenmeta_schema WHERE name = 'version'") == [("6",)]


def test_a_version_2_store_reads_as_it_is_then_upgrades_keeping_its_rows(
    store_url: str,
) -> None:
    """A reader reads a version-2 store unmigrated (the version-4 columns read
    as empty); the first writer upgrades it, old rows read back the same, and
    new steps keep their process, task key and attempt."""
    import uuid

    from zenmeta import _process
    from zenmeta._records import StepRecord
    from zenmeta._store import open_store

    zenmeta.configure(store=store_url)

    @zenmeta.track_step
    def train() -> None:
        zenmeta.log_metadata({"loss": 0.5})

    with zenmeta.pipeline_run("old", run_name="old-run") as run:
        train()
    close_stores()
    _to_version_2(store_url)
    before = json.loads(json.dumps(_exported(store_url)))
    assert before[0]["status"] == "completed" and before[0]["steps"][0]["name"] == "train"
    assert "task_key" not in before[0]["steps"][0]
    assert _rows(store_url, "SELECT value FROM zenmeta_schema WHERE name = 'version'") == [("2",)]
    store = open_store(store_url)  # the first writer migrates it
    assert json.loads(json.dumps(_exported(store_url))) == before
    now = time.time_ns()
    step_id = uuid.uuid4()
    store.save_step(
        StepRecord(step_id, run.id, None, "again", "again", "completed", now, now + 1,
                   process_id=_process.PROCESS_ID, task_key="again-1", attempt=2)
    )  # fmt: skip
    store.flush()
    step = zenmeta.Client(store_url).get_step(str(step_id))
    assert (step.task_key, step.attempt, step.process_id) == ("again-1", 2, _process.PROCESS_ID)
    assert zenmeta.Client(store_url).store_info()["schema_version"] == SCHEMA_VERSION


def test_a_version_5_store_reads_as_it_is_then_keeps_new_sets_in_step_rows(
    store_url: str,
) -> None:
    """Version 5 kept every step's set in zenmeta_metadata. A reader reads such
    a store unmigrated; the first writer upgrades it; old and new steps read
    back with their metadata, and a metadata filter finds both kinds."""
    from _versions import to_version_5

    zenmeta.configure(store=store_url)

    @zenmeta.track_step
    def train(split: str) -> None:
        zenmeta.log_metadata({"loss": 0.5, "split": split})

    with zenmeta.pipeline_run("p", run_name="old-run"):
        train("old")
    close_stores()
    to_version_5(store_url)
    held = "SELECT count(*) FROM zenmeta_metadata WHERE entity_kind = 'step'"
    assert _rows(store_url, held) == [(1,)]
    client = zenmeta.Client(store_url)
    (old,) = client.list_steps(client.get_run("old-run"))
    assert old.metadata == {"user": {"loss": 0.5, "split": "old"}}  # read unmigrated
    assert [s.id for s in client.find_steps(where="user.split = 'old'")] == [old.id]
    assert _rows(store_url, "SELECT value FROM zenmeta_schema WHERE name = 'version'") == [("5",)]
    zenmeta.configure(store=store_url)  # the first writer migrates it
    with zenmeta.pipeline_run("p", run_name="new-run"):
        train("new")
    zenmeta.flush()
    in_rows = "SELECT count(*) FROM zenmeta_steps WHERE document IS NOT NULL"
    assert _rows(store_url, in_rows) == [(1,)] and _rows(store_url, held) == [(1,)]
    client = zenmeta.Client(store_url)
    (new,) = client.list_steps(client.get_run("new-run"))
    assert new.metadata == {"user": {"loss": 0.5, "split": "new"}}
    assert client.get_step(str(old.id)).metadata == old.metadata
    found = client.find_steps(where="user.split = 'old' or user.split = 'new'")
    assert {s.id for s in found} == {old.id, new.id}
    assert [s.id for s in client.find_steps(where="user.split = 'new'")] == [new.id]
    assert [s.id for s in client.find_steps(where="user.loss > 0.4 and user.split != 'old'")] == [
        new.id
    ]
    assert client.store_info()["schema_version"] == SCHEMA_VERSION


def test_migration_6_downgrades_to_sets_in_the_metadata_table(tmp_path: FilePath) -> None:
    """Its downgrade moves the sets step rows hold into zenmeta_metadata, where
    version 5 reads them, and drops what it added; upgrading again keeps them."""
    from _versions import to_version_5

    url = f"sqlite:///{tmp_path}/store.db"
    zenmeta.configure(store=url)

    @zenmeta.track_step
    def train(i: int) -> None:
        zenmeta.log_metadata({"i": i, "split": "train"})

    with zenmeta.pipeline_run("p", run_name="held"):
        for i in range(3):
            train(i)
    close_stores()
    before = json.loads(json.dumps(_exported(url)))
    assert _rows(url, "SELECT count(*) FROM zenmeta_steps WHERE document IS NOT NULL") == [(3,)]
    close_stores()  # the reader knew the store as version 6
    to_version_5(url)  # migration 0006's downgrade
    assert "document" not in {row[1] for row in _rows(url, "PRAGMA table_info(zenmeta_steps)")}
    assert _rows(url, "SELECT count(*) FROM zenmeta_metadata WHERE entity_kind = 'step'") == [(3,)]
    assert "zenmeta_all_metadata" not in {
        row[0] for row in _rows(url, "SELECT name FROM sqlite_master WHERE type = 'view'")
    }
    assert json.loads(json.dumps(_exported(url))) == before  # read as version 5
    close_stores()
    SQLStore(url).close()  # upgraded again
    assert json.loads(json.dumps(_exported(url))) == before
    all_sets = "SELECT count(*) FROM zenmeta_all_metadata WHERE entity_kind = 'step'"
    assert _rows(url, all_sets) == [(3,)]
