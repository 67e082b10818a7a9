"""All of zenmeta's process-wide settings, in one place with a reset.

A setting given to ``configure()`` wins; otherwise its environment variable
is read each time it is needed, so changing the variable between runs takes
effect without restarting the process.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from ._errors import ConfigurationError, StoreError
from ._project import current_project, forget_projects
from ._redact import masked_url

if TYPE_CHECKING:
    from ._records import RecordSink, RecordStore
    from ._redaction import Rules

RedactSpec = bool | str | Mapping[str, Sequence[str]]
"""What ``configure(redact=...)`` takes (see ``_redaction.parse_rules``)."""

__all__ = [
    "Configuration",
    "Durability",
    "RedactSpec",
    "SUPPORTED_STORES",
    "check_settings",
    "check_store_name",
    "configure",
    "get_configuration",
    "reset_configuration",
    "settings",
]

Durability = Literal["batched", "immediate"]

SUPPORTED_STORES = (
    "a path to a SQLite file, sqlite:///PATH, postgresql://…, postgresql+psycopg://… or memory://"
)
_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "memory")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def check_store_name(text: object) -> re.Match[str] | None:
    """Refuse a name no store answers to, with the ``StoreError`` listing the
    supported forms; the name's ``scheme://`` (``None`` for a plain path).

    The part of ``_store.store_url``'s rule that needs no store code, here so
    that ``configure()`` refuses ``mysql://…`` at the call with the very error
    a run's start gives, without importing the store layer."""
    if not isinstance(text, str) or not text.strip():
        raise StoreError(f"{text!r} names no store; use {SUPPORTED_STORES}")
    found = _SCHEME.match(text)
    if found is not None and found.group(1).lower() not in _SCHEMES:
        raise StoreError(
            f"zenmeta cannot keep runs in {found.group(1).lower()}:// ({masked_url(text)!r}); "
            f"use {SUPPORTED_STORES}"
        )
    return found


def environment(name: str) -> str | None:
    """``os.environ.get(name)``, at a twentieth of its cost.

    Settings are read from the environment each time a run starts (so that a
    changed variable takes effect), six of them per run: through the
    ``os.environ`` mapping each costs ~1.5 µs (encoding the key, decoding the
    value), a third of a run's whole cost. CPython keeps the variables in
    ``os.environ._data``, updated by every assignment through ``os.environ``;
    a missing variable (the common case) is one dict miss there.
    """
    data = getattr(os.environ, "_data", None)
    key = _KEYS.get(name)
    if data is None or key is None:  # another platform, or a name not listed below
        return os.environ.get(name)
    raw = data.get(key)
    return None if raw is None else os.environ.decodevalue(raw)


