"""Naming a store: one rule everywhere, and a default anchored at the project root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path as FilePath

import pytest

import zenmeta
from zenmeta import pipeline_run
from zenmeta._store import resolve_store, store_url
from zenmeta._tracking import flavors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("runs.db", "sqlite:///{cwd}/runs.db"),
        ("sub/../runs.db", "sqlite:///{cwd}/runs.db"),
        ("~/runs.db", "sqlite:///{home}/runs.db"),
        ("/abs/runs.db", "sqlite:////abs/runs.db"),
        ("sqlite:///rel.db", "sqlite:///{cwd}/rel.db"),
        ("sqlite:///~/x.db?timeout=5", "sqlite:///{home}/x.db?timeout=5"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("memory://", "memory://"),
        ("memory://named", "memory://named"),
        ("postgresql://u@db/zenmeta", "postgresql://u@db/zenmeta"),
        ("postgresql+psycopg://u@db/zenmeta", "postgresql+psycopg://u@db/zenmeta"),
    ],
)
def test_a_plain_path_is_a_sqlite_file_and_urls_are_kept(
    text: str, expected: str, tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths become absolute SQLite URLs with ~ expanded; supported URLs pass unchanged."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store_url(text) == expected.format(cwd=os.getcwd(), home=tmp_path / "home")


@pytest.mark.parametrize("text", ["mysql://u@db/x", "redis://x", "s3://bucket/x", ""])
def test_other_stores_are_refused_naming_the_supported_forms(text: str) -> None:
    """An unsupported scheme is a StoreError that lists what works."""
    with pytest.raises(zenmeta.StoreError) as raised:
        store_url(text)
    assert "sqlite:///PATH" in str(raised.value) and "memory://" in str(raised.value)
    with pytest.raises(zenmeta.StoreError):
        zenmeta.Client(text)


def test_every_entry_point_takes_an_absolute_path(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZENMETA_STORE, configure() and Client() all read a plain path as one SQLite file."""
    target = tmp_path / "abs" / "runs.db"
    monkeypatch.setenv("ZENMETA_STORE", str(target))
    with pipeline_run("from-env"):
        pass
    zenmeta.configure(store=str(target))
    with pipeline_run("from-configure"):
        pass
    zenmeta.flush()
    names = {run.pipeline_name for run in zenmeta.Client(str(target)).list_runs()}
    assert names == {"from-env", "from-configure"}
    assert resolve_store() is resolve_store()  # one open store for the two spellings


