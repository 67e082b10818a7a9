"""The errors zenmeta raises, all under one base class.

    ZenmetaError
    ├── NoActiveContextError   get_step_context()/log_metadata() outside a step or run
    ├── RunStateError          a run entered twice, or ended twice
    ├── ComponentError         a component hook raised (strict mode only)
    ├── MetadataError          a value could not be kept (strict mode only)
    ├── ConfigurationError     a bad setting, an unknown component flavor
    ├── StoreError             the store could not be written or read
    │   └── StoreNotFoundError a reader was pointed at a store that does not exist
    ├── RunNotFoundError       no run matches an id, prefix or name (also a LookupError)
    ├── CarrierError           a carrier that cannot be read, or whose store is out of reach
    └── QueryError             a ``where`` filter that does not parse (also a ValueError)

Tracking never raises into the user's step except for misuse of the API, or
in strict mode, which exists so that tests see every fault as an exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID

__all__ = [
    "ZenmetaError",
    "NoActiveContextError",
    "RunStateError",
    "ComponentError",
    "MetadataError",
    "ConfigurationError",
    "StoreError",
    "StoreNotFoundError",
    "RunNotFoundError",
    "MissingExtraError",
    "CarrierError",
    "QueryError",
    "describe_error",
    "safe_text",
]


class ZenmetaError(Exception):
    """Base of every error zenmeta raises on purpose."""


class NoActiveContextError(ZenmetaError, LookupError):
    """There is no current step (or run) where one is required."""


class RunStateError(ZenmetaError):
    """A run was used in a state that does not allow it."""

    def __init__(self, message: str, *, run_id: UUID | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class ComponentError(ZenmetaError):
    """A component's hook raised; raised only in strict mode."""

    def __init__(self, message: str, *, component: str, hook: str) -> None:
        super().__init__(message)
        self.component = component
        self.hook = hook


class MetadataError(ZenmetaError, ValueError):
    """A metadata value was dropped; raised only in strict mode."""

    def __init__(self, message: str, *, key: str, source: str) -> None:
        super().__init__(message)
        self.key = key
        self.source = source


class ConfigurationError(ZenmetaError, ValueError):
    """A setting or a component name that zenmeta cannot use."""


class StoreError(ZenmetaError):
    """The store failed; raised to the user only in strict mode."""


class StoreNotFoundError(StoreError, LookupError):
    """A reader named a store that does not exist; readers never create one."""


class RunNotFoundError(ZenmetaError, LookupError):
    """No run, or more than one, matches what the reader asked for."""


class MissingExtraError(ZenmetaError, ImportError):
    """An optional library is not installed; the message names the extra."""

    def __init__(self, library: str, extra: str) -> None:
        super().__init__(
            f"{library} is not installed; install it with: pip install 'zenmeta[{extra}]'"
        )
        self.library = library
        self.extra = extra


class CarrierError(ZenmetaError, ValueError):
    """A carrier's text form that cannot be read, or a carrier this process
    cannot honour (its store is out of reach from here)."""


class QueryError(ZenmetaError, ValueError):
    """A ``where`` filter that cannot be read; ``position`` is where, from 0."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.position = position


def safe_text(value: object, limit: int = 10_000) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` raises or lies.

    The one way zenmeta describes a user's object: a lazy message template
    that fails to render must never turn into an error of zenmeta's.
    """
    try:
        text = str(value)
        if not isinstance(text, str):
            raise TypeError("__str__ returned a non-string")
        text = str.__str__(text)
    except Exception as error:  # describing must never raise
        try:
            kind = type(error).__name__
        except Exception:  # pragma: no cover - a broken metaclass
            kind = "error"
        return f"<{_type_name(value)}: str() raised {kind}>"
    return text if len(text) <= limit else text[:limit] + "…"


def describe_error(error: BaseException) -> tuple[str, str]:
    """An exception's type name and message, neither of which can raise."""
    return _type_name(error), safe_text(error)


def _type_name(value: object) -> str:
    try:
        return str.__str__(type(value).__name__)
    except Exception:  # pragma: no cover - a broken metaclass
        return "object"
