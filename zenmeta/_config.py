"""All of zenmeta's process-wide settings, in one place with a reset.

A setting given to ``configure()`` wins; otherwise its environment variable
is read each time it is needed, so changing the variable between runs takes
effect without restarting the process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from ._errors import ConfigurationError
from ._records import RecordStore

if TYPE_CHECKING:
    from ._redaction import Rules

RedactSpec = bool | str | Mapping[str, Sequence[str]]
"""What ``configure(redact=...)`` takes (see ``_redaction.parse_rules``)."""

__all__ = ["configure", "reset_configuration", "settings", "Durability", "RedactSpec"]

Durability = Literal["batched", "immediate"]
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


class _Settings:
    """What ``configure()`` was given; ``None`` means "use the default"."""

    __slots__ = ("durability", "implicit_runs", "redact", "store", "strict")

    def __init__(self) -> None:
        self.store: str | RecordStore | None = None
        self.strict: bool | None = None
        self.implicit_runs: bool | None = None
        self.durability: Durability | None = None
        self.redact: RedactSpec | None = None


_configured = _Settings()
_lock = threading.Lock()


def configure(
    *,
    store: str | RecordStore | _Unset | None = UNSET,
    strict: bool | _Unset | None = UNSET,
    implicit_runs: bool | _Unset | None = UNSET,
    durability: Durability | _Unset | None = UNSET,
    redact: RedactSpec | _Unset | None = UNSET,
) -> None:
    """Set zenmeta's behaviour for this process; ``None`` restores the default.

    - ``store``: a store URL (``sqlite:///path``, ``memory://``) or a store
      object; default ``ZENMETA_STORE`` or ``sqlite:///.zenmeta/zenmeta.db``.
    - ``strict``: raise component, metadata and store faults instead of
      recording them (``ZENMETA_STRICT``); meant for tests.
    - ``implicit_runs``: a step called outside any run opens a one-step run
      named after it (default) or, when false, runs untracked
      (``ZENMETA_IMPLICIT_RUNS``).
    - ``durability``: ``"batched"`` (default) writes in the background at
      least every second; ``"immediate"`` writes each record before the step
      returns (``ZENMETA_DURABILITY``).
    - ``redact``: the secret-masking rules applied to every recorded value
      (``ZENMETA_REDACT``): ``True`` (default), ``False`` or ``"off"``, or
      ``{"patterns": [...], "allow_keys": [...], "secret_keys": [...]}`` to
      mask more or to let a key through; read as each run starts.
    """
    if durability not in (UNSET, None, "batched", "immediate"):
        raise ConfigurationError(f"durability must be 'batched' or 'immediate', not {durability!r}")
    if not isinstance(redact, _Unset) and redact is not None:
        from ._redaction import parse_rules

        parse_rules(redact)  # a bad pattern is an error here, not at the first run
    with _lock:
        if not isinstance(store, _Unset):
            _configured.store = store
        if not isinstance(strict, _Unset):
            _configured.strict = strict
        if not isinstance(implicit_runs, _Unset):
            _configured.implicit_runs = implicit_runs
        if not isinstance(durability, _Unset):
            _configured.durability = durability
        if not isinstance(redact, _Unset):
            _configured.redact = redact


def reset_configuration() -> None:
    """Forget everything given to ``configure()``; tests call this."""
    with _lock:
        for name in _Settings.__slots__:
            setattr(_configured, name, None)


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


class settings:  # noqa: N801 - a namespace of readers, used like a module
    """Read the effective value of each setting."""

    @staticmethod
    def strict() -> bool:
        if _configured.strict is not None:
            return _configured.strict
        return _flag("ZENMETA_STRICT", False)

    @staticmethod
    def implicit_runs() -> bool:
        if _configured.implicit_runs is not None:
            return _configured.implicit_runs
        return _flag("ZENMETA_IMPLICIT_RUNS", True)

    @staticmethod
    def durability() -> Durability:
        if _configured.durability is not None:
            return _configured.durability
        raw = os.environ.get("ZENMETA_DURABILITY", "batched").strip().lower()
        if raw not in ("batched", "immediate"):
            raise ConfigurationError(f"ZENMETA_DURABILITY={raw!r}: use 'batched' or 'immediate'")
        return raw  # type: ignore[return-value]

    @staticmethod
    def redaction() -> Rules:
        """The effective redaction rules (parsed once per distinct setting)."""
        from ._redaction import rules_from

        return rules_from(_configured.redact)

    @staticmethod
    def store() -> str | RecordStore:
        if _configured.store is not None:
            return _configured.store
        return os.environ.get("ZENMETA_STORE") or default_store_url()


def default_store_url() -> str:
    """A project-local SQLite file: ``.zenmeta/zenmeta.db`` under the working directory."""
    return "sqlite:///" + os.path.join(os.getcwd(), ".zenmeta", "zenmeta.db")
