"""The environment component: host, interpreter, entry point, git, packages."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import types
from collections.abc import Mapping
from pathlib import Path
from uuid import uuid4

import pytest

import zenmeta
from zenmeta import pipeline_run
from zenmeta.integrations import environment
from zenmeta.integrations.environment import EnvironmentComponent
from zenmeta.testing import recording

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def _git(directory: Path, *arguments: str) -> str:
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *arguments],
        cwd=directory,
        env={**os.environ, **GIT_IDENTITY},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def _repository(directory: Path, remote: str | None = None) -> Path:
    directory.mkdir()
    _git(directory, "init", "-q")
    (directory / "train.py").write_text("print('train')\n")
    _git(directory, "add", "train.py")
    _git(directory, "commit", "-q", "-m", "first")
    if remote:
        _git(directory, "remote", "add", "origin", remote)
    return directory


def _metadata(component: EnvironmentComponent) -> dict[str, object]:
    return dict(component.get_pipeline_run_metadata(uuid4()))


@pytest.fixture(autouse=True)
def _fresh_git_cache() -> None:
    environment._git_cache.clear()


def test_records_host_and_interpreter_once_per_run() -> None:
    """The run's metadata under ``environment`` describes this interpreter."""
    with recording() as store, pipeline_run("env", components=[EnvironmentComponent()]):
        pass
    recorded = store.list_runs()[0].metadata["environment"]
    assert recorded["python_version"] == platform.python_version()
    assert recorded["python_implementation"] == platform.python_implementation()
    assert recorded["pid"] == os.getpid()
    assert recorded["executable"] == sys.executable
    assert isinstance(recorded["executable"], zenmeta.Path)
    assert recorded["zenmeta_version"] == zenmeta.__version__
    assert recorded["hostname"] and recorded["platform"]


def test_records_the_versions_of_the_listed_packages() -> None:
    """An installed package has its version; a missing one is recorded as ``None``."""
    component = EnvironmentComponent(packages=["pytest", "surely-not-installed-zz"])
    packages = _metadata(component)["packages"]
    assert packages == {"pytest": pytest.__version__, "surely-not-installed-zz": None}


def test_inside_a_git_repository_records_commit_branch_dirty_and_remote(
    tmp_path: Path,
) -> None:
    """Commit, branch and a clean tree are recorded; the remote loses its token."""
    remote = "https://bob:ghp_secret@example.com/team/models.git?private_token=t0k"
    repository = _repository(tmp_path / "repo", remote)
    metadata = _metadata(EnvironmentComponent(repository=repository))
    assert metadata["git_commit"] == _git(repository, "rev-parse", "HEAD")
    assert metadata["git_branch"] == "main"
    assert metadata["git_dirty"] is False
    assert metadata["git_remote"] == "https://example.com/team/models.git"
    assert isinstance(metadata["git_remote"], zenmeta.Uri)
    assert "secret" not in repr(metadata) and "t0k" not in repr(metadata)


def test_a_modified_tracked_file_makes_the_tree_dirty(tmp_path: Path) -> None:
    """Changed tracked files count as dirty; an scp-style remote stays plain text."""
    repository = _repository(tmp_path / "repo", "git@example.com:team/models.git")
    (repository / "train.py").write_text("print('changed')\n")
    metadata = _metadata(EnvironmentComponent(repository=repository))
    assert metadata["git_dirty"] is True
    assert metadata["git_remote"] == "git@example.com:team/models.git"
    assert not isinstance(metadata["git_remote"], zenmeta.Uri)


def test_outside_a_git_repository_records_no_git_fields(tmp_path: Path) -> None:
    """A folder outside any repository gives no git keys at all."""
    metadata = _metadata(EnvironmentComponent(repository=tmp_path))
    assert not [key for key in metadata if key.startswith("git_")]


def _identity(metadata: Mapping[str, object]) -> tuple[object, ...]:
    return (metadata["git_commit"], metadata["git_dirty"], metadata["git_diff_sha256"])


