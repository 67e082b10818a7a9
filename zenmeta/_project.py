"""The project a process works in: its root folder and its ``[tool.zenmeta]`` table.

The root is the nearest folder, from the working folder upward, that holds a
``pyproject.toml`` or a ``.git`` (the working folder itself when none does),
so one project started from any of its folders finds one store and one
configuration. Both the default store and the configured components read
``[tool.zenmeta]`` through here; each working folder is looked up once.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, NamedTuple

from ._errors import ConfigurationError

__all__ = [
    "Project",
    "absolute_path",
    "current_project",
    "forget_projects",
    "prepare_working_folder",
    "working_folder",
]


class Project(NamedTuple):
    """Where the project is and what its ``pyproject.toml`` says to zenmeta."""

    root: str
    pyproject: str | None
    """The root's ``pyproject.toml``, if it has one."""
    table: dict[str, Any]
    """Its ``[tool.zenmeta]`` table, empty when there is none."""


_projects: dict[str, Project] = {}  # by working folder
_lock = threading.Lock()


def current_project() -> Project:
    """The project of the working folder now (cached per folder)."""
    directory = working_folder()
    found = _projects.get(directory)
    if found is None:
        found = _find(directory)
        with _lock:
            _projects[directory] = found
    return found


def working_folder() -> str:
    """``os.getcwd()``, asked without letting go of the interpreter lock.

    Every run start asks (a relative store and the project follow the working
    folder of now). ``os.getcwd`` releases the lock for its system call; with
    a writer thread waiting for the lock, the caller then waits for the
    writer's turn and for a core to wake it up: 17 µs a run on average, the
    median 0.75 µs and the slowest percent over 50 µs (a loop of runs into
    batched SQLite, on a 2-core VM). ``getcwd`` never blocks, so libc's is
    called through ``ctypes.PyDLL``, which keeps the lock; ``os.getcwd`` is
    the fallback wherever that is missing or fails.
    """
    held = _held_getcwd
    if not held:
        if not _read_once:  # a process's first run: no import of ctypes (~3 ms) on its way
            _read_once.append(True)
            return os.getcwd()
        held = _load_held_getcwd()
    if held[0] is not None:
        raw = held[0](held[1], len(held[1]))
        if raw is not None:
            return os.fsdecode(raw)
    return os.getcwd()  # no libc getcwd, a path too long, or a folder gone: os says why


_held_getcwd: list[Any] = []
"""[libc getcwd or None, its buffer]. One buffer serves every thread: the call
and the copy of its result into ``bytes`` both happen under the lock."""


_read_once: list[bool] = []
"""Not empty once ``working_folder`` has been asked (with ``os.getcwd``)."""


def prepare_working_folder() -> None:
    """Load the held ``getcwd`` now, off the caller's path: the thread that
    opens a store calls this once it is open, before the next run asks."""
    if not _held_getcwd:
        _load_held_getcwd()


def _load_held_getcwd() -> list[Any]:
    getcwd: Any = None
    buffer: Any = b""
    if os.name == "posix":
        try:
            import ctypes  # ~3 ms: at the second run, or on a store's opening thread

            getcwd = ctypes.PyDLL(None).getcwd
            getcwd.restype = ctypes.c_char_p
            getcwd.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
            buffer = ctypes.create_string_buffer(4096)
        except Exception:  # no ctypes, no libc symbol: os.getcwd it is
            getcwd = None
    _held_getcwd[:] = [getcwd, buffer]
    return _held_getcwd


def absolute_path(path: str) -> str:
    """``os.path.abspath``, with the working folder from ``working_folder()``."""
    if not os.path.isabs(path):
        path = os.path.join(working_folder(), path)
    return os.path.normpath(path)


def forget_projects() -> None:
    """Read ``pyproject.toml`` files again on next use; the configuration reset calls this."""
    with _lock:
        _projects.clear()


def _find(directory: str) -> Project:
    current = os.path.abspath(directory)
    while True:
        candidate = os.path.join(current, "pyproject.toml")
        if os.path.isfile(candidate):
            return Project(current, candidate, _read_table(candidate))
        if os.path.exists(os.path.join(current, ".git")):
            return Project(current, None, {})
        parent = os.path.dirname(current)
        if parent == current:
            return Project(os.path.abspath(directory), None, {})
        current = parent


def _read_table(path: str) -> dict[str, Any]:
    with open(path, "rb") as file:
        raw = file.read()
    if b"tool.zenmeta" not in raw:
        return {}  # the common case, decided without a TOML parser
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigurationError(
                f"{path} configures zenmeta, but reading it on Python 3.10 needs tomli "
                "(pip install tomli); or use the ZENMETA_* environment variables instead"
            ) from None
    try:
        table = tomllib.loads(raw.decode("utf-8")).get("tool", {}).get("zenmeta", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path} cannot be read: {error}") from error
    if not isinstance(table, dict):
        raise ConfigurationError(f"[tool.zenmeta] in {path} must be a table")
    return table