_KEYS = (
    {
        name: os.environ.encodekey(name)
        for name in (
            "ZENMETA_STORE",
            "ZENMETA_STRICT",
            "ZENMETA_IMPLICIT_RUNS",
            "ZENMETA_DURABILITY",
            "ZENMETA_COMPONENTS",
            "ZENMETA_EXPORTERS",
            "ZENMETA_REDACT",
            "ZENMETA_PARENT",  # asked at each run start that finds no run around it
        )
    }
    if hasattr(os.environ, "encodekey")
    else {}
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


class _Settings:
    """What ``configure()`` was given; ``None`` means "use the default"."""

    __slots__ = ("durability", "exporters", "implicit_runs", "redact", "store", "strict")

    def __init__(self) -> None:
        self.store: str | RecordStore | None = None
        self.strict: bool | None = None
        self.implicit_runs: bool | None = None
        self.durability: Durability | None = None
        self.exporters: tuple[RecordSink | str, ...] | None = None
        self.redact: RedactSpec | None = None


_configured = _Settings()
_lock = threading.Lock()


def configure(
    *,
    store: str | RecordStore | _Unset | None = UNSET,
    strict: bool | _Unset | None = UNSET,
    implicit_runs: bool | _Unset | None = UNSET,
    durability: Durability | _Unset | None = UNSET,
    exporters: Iterable[RecordSink | str] | _Unset | None = UNSET,
    redact: RedactSpec | _Unset | None = UNSET,
) -> None:
    """Set zenmeta's behaviour for this process; ``None`` restores the default.

    - ``store``: a path to a SQLite file, a store URL (``sqlite:///path``,
      ``postgresql://…``, ``memory://``) or a store object; default
      ``ZENMETA_STORE``, else ``store`` in ``[tool.zenmeta]``, else
      ``.zenmeta/zenmeta.db`` in the project's root folder.
    - ``strict``: raise component, metadata and store faults instead of
      recording them (``ZENMETA_STRICT``); meant for tests.
    - ``implicit_runs``: a step called outside any run opens a one-step run
      named after it (default) or, when false, runs untracked
      (``ZENMETA_IMPLICIT_RUNS``).
    - ``durability``: ``"batched"`` (default) writes in the background at
      least every quarter second; ``"immediate"`` writes each record before the step
      returns (``ZENMETA_DURABILITY``).
    - ``exporters``: record sinks that also receive every finished run and
      step, such as ``zenmeta.integrations.opentelemetry.OpenTelemetrySink``,
      or names of installed ones (``"otlp"``); default ``ZENMETA_EXPORTERS``
      (comma-separated names), else none. Taken when each run starts.
    - ``redact``: the secret-masking rules applied to every recorded value
      (``ZENMETA_REDACT``): ``True`` (default), ``False`` or ``"off"``, or
      ``{"patterns": [...], "allow_keys": [...], "secret_keys": [...]}`` to
      mask more or to let a key through; read as each run starts.
    """
    if durability not in (UNSET, None, "batched", "immediate"):
        raise ConfigurationError(f"durability must be 'batched' or 'immediate', not {durability!r}")
    for name, flag in (("strict", strict), ("implicit_runs", implicit_runs)):
        if not isinstance(flag, (bool, _Unset)) and flag is not None:
            raise ConfigurationError(
                f"{name} must be True, False or None (the default), not {type(flag).__name__}"
            )
    if not isinstance(redact, _Unset) and redact is not None:
        from ._redaction import parse_rules

        parse_rules(redact)  # a bad pattern is an error here, not at the first run
    if isinstance(store, str):
        check_store_name(store)  # mysql://… is refused here, not at the first run
    with _lock:
        if not isinstance(store, _Unset):
            _configured.store = store
        if not isinstance(strict, _Unset):
            _configured.strict = strict
        if not isinstance(implicit_runs, _Unset):
            _configured.implicit_runs = implicit_runs
        if not isinstance(durability, _Unset):
            _configured.durability = durability
        if not isinstance(exporters, _Unset):
            if isinstance(exporters, str):
                exporters = (exporters,)
            _configured.exporters = None if exporters is None else tuple(exporters)
        if not isinstance(redact, _Unset):
            _configured.redact = redact


def reset_configuration() -> None:
    """Forget everything given to ``configure()``; tests call this."""
    with _lock:
        for name in _Settings.__slots__:
            setattr(_configured, name, None)
    forget_projects()


def _flag(name: str, default: bool) -> bool:
    raw = environment(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(
        f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off"
    )


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
        raw = (environment("ZENMETA_DURABILITY") or "batched").strip().lower()
        if raw not in ("batched", "immediate"):
            raise ConfigurationError(
                f"ZENMETA_DURABILITY={raw!r} is not a durability; use 'batched' or 'immediate'"
            )
        return raw  # type: ignore[return-value]

    @staticmethod
    def exporters() -> tuple[RecordSink | str, ...]:
        """Configured sinks, else the names in ``ZENMETA_EXPORTERS``; usually empty."""
        if _configured.exporters is not None:
            return _configured.exporters
        raw = environment("ZENMETA_EXPORTERS")
        if not raw:
            return ()
        return tuple(dict.fromkeys(raw.replace(",", " ").split()))

    @staticmethod
    def redaction() -> Rules:
        """The effective redaction rules (parsed once per distinct setting)."""
        rules_from = _rules_from or _import_rules_from()
        return rules_from[0](_configured.redact)

    @staticmethod
    def store() -> str | RecordStore:
        """The store as named (``zenmeta._store.store_url`` gives the rule)."""
        if _configured.store is not None:
            return _configured.store
        return environment("ZENMETA_STORE") or default_store_url()


_rules_from: list[Callable[[object], Rules]] = []
"""``_redaction.rules_from``, imported at the first run: an import statement
in ``settings.redaction`` cost 1 µs at every run start."""


def _import_rules_from() -> list[Callable[[object], Rules]]:
    from ._redaction import rules_from

    _rules_from[:] = [rules_from]
    return _rules_from


def check_settings() -> None:
    """Read every setting once, so that a bad environment variable is one
    ``ConfigurationError`` (naming it and its allowed values) when a run
    starts, instead of surfacing later inside a step."""
    settings.strict()
    settings.implicit_runs()
    settings.durability()


def default_store_url() -> str:
    """``store`` in ``[tool.zenmeta]`` (a relative path counts from the
    ``pyproject.toml``'s folder), else ``.zenmeta/zenmeta.db`` in the project root."""
    project = current_project()
    named = project.table.get("store")
    if named is not None:
        if not isinstance(named, str) or not named.strip():
            raise ConfigurationError(
                f"[tool.zenmeta] store in {project.pyproject} must be a path or a store URL, "
                f"not {named!r}"
            )
        if "://" in named or named.lower().startswith("memory:"):
            return named
        return os.path.join(project.root, os.path.expanduser(named))
    return "sqlite:///" + os.path.join(project.root, ".zenmeta", "zenmeta.db")


class Configuration(NamedTuple):
    """The settings in effect, as ``zenmeta.get_configuration()`` reports them."""

    store: str
    """The store URL new runs write to (a configured store object's ``url``)."""
    strict: bool
    implicit_runs: bool
    durability: Durability
    exporters: tuple[str, ...] = ()
    """The record sinks new runs feed, by name (a sink object's ``name`` or class name)."""


def get_configuration() -> Configuration:
    """The settings in effect now, from ``configure()``, the environment or the defaults.

    For integrations and tools, so they never read zenmeta's private modules;
    a bad environment value raises ``ConfigurationError`` naming it.
    """
    store = settings.store()
    return Configuration(
        store if isinstance(store, str) else store.url,
        settings.strict(),
        settings.implicit_runs(),
        settings.durability(),
        tuple(_sink_name(sink) for sink in settings.exporters()),
    )


def _sink_name(sink: RecordSink | str) -> str:
    if isinstance(sink, str):
        return sink
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) and name else type(sink).__name__
