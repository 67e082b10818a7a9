"""Components named by configuration: ``ZENMETA_COMPONENTS`` or ``[tool.zenmeta]``.

A flavor name is looked up in the ``zenmeta.components`` entry-point group,
where zenmeta's own components are declared exactly like third-party ones::

    [project.entry-points."zenmeta.components"]
    mytracker = "mypackage.tracking:MyTracker"

``ZENMETA_COMPONENTS="mlflow,environment"`` wins when set (even empty);
otherwise ``components = ["mlflow", "environment"]`` under ``[tool.zenmeta]``
in the nearest ``pyproject.toml`` from the working directory upward. Each
flavor is instantiated with no arguments, once per process.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

from .._errors import ConfigurationError, ZenmetaError, describe_error, safe_text

__all__ = [
    "ENTRY_POINT_GROUP",
    "ENVIRONMENT_VARIABLE",
    "configured_flavors",
    "configured_components",
    "available_flavors",
    "reset_flavors",
]

ENTRY_POINT_GROUP = "zenmeta.components"
ENVIRONMENT_VARIABLE = "ZENMETA_COMPONENTS"

_lock = threading.Lock()
_pyproject_flavors: dict[str, tuple[str, ...]] = {}  # by working directory
_instances: dict[str, object] = {}  # by flavor name
_stacks: dict[tuple[str, ...], tuple[object, ...]] = {}  # by configuration value
_entry_points: dict[str, EntryPoint] = {}
_NO_COMPONENTS: tuple[object, ...] = ()


def _split(value: str) -> tuple[str, ...]:
    """``"mlflow, environment"`` or ``"mlflow environment"``: names in order, once."""
    return tuple(dict.fromkeys(value.replace(",", " ").split()))


def configured_flavors() -> tuple[str, ...]:
    """The flavor names configured now (the variable is read at each call)."""
    value = os.environ.get(ENVIRONMENT_VARIABLE)
    if value is not None:
        return _split(value)
    directory = os.getcwd()
    flavors = _pyproject_flavors.get(directory)
    if flavors is None:
        flavors = _pyproject_flavors[directory] = _read_pyproject(directory)
    return flavors


def _read_pyproject(directory: str) -> tuple[str, ...]:
    """``[tool.zenmeta] components`` of the nearest pyproject.toml, if any."""
    path = _nearest_pyproject(directory)
    if path is None:
        return ()
    with open(path, "rb") as file:
        raw = file.read()
    if b"tool.zenmeta" not in raw:
        return ()  # the common case, decided without a TOML parser
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigurationError(
                f"{path} configures zenmeta, but reading it on Python 3.10 needs tomli "
                f"(pip install tomli); or set {ENVIRONMENT_VARIABLE} instead"
            ) from None
    try:
        table = tomllib.loads(raw.decode("utf-8")).get("tool", {}).get("zenmeta", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path} cannot be read: {safe_text(error)}") from error
    components = table.get("components", [])
    if isinstance(components, str):
        return _split(components)
    if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
        raise ConfigurationError(
            f"[tool.zenmeta] components in {path} must be a list of flavor names, "
            f"not {components!r}"
        )
    return _split(",".join(components))


def _nearest_pyproject(directory: str) -> str | None:
    current = os.path.abspath(directory)
    while True:
        candidate = os.path.join(current, "pyproject.toml")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def available_flavors() -> dict[str, EntryPoint]:
    """Every flavor installed in the ``zenmeta.components`` group, by name."""
    import importlib.metadata  # ~25 ms: only when a flavor is configured

    with _lock:
        if not _entry_points:
            for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                _entry_points.setdefault(entry_point.name, entry_point)
        return dict(_entry_points)


def _instantiate(flavor: str) -> object:
    instance = _instances.get(flavor)
    if instance is not None:
        return instance
    entry_point = available_flavors().get(flavor)
    if entry_point is None:
        known = ", ".join(sorted(available_flavors())) or "none installed"
        raise ConfigurationError(
            f"unknown component flavor {flavor!r} (known flavors: {known}); a package "
            f"provides one under the entry-point group {ENTRY_POINT_GROUP!r}"
        )
    try:
        factory: Any = entry_point.load()
        instance = factory() if callable(factory) else factory
    except ZenmetaError:
        raise  # MissingExtraError names the extra to install
    except Exception as error:
        raise ConfigurationError(
            f"component flavor {flavor!r} ({entry_point.value}) cannot be created: "
            f"{': '.join(describe_error(error))}"
        ) from error
    with _lock:
        return _instances.setdefault(flavor, instance)


def configured_components() -> tuple[object, ...]:
    """The configured flavors' components; the same tuple while the value holds."""
    flavors = configured_flavors()
    if not flavors:
        return _NO_COMPONENTS
    components = _stacks.get(flavors)
    if components is None:
        components = tuple(_instantiate(flavor) for flavor in flavors)
        with _lock:
            components = _stacks.setdefault(flavors, components)
    return components


def reset_flavors() -> None:
    """Forget instances, parsed files and installed entry points; tests call this."""
    with _lock:
        _pyproject_flavors.clear()
        _instances.clear()
        _stacks.clear()
        _entry_points.clear()