def test_a_tilde_path_lands_in_the_home_folder(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`~/runs.db` is under $HOME, never a literal ./~ folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZENMETA_STORE", "~/runs.db")
    with pipeline_run("tilde"):
        pass
    zenmeta.flush()
    assert (tmp_path / "home" / "runs.db").is_file()
    assert not (tmp_path / "~").exists()
    assert zenmeta.Client("~/runs.db").list_runs()[0].pipeline_name == "tilde"


def test_an_unsupported_store_leaves_the_run_unrecorded_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """ZENMETA_STORE=mysql://… does not break the run; the warning names the forms."""
    monkeypatch.setenv("ZENMETA_STORE", "mysql://u@db/x")
    with pipeline_run("refused"):
        pass
    assert any("mysql://" in r.getMessage() and "sqlite:///PATH" in r.getMessage()
               for r in zenmeta_log.records)  # fmt: skip


def _project(root: FilePath, marker: str, text: str = "") -> FilePath:
    root.mkdir(parents=True, exist_ok=True)
    if marker == ".git":
        (root / ".git").mkdir()
    else:
        (root / "pyproject.toml").write_text(text)
    deep = root / "src" / "pkg"
    deep.mkdir(parents=True)
    return deep


@pytest.mark.parametrize("marker", ["pyproject.toml", ".git"])
def test_the_default_store_sits_at_the_project_root(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    """Runs started in two folders of one project go to one store at its root."""
    root = tmp_path / "project"
    deep = _project(root, marker)
    for folder, name in ((deep, "deep"), (root, "top")):
        monkeypatch.chdir(folder)
        with pipeline_run(name):
            pass
    zenmeta.flush()
    store = root / ".zenmeta" / "zenmeta.db"
    assert {run.pipeline_name for run in zenmeta.Client(str(store)).list_runs()} == {"deep", "top"}
    assert not (deep / ".zenmeta").exists()


def test_without_a_project_the_working_folder_holds_the_store(tmp_path: FilePath) -> None:
    """No pyproject.toml or .git upward: the default store is under the working folder."""
    assert resolve_store().url == f"sqlite:///{tmp_path}/.zenmeta/zenmeta.db"  # type: ignore[attr-defined]


def test_pyproject_store_is_honoured_relative_to_its_folder(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`store = "runs/team.db"` in [tool.zenmeta] is used, counted from the pyproject's folder."""
    root = tmp_path / "project"
    deep = _project(
        root,
        "pyproject.toml",
        '[tool.zenmeta]\nstore = "runs/team.db"\ncomponents = ["environment"]\n',
    )
    monkeypatch.chdir(deep)
    with pipeline_run("configured"):
        pass
    zenmeta.flush()
    run = zenmeta.Client(str(root / "runs" / "team.db")).list_runs()[0]
    assert run.pipeline_name == "configured" and "environment" in run.metadata
    assert flavors.configured_flavors() == ("environment",)  # the same reader for both
    monkeypatch.setenv("ZENMETA_STORE", str(tmp_path / "env.db"))
    with pipeline_run("env-wins"):
        pass
    zenmeta.flush()
    assert zenmeta.Client(str(tmp_path / "env.db")).list_runs()[0].pipeline_name == "env-wins"


def test_a_bad_pyproject_store_is_a_clear_error(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`store = 3` names the file and says what is expected."""
    _project(tmp_path / "p", "pyproject.toml", "[tool.zenmeta]\nstore = 3\n")
    monkeypatch.chdir(tmp_path / "p")
    with pytest.raises(zenmeta.ConfigurationError, match="must be a path or a store URL"):
        zenmeta.Client()


def test_a_relative_store_follows_the_working_folder_of_each_run(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`configure(store="runs.db")` then a new working folder: the next run writes there."""
    zenmeta.configure(store="runs.db")
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        with pipeline_run(folder):
            pass
    zenmeta.flush()
    for folder in ("one", "two"):
        runs = zenmeta.Client(str(tmp_path / folder / "runs.db")).list_runs()
        assert [run.pipeline_name for run in runs] == [folder]


@pytest.mark.parametrize("text", ["mysql://alice:s3cret@db/x", "redis://x", "s3://bucket/x"])
def test_configure_refuses_an_unsupported_store_at_the_call_as_a_run_would(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configure(store="mysql://…") raises at once, with the StoreError a run's start
    gives for the same name (password masked); the setting in effect is kept."""
    before = zenmeta.get_configuration().store
    with pytest.raises(zenmeta.StoreError) as at_configure:
        zenmeta.configure(store=text)
    assert zenmeta.get_configuration().store == before
    monkeypatch.setenv("ZENMETA_STORE", text)
    zenmeta.configure(strict=True)
    with pytest.raises(zenmeta.StoreError) as at_start, pipeline_run("refused"):
        pass
    message = str(at_configure.value)
    assert "sqlite:///PATH" in message and message in str(at_start.value)
    assert "s3cret" not in message + str(at_start.value)


def test_configure_refuses_an_empty_store_name() -> None:
    """An empty name names no store: refused at the call too."""
    with pytest.raises(zenmeta.StoreError, match="names no store"):
        zenmeta.configure(store=" ")


def test_configure_refuses_a_store_without_importing_the_sql_layer() -> None:
    """The check is the naming rule alone: SQLAlchemy is still not imported after it."""
    code = (
        "import sys, zenmeta\n"
        "try:\n"
        "    zenmeta.configure(store='mysql://u@db/x')\n"
        "except zenmeta.StoreError as error:\n"
        "    print('refused', 'sqlalchemy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["refused", "False"]


def test_the_working_folder_is_read_as_os_reads_it(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock-holding getcwd answers what os.getcwd does, a non-ASCII
    folder included, and os.getcwd answers wherever it cannot."""
    from zenmeta import _project

    folder = tmp_path / "données ü"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert _project.working_folder() == os.getcwd() == str(folder)
    assert _project.absolute_path("a/../runs.db") == str(folder / "runs.db")
    if os.name == "posix":
        assert _project._load_held_getcwd()[0] is not None  # the held call is the one used
    monkeypatch.setattr(_project, "_held_getcwd", [None, b""])
    assert _project.working_folder() == str(folder)


@pytest.mark.skipif(os.name != "posix", reason="a removed working folder is a POSIX state")
def test_a_removed_working_folder_fails_as_os_getcwd_does(
    tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libc's getcwd gives nothing for a removed folder: os.getcwd then says why."""
    from zenmeta import _project

    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(FileNotFoundError):
        _project.working_folder()
