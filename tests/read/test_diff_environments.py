"""Diffs of real runs whose environments really differ: installed packages and git state.

Each run is recorded by its own Python process with the environment
component, as a user's script would be. The package sets differ because each
process has a different folder of real distributions on its path (tiny
``*.dist-info`` folders with a ``METADATA`` file, which is all
``importlib.metadata`` reads), and the git state because the second run
happens after a new commit, with a file left modified.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path as FilePath

import pytest

import zenmeta
from zenmeta._read.diff import MISSING

_RECORD = """
import sys, zenmeta
from zenmeta.integrations.environment import EnvironmentComponent

store, name, repository = sys.argv[1:4]
zenmeta.configure(store=store)
with zenmeta.pipeline_run("train", run_name=name,
                          components=[EnvironmentComponent(repository=repository)]):
    pass
zenmeta.flush()
"""


def _distribution(folder: FilePath, name: str, version: str) -> None:
    """A real installed distribution, as pip leaves one: ``name-version.dist-info``."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text("")


def _git(repository: FilePath, *arguments: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *arguments],
        cwd=repository,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def _record(store: str, name: str, repository: FilePath, packages: FilePath) -> None:
    script = packages.parent / "record.py"
    script.write_text(textwrap.dedent(_RECORD))
    environment = {**os.environ, "PYTHONPATH": str(packages)}
    environment.pop("ZENMETA_STORE", None)
    subprocess.run(
        [sys.executable, str(script), store, name, str(repository)],
        check=True,
        env=environment,
        timeout=120,
    )


@pytest.fixture
def store(tmp_path: FilePath) -> str:
    """Two runs: ``before`` (first commit, clean) and ``after`` (second commit, dirty),
    each with its own set of extra distributions."""
    url = f"sqlite:///{tmp_path}/diff.db"
    repository = tmp_path / "project"
    repository.mkdir()
    _git(repository, "init", "-q", "-b", "main")
    (repository / "train.py").write_text("print('v1')\n")
    _git(repository, "add", "train.py")
    _git(repository, "commit", "-q", "-m", "first")

    before = tmp_path / "before" / "site"
    _distribution(before, "zm-only-before", "0.1")
    _distribution(before, "zm-moving", "1.0")
    _distribution(before, "zm-steady", "3.3")
    _record(url, "before", repository, before)

    (repository / "train.py").write_text("print('v2')\n")
    _git(repository, "commit", "-q", "-am", "second")
    (repository / "train.py").write_text("print('v3, not committed')\n")
    after = tmp_path / "after" / "site"
    _distribution(after, "zm-moving", "2.0")
    _distribution(after, "zm-steady", "3.3")
    _distribution(after, "zm-only-after", "0.2")
    _record(url, "after", repository, after)
    return url


def test_diff_of_two_real_runs_shows_packages_and_git_state(store: str) -> None:
    """Added, removed and changed distributions, the new commit and the dirty tree."""
    client = zenmeta.Client(store)
    first, second = client.get_run("before"), client.get_run("after")
    commits = (first.metadata["environment"]["git_commit"],
               second.metadata["environment"]["git_commit"])  # fmt: skip
    assert all(isinstance(commit, str) and len(commit) == 40 for commit in commits)
    diff = client.diff_runs("before", "after")
    environment = diff.metadata["environment"]
    assert environment["installed_packages.zm-only-before"] == ("0.1", MISSING)
    assert environment["installed_packages.zm-only-after"] == (MISSING, "0.2")
    assert environment["installed_packages.zm-moving"] == ("1.0", "2.0")
    assert "installed_packages.zm-steady" not in environment
    assert environment["git_commit"] == commits and commits[0] != commits[1]
    assert environment["git_dirty"] == (False, True)
    assert environment["git_changed_files"] == (0, 1)
    assert "git_branch" not in environment  # main in both
    assert "python_version" not in environment


def test_runs_diff_markdown_says_what_changed_between_the_real_runs(store: str) -> None:
    """``zenmeta runs diff --markdown`` from the command line, as pasted into a PR."""
    done = subprocess.run(
        [sys.executable, "-m", "zenmeta", "--store", store, "runs", "diff", "before", "after",
         "--markdown"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert "| `installed_packages.zm-only-before` | `0.1` | — | removed |" in lines
    assert "| `installed_packages.zm-only-after` | — | `0.2` | added |" in lines
    assert "| `installed_packages.zm-moving` | `1.0` | `2.0` | changed |" in lines
    assert "| `git_dirty` | `false` | `true` | changed |" in lines
    commit_rows = [line for line in lines if line.startswith("| `git_commit` |")]
    assert len(commit_rows) == 1 and commit_rows[0].endswith("| changed |")
    assert "zm-steady" not in done.stdout