def test_one_process_run_commit_run_edit_run_records_three_git_identities(
    tmp_path: Path,
) -> None:
    """Git is read per run: a commit and then an unstaged edit are both seen."""
    repository = _repository(tmp_path / "repo")
    component = EnvironmentComponent(repository=repository)
    with recording() as store:
        with pipeline_run("sweep", run_name="first", components=[component]):
            pass
        (repository / "train.py").write_text("print('train better')\n")
        _git(repository, "commit", "-q", "-am", "second")
        with pipeline_run("sweep", run_name="second", components=[component]):
            pass
        (repository / "train.py").write_text("print('train best')\n")  # edited, not staged
        with pipeline_run("sweep", run_name="third", components=[component]):
            pass
    recorded = {run.name: run.metadata["environment"] for run in store.list_runs()}
    identities = {name: _identity(metadata) for name, metadata in recorded.items()}
    assert len(set(identities.values())) == 3
    assert (
        identities["second"][0] == identities["third"][0] == _git(repository, "rev-parse", "HEAD")
    )
    assert identities["first"][0] != identities["second"][0]
    assert identities["second"][1:] == (False, None)
    assert recorded["third"]["git_dirty"] is True
    assert recorded["third"]["git_changed_files"] == 1
    diff = subprocess.run(
        ["git", "diff", "HEAD", "--no-color", "--no-ext-diff", "--binary"],
        cwd=repository, capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert recorded["third"]["git_diff_sha256"] == hashlib.sha256(diff).hexdigest()


def test_a_warm_cache_runs_no_git_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing changed since the last run: the answer comes from the stat check alone."""
    repository = _repository(tmp_path / "repo")
    time.sleep(0.15)  # older than the racy-timestamp window
    component = EnvironmentComponent(repository=repository)
    first = _metadata(component)
    monkeypatch.setenv("PATH", str(tmp_path))  # from now on git cannot run
    again = _metadata(component)
    assert _identity(again) == _identity(first) and again["git_root"] == str(repository)
    (repository / "train.py").write_text("print('edited')\n")
    assert "git_commit" not in _metadata(component)  # a change asks git again (here: absent)


def test_the_diff_is_recorded_on_request_and_cut_to_fit(tmp_path: Path) -> None:
    """``record_diff=True`` adds ``git diff HEAD``, cut to 64 KiB with a flag when longer."""
    repository = _repository(tmp_path / "repo")
    (repository / "train.py").write_text("print('changed')\n")
    small = _metadata(EnvironmentComponent(repository=repository, record_diff=True))
    assert "+print('changed')" in str(small["git_diff"])
    assert "git_diff_truncated" not in small
    assert "git_diff" not in _metadata(EnvironmentComponent(repository=repository))
    (repository / "train.py").write_text("x = 1\n" * 40_000)
    big = _metadata(EnvironmentComponent(repository=repository, record_diff=True))
    assert big["git_diff_truncated"] is True
    assert len(json.dumps(big["git_diff"])) <= environment.DIFF_LIMIT


def test_installed_packages_come_from_the_running_interpreter() -> None:
    """Every importable distribution is listed as ``name==version``."""
    installed = _metadata(EnvironmentComponent())["installed_packages"]
    assert isinstance(installed, list)
    assert f"pytest=={pytest.__version__}" in installed
    assert installed == sorted(installed)


SCRIPT = """
import sys
import zenmeta
from zenmeta.integrations.environment import EnvironmentComponent

zenmeta.configure(store=sys.argv[1], durability="immediate")
component = EnvironmentComponent(environment_variables=["DATABASE_URL", "SERVICE_API_TOKEN"])
with zenmeta.pipeline_run("script", components=[component]):
    pass
"""


@pytest.mark.slow
def test_a_script_run_from_another_folder_records_its_own_repository(tmp_path: Path) -> None:
    """The script's repository is described, not the working folder's; secrets in
    argv and in the listed variables never reach the database file."""
    repository = _repository(tmp_path / "repo")
    (repository / "pipeline.py").write_text(SCRIPT)
    elsewhere = _repository(tmp_path / "elsewhere")
    database = tmp_path / "store.db"
    url = f"sqlite:///{database}"
    secrets = ["zz-argv-password", "zz-argv-token", "zz-dsn-password", "zz-api-token"]
    argv = [url, "--password", secrets[0], f"--token={secrets[1]}", "--epochs", "3"]
    subprocess.run(
        [sys.executable, str(repository / "pipeline.py"), *argv],
        cwd=elsewhere,
        env={
            **os.environ,
            "DATABASE_URL": f"postgresql://app:{secrets[2]}@db/prod",
            "SERVICE_API_TOKEN": secrets[3],
        },
        check=True,
        timeout=120,
    )
    recorded = zenmeta.Client(url).list_runs()[0].metadata["environment"]
    assert recorded["git_root"] == str(repository)
    assert recorded["git_commit"] == _git(repository, "rev-parse", "HEAD")
    assert recorded["cwd"] == str(elsewhere)
    assert recorded["argv"] == [
        str(repository / "pipeline.py"),
        url,
        "--password",
        "***",
        "--token=***",
        "--epochs",
        "3",
    ]
    assert recorded["environment_variables"] == {
        "DATABASE_URL": "postgresql://app:***@db/prod",
        "SERVICE_API_TOKEN": "***",
    }
    zenmeta._store.close_stores()
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("store.db"))
    assert [secret for secret in secrets if secret.encode() in raw] == []


def test_a_hanging_git_is_cut_off_by_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each git call is bounded; a git that hangs just means no git fields."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\nsleep 10\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    started = time.perf_counter()
    metadata = _metadata(EnvironmentComponent(repository=tmp_path, git_timeout=0.2))
    assert time.perf_counter() - started < 2
    assert not [key for key in metadata if key.startswith("git_")]


def test_without_git_installed_the_git_fields_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No git executable is not an error."""
    monkeypatch.setenv("PATH", str(tmp_path))
    metadata = _metadata(EnvironmentComponent(repository=tmp_path))
    assert "python_version" in metadata
    assert not [key for key in metadata if key.startswith("git_")]


def test_only_allow_listed_environment_variables_are_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An allow-listed variable is recorded; any other is not, wherever it appears."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-record-me")
    metadata = _metadata(
        EnvironmentComponent(environment_variables=["CUDA_VISIBLE_DEVICES", "UNSET_VARIABLE"])
    )
    assert metadata["environment_variables"] == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "UNSET_VARIABLE": None,
    }
    assert "do-not-record-me" not in repr(metadata)


def test_a_script_is_recorded_by_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``__main__.__file__`` is the script; its folder is where git is asked."""
    repository = _repository(tmp_path / "repo")
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(repository / "train.py"))
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))  # imported only
    metadata = _metadata(EnvironmentComponent())
    assert metadata["source_type"] == "script"
    assert metadata["script"] == str(repository / "train.py")
    assert isinstance(metadata["script"], zenmeta.Path)
    assert metadata["git_commit"] == _git(repository, "rev-parse", "HEAD")


def test_a_notebook_is_recorded_by_its_session_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a Jupyter kernel the notebook's path comes from ``JPY_SESSION_NAME``."""
    shell = type("ZMQInteractiveShell", (), {})()  # what a kernel's get_ipython() returns
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/analysis.ipynb")
    metadata = _metadata(EnvironmentComponent())
    assert metadata["source_type"] == "notebook"
    assert metadata["notebook"] == "/home/me/analysis.ipynb"
    assert "script" not in metadata
