"""Components named by configuration: ``ZENMETA_COMPONENTS`` or ``[tool.zenmeta]``.

A flavor name is looked up in the ``zenmeta.components`` entry-point group,
where zenmeta's own components are declared exactly like third-party ones::

    [project.entry-points."zenmeta.components"]
    mytracker = "mypackage.tracking:MyTracker"

``ZENMETA_COMPONENTS="mlflow,environment"`` wins when set (even empty);
otherwise ``components = ["mlflow", "environment"]`` under ``[tool.zenmeta]``
in the project's ``pyproject.toml`` (see ``zenmeta._project``). Each
flavor is instantiated with no arguments, once per process.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

from .._config import environment
from .._errors import ConfigurationError, ZenmetaError, describe_error
from .._project import current_project, forget_projects

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
_instances: dict[str, object] = {}  # by flavor name
_stacks: dict[tuple[str, ...], tuple[object, ...]] = {}  # by configuration value
_entry_points: dict[str, EntryPoint] = {}
_NO_COMPONENTS: tuple[object, ...] = ()


def _split(value: str) -> tuple[str, ...]:
    """``"mlflow, environment"`` or ``"mlflow environment"``: names in order, once."""
    return tuple(dict.fromkeys(value.replace(",", " ").split()))


def configured_flavors() -> tuple[str, ...]:
    """The flavor names configured now (the variable is read at each call)."""
    value = environment(ENVIRONMENT_VARIABLE)
    if value is not None:
        return _split(value)
    project = current_project()
    components = project.table.get("components")
    if components is None or components == []:  # the common case: nothing to check
        return ()
    if isinstance(components, str):
        return _split(components)
    if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
        raise ConfigurationError(
            f"[tool.zenmeta] components in {project.pyproject} must be a list of flavor "
            f"names, not {components!r}"
        )
    return _split(",".join(components))


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
        forget_projects()
        _instances.clear()
        _stacks.clear()
        _entry_points.clear()
