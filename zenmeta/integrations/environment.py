"""Where and with what a run ran: host, interpreter, entry point, git, packages.

The fields are those Sacred's host info and MLflow's system tags record, once
per run. Environment variables are never read wholesale (they hold secrets):
only the names given in ``environment_variables`` are recorded.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from uuid import UUID

from zenmeta import MetadataType, Path, StackComponent, Uri

from ._urls import without_credentials

__all__ = ["EnvironmentComponent", "git_info", "DEFAULT_PACKAGES"]

DEFAULT_PACKAGES = ("numpy", "pandas", "scikit-learn", "torch", "mlflow")

_git_cache: dict[str, dict[str, MetadataType]] = {}
_git_lock = threading.Lock()


def _git(arguments: Sequence[str], directory: str, timeout: float) -> str | None:
    """One git command's output, or ``None`` if git is missing, fails or hangs."""
    environment = {
        **os.environ,
        "GIT_OPTIONAL_LOCKS": "0",  # `git status` must not take the index lock from the user
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    try:
        done = subprocess.run(
            ["git", *arguments],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_info(directory: str, timeout: float = 2.0) -> dict[str, MetadataType]:
    """Commit, branch, dirty flag and remote of the repository holding ``directory``.

    Cached per directory for the life of the process: the code that is
    running does not change under it. Empty outside a repository.
    """
    key = os.path.abspath(directory)
    cached = _git_cache.get(key)
    if cached is not None:
        return cached
    with _git_lock:
        cached = _git_cache.get(key)
        if cached is None:
            cached = _git_cache[key] = _probe_git(key, timeout)
        return cached


def _probe_git(directory: str, timeout: float) -> dict[str, MetadataType]:
    root = _git(["rev-parse", "--show-toplevel"], directory, timeout)
    if root is None:
        return {}
    info: dict[str, MetadataType] = {"git_root": Path(root)}
    info["git_commit"] = _git(["rev-parse", "--verify", "-q", "HEAD"], directory, timeout)
    info["git_branch"] = _git(["symbolic-ref", "--short", "-q", "HEAD"], directory, timeout)
    status = _git(["status", "--porcelain", "--untracked-files=no"], directory, timeout)
    info["git_dirty"] = None if status is None else bool(status)
    remote = _git(["config", "--get", "remote.origin.url"], directory, timeout)
    if remote:
        shown = without_credentials(remote)
        info["git_remote"] = Uri(shown) if "://" in shown else shown
    else:
        info["git_remote"] = None
    return info


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


class EnvironmentComponent(StackComponent):
    """Record the environment of each run, once, under the source ``environment``.

    - ``packages``: distributions whose versions to record (``None`` for one
      not installed); default ``DEFAULT_PACKAGES``.
    - ``environment_variables``: the only variables recorded, by name.
    - ``repository``: the folder whose git repository is described; default
      the script's folder, else the working directory. Each git call is
      bounded by ``git_timeout`` seconds; the answer is cached per process.
    """

    flavor = "environment"

    def __init__(
        self,
        name: str | None = None,
        *,
        packages: Sequence[str] | None = None,
        environment_variables: Sequence[str] = (),
        repository: str | os.PathLike[str] | None = None,
        git_timeout: float = 2.0,
    ) -> None:
        super().__init__(name)
        self.packages = tuple(DEFAULT_PACKAGES if packages is None else packages)
        self.environment_variables = tuple(environment_variables)
        self.repository = None if repository is None else os.fspath(repository)
        self.git_timeout = git_timeout
        self._static: dict[str, MetadataType] | None = None

    def get_pipeline_run_metadata(self, run_id: UUID) -> dict[str, MetadataType]:
        """Everything at once; the parts that cannot change are computed once."""
        entry = _entry_point()
        metadata = dict(self._static_info())
        metadata["pid"] = os.getpid()
        metadata["cwd"] = Path(os.getcwd())
        metadata.update(entry)
        metadata.update(git_info(self._repository(entry), self.git_timeout))
        if self.environment_variables:
            metadata["environment_variables"] = {
                variable: os.environ.get(variable) for variable in self.environment_variables
            }
        return metadata

    def _repository(self, entry: dict[str, MetadataType]) -> str:
        if self.repository is not None:
            return self.repository
        script = entry.get("script")
        return os.path.dirname(script) if isinstance(script, str) else os.getcwd()

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
                "packages": {package: _version(package) for package in self.packages},
            }
        return self._static
