"""Where and with what a run ran: host, interpreter, entry point, git, packages.

The fields are those Sacred's host info and MLflow's system tags record, once
per run. Environment variables are never read wholesale (they hold secrets):
only the names given in ``environment_variables`` are recorded.

Git is read for each run, from the repository of the script or notebook
being run (not the working folder), because the code can change between
runs of one process: a notebook or a sweep loop commits and edits as it goes.
It stays cheap (``git_state``): the answer is cached on the stat of
``.git/HEAD``, the branch ref it points at, ``.git/index`` and every tracked
file, which costs a few hundred microseconds for a typical repository,
against ~20 ms for the git commands. A repository with more than
``STAT_LIMIT`` tracked files is asked again at each run.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple
from uuid import UUID

from zenmeta import MetadataType, Path, StackComponent, Uri, redact

from ._urls import without_credentials

__all__ = ["EnvironmentComponent", "git_info", "DEFAULT_PACKAGES", "STAT_LIMIT", "DIFF_LIMIT"]

DEFAULT_PACKAGES = ("numpy", "pandas", "scikit-learn", "torch", "mlflow")
STAT_LIMIT = 20_000
"""Above this many tracked files, git is asked at every run instead of checking stats."""
DIFF_LIMIT = 64 * 1024
"""The recorded diff (``record_diff=True``) is cut to fit this many bytes once stored."""
_RACY_NS = 100_000_000
"""A file changed this recently may change again within one timestamp tick,
unseen by its stat (git's "racy clean" problem): such an answer is not reused."""

_git_cache: dict[str, _GitState] = {}  # by repository root
_git_lock = threading.Lock()


class _GitState(NamedTuple):
    signature: tuple[object, ...]
    tracked: tuple[str, ...] | None  # absolute paths; None: too many to check by stat
    file_stats: tuple[tuple[int, int, int] | None, ...]
    racy: bool
    info: dict[str, MetadataType]
    diff: str | None


def _git(arguments: Sequence[str], directory: str, timeout: float) -> str | None:
    """One git command's output, or ``None`` if git is missing, fails or hangs."""
    done = _git_bytes(arguments, directory, timeout)
    return None if done is None else done.decode("utf-8", "replace").strip()


def _git_bytes(arguments: Sequence[str], directory: str, timeout: float) -> bytes | None:
    environment = {
        **os.environ,
        "GIT_OPTIONAL_LOCKS": "0",  # git must not take the index lock from the user
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    try:
        done = subprocess.run(
            ["git", *arguments],
            cwd=directory,
            capture_output=True,
            timeout=timeout,
            env=environment,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


class _Repository(NamedTuple):
    root: str
    git_dir: str
    common_dir: str


def _find_repository(directory: str) -> _Repository | None:
    """The repository holding ``directory``, found by walking up to ``.git``
    (a folder, or a file pointing at one: worktrees and submodules)."""
    current = os.path.abspath(directory)
    while True:
        dot_git = os.path.join(current, ".git")
        if os.path.isdir(dot_git):
            return _Repository(current, dot_git, _common_dir(dot_git))
        if os.path.isfile(dot_git):
            try:
                with open(dot_git, encoding="utf-8") as pointer:
                    line = pointer.read().strip()
            except OSError:
                return None
            if line.startswith("gitdir:"):
                git_dir = os.path.normpath(os.path.join(current, line[7:].strip()))
                return _Repository(current, git_dir, _common_dir(git_dir))
            return None
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _common_dir(git_dir: str) -> str:
    try:
        with open(os.path.join(git_dir, "commondir"), encoding="utf-8") as pointer:
            return os.path.normpath(os.path.join(git_dir, pointer.read().strip()))
    except OSError:
        return git_dir


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size, found.st_ino)


def _signature(repository: _Repository) -> tuple[object, ...]:
    """HEAD (its text and stat), the ref it names, packed refs, index and config."""
    head = os.path.join(repository.git_dir, "HEAD")
    try:
        with open(head, encoding="utf-8") as file:
            content = file.read().strip()
    except OSError:
        content = ""
    ref = None
    if content.startswith("ref:"):
        ref = _stat(os.path.join(repository.common_dir, content[4:].strip()))
    return (
        content,
        _stat(head),
        ref,
        _stat(os.path.join(repository.common_dir, "packed-refs")),
        _stat(os.path.join(repository.git_dir, "index")),
        _stat(os.path.join(repository.common_dir, "config")),
    )


def _file_stats(paths: Sequence[str]) -> tuple[tuple[int, int, int] | None, ...]:
    return tuple(_stat(path) for path in paths)


def _files_unchanged(paths: Sequence[str], before: Sequence[tuple[int, int, int] | None]) -> bool:
    """The tracked files' stats as recorded; stops at the first change.

    The hot loop of a warm run: ~1-3 µs per tracked file.
    """
    stat = os.stat
    for path, recorded in zip(paths, before, strict=True):
        try:
            now = stat(path)
        except OSError:
            if recorded is not None:
                return False
            continue
        if (
            recorded is None
            or now.st_mtime_ns != recorded[0]
            or now.st_size != recorded[1]
            or now.st_ino != recorded[2]
        ):
            return False
    return True


def _is_racy(stats: Sequence[object], now_ns: int) -> bool:
    return any(isinstance(part, tuple) and part[0] >= now_ns - _RACY_NS for part in stats)


def git_info(
    directory: str, timeout: float = 2.0, *, diff: bool = False
) -> dict[str, MetadataType]:
    """Commit, branch, dirty state and remote of the repository holding ``directory``.

    Read afresh whenever HEAD, its ref, the index or a tracked file changed;
    otherwise the previous answer is reused. Empty outside a repository.
    With ``diff``, also ``git_diff``: the text of ``git diff HEAD``, cut to
    ``DIFF_LIMIT``.
    """
    repository = _find_repository(directory)
    if repository is None:
        return {}
    cached = _git_cache.get(repository.root)
    if (
        cached is not None
        and not cached.racy
        and cached.tracked is not None
        and _signature(repository) == cached.signature
        and _files_unchanged(cached.tracked, cached.file_stats)
    ):
        return _with_diff(cached, diff)
    with _git_lock:
        state = _probe_git(repository, timeout)
        _git_cache[repository.root] = state
    return _with_diff(state, diff)


def _with_diff(state: _GitState, diff: bool) -> dict[str, MetadataType]:
    info = dict(state.info)
    if diff and state.diff is not None:
        info["git_diff"], truncated = _capped(state.diff)
        if truncated:
            info["git_diff_truncated"] = True
    return info


def _capped(text: str) -> tuple[str, bool]:
    """``text`` cut so that its stored JSON fits ``DIFF_LIMIT`` bytes."""
    if len(json.dumps(text)) <= DIFF_LIMIT:
        return text, False
    cut = text[: DIFF_LIMIT // 2]
    while len(json.dumps(cut)) > DIFF_LIMIT - 64:
        cut = cut[: len(cut) * 3 // 4]
    return cut, True


def _probe_git(repository: _Repository, timeout: float) -> _GitState:
    started = time.time_ns()
    root = repository.root
    listing = _git_bytes(["ls-files", "-z"], root, timeout)
    # Without an answer (no git, or one that hangs) there is nothing to stat:
    # the empty answer is kept until HEAD or the index change, so a hanging
    # git costs its timeout once, not at every run.
    tracked: tuple[str, ...] | None = ()
    if listing is not None:
        names = listing.decode("utf-8", "surrogateescape").split("\0")
        paths = [os.path.join(root, name) for name in names if name]
        tracked = tuple(paths) if len(paths) <= STAT_LIMIT else None
    # Stats before the git commands: a change made meanwhile shows at the next run.
    signature = _signature(repository)
    file_stats = _file_stats(tracked or ())
    info: dict[str, MetadataType] = {"git_root": Path(root)}
    commit = _git(["rev-parse", "--verify", "-q", "HEAD"], root, timeout)
    info["git_commit"] = commit
    info["git_branch"] = _git(["symbolic-ref", "--short", "-q", "HEAD"], root, timeout)
    diff_text: str | None = None
    if commit is None:
        info["git_dirty"] = None
    else:
        raw = _git_bytes(["diff", "HEAD", "--no-color", "--no-ext-diff", "--binary"], root, timeout)
        if raw is None:
            info["git_dirty"] = None
        else:
            changed = raw.count(b"\ndiff --git ") + raw.startswith(b"diff --git ")
            info["git_dirty"] = changed > 0
            info["git_changed_files"] = changed
            info["git_diff_sha256"] = hashlib.sha256(raw).hexdigest() if changed else None
            diff_text = raw[: 4 * DIFF_LIMIT].decode("utf-8", "replace")  # enough to cut from
    remote = _git(["config", "--get", "remote.origin.url"], root, timeout)
    if remote:
        shown = without_credentials(remote)
        info["git_remote"] = Uri(shown) if "://" in shown else shown
    else:
        info["git_remote"] = None
    if listing is None and commit is None:
        info = {}  # git is missing, hangs, or this is no repository it knows
    racy = _is_racy(signature, started) or _is_racy(file_stats, started)
    return _GitState(signature, tracked, file_stats, racy, info, diff_text)


def _in_kernel() -> bool:
    """Running as a Jupyter kernel, not merely with ipykernel imported."""
    ipython = sys.modules.get("IPython")
    get_shell = getattr(ipython, "get_ipython", None)
    shell = get_shell() if callable(get_shell) else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _entry_point() -> dict[str, MetadataType]:
    """The notebook or script that started the process, best effort."""
    main = sys.modules.get("__main__")
    if _in_kernel():
        notebook = (
            os.environ.get("JPY_SESSION_NAME")
            or getattr(main, "__vsc_ipynb_file__", None)
            or getattr(main, "__session__", None)
        )
        found: dict[str, MetadataType] = {"source_type": "notebook"}
        if isinstance(notebook, str) and notebook:
            found["notebook"] = Path(notebook)
        return found
    script = getattr(main, "__file__", None)
    if isinstance(script, str) and script:
        return {"source_type": "script", "script": Path(os.path.abspath(script))}
    return {"source_type": "interactive"}


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no passwd entry (some containers)
        return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


_packages_cache: dict[tuple[object, ...], tuple[str, ...]] = {}


def installed_packages() -> tuple[str, ...]:
    """Every distribution the running interpreter can import, as sorted
    ``name==version`` entries; read again when a folder on ``sys.path``
    changes (``%pip install`` in a notebook adds one to site-packages)."""
    key = (tuple(sys.path), *(_stat(entry) for entry in sys.path if entry))
    found = _packages_cache.get(key)
    if found is None:
        versions: dict[str, str] = {}
        for distribution in importlib.metadata.distributions():
            name = distribution.metadata["Name"]
            if name and name not in versions:  # the first on sys.path is the one imported
                versions[name] = distribution.version
        found = tuple(sorted(f"{name}=={version}" for name, version in versions.items()))
        _packages_cache.clear()
        _packages_cache[key] = found
    return found


def _command_line(arguments: Sequence[str]) -> list[MetadataType]:
    """``sys.argv`` as recorded: a value given after a secret-named flag
    (``--password hunter2``) is masked; the rest is masked by zenmeta's
    redaction like any recorded text (``--token=…``, URLs with passwords)."""
    shown: list[MetadataType] = []
    for index, argument in enumerate(arguments):
        previous = arguments[index - 1] if index else ""
        if previous.startswith("-") and "=" not in previous and not argument.startswith("-"):
            argument = redact(argument, key=previous.lstrip("-"))
        shown.append(argument)
    return shown


class EnvironmentComponent(StackComponent):
    """Record the environment of each run under the source ``environment``.

    - ``packages``: distributions whose versions to record under ``packages``
      (``None`` for one not installed); default ``DEFAULT_PACKAGES``.
    - ``installed_packages``: also record every installed distribution of
      the running interpreter as ``name==version`` (default true).
    - ``environment_variables``: the only variables recorded, by name.
    - ``repository``: the folder whose git repository is described; default
      the running script's or notebook's folder, else the working directory.
      Each git call is bounded by ``git_timeout`` seconds; git is read for
      each run, cheaply (see the module).
    - ``record_diff``: also record ``git diff HEAD`` itself, cut to 64 KiB
      (``git_diff_truncated`` says when). Off by default: a diff can hold
      anything, and only secrets in known formats are masked.
    """

    flavor = "environment"

    def __init__(
        self,
        name: str | None = None,
        *,
        packages: Sequence[str] | None = None,
        installed_packages: bool = True,
        environment_variables: Sequence[str] = (),
        repository: str | os.PathLike[str] | None = None,
        git_timeout: float = 2.0,
        record_diff: bool = False,
    ) -> None:
        super().__init__(name)
        self.packages = tuple(DEFAULT_PACKAGES if packages is None else packages)
        self.installed_packages = installed_packages
        self.environment_variables = tuple(environment_variables)
        self.repository = None if repository is None else os.fspath(repository)
        self.git_timeout = git_timeout
        self.record_diff = record_diff
        self._static: dict[str, MetadataType] | None = None
        self._versions: tuple[tuple[str, ...], dict[str, MetadataType]] | None = None

    def get_pipeline_run_metadata(self, run_id: UUID) -> dict[str, MetadataType]:
        """Everything at once; the parts that cannot change are computed once."""
        entry = _entry_point()
        metadata = dict(self._static_info())
        metadata["pid"] = os.getpid()
        metadata["cwd"] = Path(os.getcwd())
        metadata["argv"] = _command_line(sys.argv)
        metadata.update(entry)
        metadata.update(self._package_info())
        metadata.update(git_info(self._repository(entry), self.git_timeout, diff=self.record_diff))
        if self.environment_variables:
            metadata["environment_variables"] = {
                variable: os.environ.get(variable) for variable in self.environment_variables
            }
        return metadata

    def _repository(self, entry: dict[str, MetadataType]) -> str:
        if self.repository is not None:
            return self.repository
        source = entry.get("script") or entry.get("notebook")
        if isinstance(source, str) and os.path.isabs(source):
            return os.path.dirname(source)
        return os.getcwd()

    def _package_info(self) -> dict[str, MetadataType]:
        installed = installed_packages()
        if self._versions is None or self._versions[0] is not installed:
            found: dict[str, MetadataType] = {
                "packages": {package: _version(package) for package in self.packages}
            }
            if self.installed_packages:
                found["installed_packages"] = list(installed)
            self._versions = (installed, found)
        return self._versions[1]

    def _static_info(self) -> dict[str, MetadataType]:
        if self._static is None:
            from zenmeta import __version__

            self._static = {
                "python_version": platform.python_version(),
                "python_implementation": platform.python_implementation(),
                "platform": platform.platform(),
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "hostname": socket.gethostname(),
                "user": _user(),
                "executable": Path(sys.executable),
                "zenmeta_version": __version__,
            }
        return self._static
