"""Readers never create or change a store, and a store that is wrong is one line.

The commands run as the real console script in a subprocess, so what is
checked is exactly what a user sees: the output, the exit code, and the
files left behind.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path as FilePath

import pytest

import zenmeta
from zenmeta import pipeline_run, track_step
from zenmeta._store import open_reader

ZENMETA = [sys.executable, "-m", "zenmeta"]


def run_cli(*args: str, cwd: FilePath, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; ``user`` runs it under another uid (needs root)."""
    command = [*ZENMETA, *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZENMETA_")}
    environment["COLUMNS"] = "200"
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=60, env=environment
    )


def files_under(folder: FilePath) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def record_one(store: str) -> None:
    @track_step
    def step() -> int:
        return 1

    zenmeta.configure(store=store)
    with pipeline_run("recorded"):
        step()
    zenmeta.flush()
    zenmeta.configure(store=None)


@pytest.mark.parametrize(
    "args",
    [
        ("runs", "list"),
        ("--store", "typo.db", "runs", "list"),
        ("--store", "missing/dir/runs.db", "runs", "list"),
        ("--store", "typo.db", "runs", "show", "x"),
        ("--store", "typo.db", "store", "info"),
        ("--store", "typo.db", "runs", "export", "x"),
        ("ui", "--store", "new.db", "--port", "0"),
    ],
)
def test_readers_create_nothing_and_name_the_missing_store(
    tmp_path: FilePath, args: tuple[str, ...]
) -> None:
    """An empty folder stays empty; the one line says which store is missing."""
    result = run_cli(*args, cwd=tmp_path)
    assert files_under(tmp_path) == set()
    output = (result.stdout + result.stderr).strip()
    assert "no store at" in output.lower() and len(output.splitlines()) == 1, output
    assert "Traceback" not in output
    assert result.returncode == (0 if args[-2:] == ("runs", "list") else 1)


def test_runs_list_of_a_missing_store_as_json_is_an_empty_list(tmp_path: FilePath) -> None:
    """`--json` stays parseable when there is nothing to read."""
    result = run_cli("--store", "typo.db", "runs", "list", "--json", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "[]"
    assert files_under(tmp_path) == set()


def test_client_refuses_a_missing_store_without_creating_it(tmp_path: FilePath) -> None:
    """`Client("typo.db")` raises StoreNotFoundError and leaves no file."""
    with pytest.raises(zenmeta.StoreNotFoundError, match=r"typo\.db"):
        zenmeta.Client("typo.db")
    with pytest.raises(zenmeta.StoreNotFoundError):
        zenmeta.Client()  # the default store, not yet written to
    assert files_under(tmp_path) == set()
    (tmp_path / "link.db").symlink_to(tmp_path / "gone.db")
    with pytest.raises(zenmeta.StoreNotFoundError, match=r"link\.db"):
        zenmeta.Client("link.db")  # a dangling link is a missing store, not a traceback
    assert not (tmp_path / "gone.db").exists()


def make_bad(kind: str, folder: FilePath) -> FilePath:
    target = folder / "bad.db"
    if kind == "empty file":
        target.touch()
    elif kind == "text file":
        target.write_text("these are not the runs you are looking for\n" * 50)
    elif kind == "folder":
        target.mkdir()
    elif kind == "other database":
        with sqlite3.connect(target) as connection:
            connection.execute("CREATE TABLE notes (text)")
        connection.close()
    return target


@pytest.mark.parametrize("kind", ["empty file", "text file", "folder", "other database"])
@pytest.mark.parametrize("command", [("runs", "list"), ("store", "info"), ("runs", "show", "x")])
def test_a_store_that_is_not_one_is_one_line_and_exit_1(
    tmp_path: FilePath, kind: str, command: tuple[str, ...]
) -> None:
    """A 0-byte file, a text file, a folder, a foreign database: one line, exit 1, untouched."""
    target = make_bad(kind, tmp_path)
    before = target.read_bytes() if target.is_file() else None
    result = run_cli("--store", str(target), *command, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert str(target) in result.stderr
    assert files_under(tmp_path) == {"bad.db"}
    if before is not None:
        assert target.read_bytes() == before


def test_an_unreachable_server_is_one_line_and_exit_1(tmp_path: FilePath) -> None:
    """A PostgreSQL URL nobody answers (or no driver for it): one line, no password shown."""
    url = "postgresql://zenmeta:hunter2@127.0.0.1:1/zenmeta"
    result = run_cli("--store", url, "runs", "list", cwd=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr and "127.0.0.1" in result.stderr


def test_the_reader_opens_sqlite_read_only(tmp_path: FilePath) -> None:
    """The reader's connection refuses writes, and reading leaves the file unchanged."""
    url = f"sqlite:///{tmp_path}/runs.db"
    record_one(url)
    zenmeta._store.close_stores()
    before = (tmp_path / "runs.db").read_bytes()
    reader = open_reader(url)
    with reader.engine.connect() as connection:  # type: ignore[attr-defined]
        raw = connection.connection.driver_connection
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            raw.execute("CREATE TABLE intruder (x)")
    assert reader.list_runs()[0].pipeline_name == "recorded"
    reader.close()  # type: ignore[attr-defined]
    assert (tmp_path / "runs.db").read_bytes() == before
    # SQLite's own WAL companions may appear beside the file; nothing else does
    assert files_under(tmp_path) <= {"runs.db", "runs.db-wal", "runs.db-shm"}


def _reachable_by_others(path: FilePath) -> bool:
    """Whether another user may walk down to ``path`` (every folder above it
    lets others through): a checkout under a private ``mktemp -d`` does not."""
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in path.resolve().parents)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root to run the reader as an unprivileged user",
)
@pytest.mark.skipif(
    not _reachable_by_others(FilePath(zenmeta.__file__)),
    reason="the unprivileged user cannot reach this checkout's zenmeta (a folder above "
    "it is private: chmod o+x it, as CI's clone is)",
)
def test_the_cli_reads_a_store_in_a_read_only_folder(tmp_path: FilePath) -> None:
    """As a user who cannot write the folder (root ignores permissions, so the CLI
    runs as `nobody`), `runs list` and `store info` still read the store."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    record_one(f"sqlite:///{folder}/runs.db")
    zenmeta._store.close_stores()  # a clean close removes the -wal and -shm files
    assert files_under(folder) == {"runs.db"}
    folder.chmod(
        stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    )
    (folder / "runs.db").chmod(0o444)
    for parent in (tmp_path, *tmp_path.parents):
        if parent == FilePath("/"):
            break
        parent.chmod(parent.stat().st_mode | stat.S_IXOTH)  # let `nobody` walk to it
    nobody = 65534
    store = str(folder / "runs.db")
    listed = run_cli("--store", store, "runs", "list", cwd=folder, user=nobody)
    assert listed.returncode == 0, listed.stderr
    assert "recorded" in listed.stdout
    info = run_cli("--store", store, "store", "info", cwd=folder, user=nobody)
    assert info.returncode == 0 and "runs" in info.stdout, info.stderr
    assert files_under(folder) == {"runs.db"}
