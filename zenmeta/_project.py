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

__all__ = ["Project", "current_project", "forget_projects"]


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
    directory = os.getcwd()
    found = _projects.get(directory)
    if found is None:
        found = _find(directory)
        with _lock:
            _projects[directory] = found
    return found


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
