"""The process-wide MLflow settings a run needs, applied for its duration only.

MLflow reads its tracking URI, credentials and HTTP limits from process-wide
state (a module global and environment variables). The user's own
``mlflow.log_metric`` inside a step can reach the component's tracking store
only through that state, so it is set when the first run needing it starts
and restored, credentials included, when the last such run ends. A
concurrent run asking for other values is refused, never silently redirected.

A tracking URI holding credentials (``http://user:password@host``) also
silences MLflow's "View run … at: <url>" lines for the run's duration (the
user's own ``mlflow.start_run()`` in a step included): MLflow builds that URL
from the URI as given and prints the password with it (3.0 to 3.17 at least;
``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT`` is its one switch across those
versions). The run's link is recorded, without credentials, as ``mlflow_run_url``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from zenmeta import ConfigurationError

from ._urls import has_credentials, without_credentials

__all__ = ["acquire", "release", "holders"]

_SECRET_SUFFIXES = ("PASSWORD", "TOKEN", "USERNAME")
_QUIET = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


class _Overlay:
    """What is applied now, by how many runs, and what it replaced."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.applied: tuple[str, dict[str, str]] = ("", {})
        self.saved_env: dict[str, str | None] = {}
        self.saved_uri: str | None = None


_overlay = _Overlay()


def acquire(tracking_uri: str, overrides: Mapping[str, str], defaults: Mapping[str, str]) -> None:
    """Use ``tracking_uri`` and the variables until the matching ``release()``.

    ``overrides`` are always set; ``defaults`` only where the variable was not
    set before the first run acquired them.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    if has_credentials(tracking_uri):  # its "View run … at" lines would print them
        overrides = {**overrides, _QUIET: "true"}

    wanted = (tracking_uri, {**{f"{k}?": v for k, v in defaults.items()}, **overrides})
    with _overlay.lock:
        if _overlay.holders:
            if _overlay.applied != wanted:
                raise ConfigurationError(
                    "another run in this process uses MLflow with other settings "
                    f"({_shown(_overlay.applied)}); MLflow's fluent API has one tracking URI "
                    f"per process, so this run cannot use {_shown(wanted)} at the same time"
                )
            _overlay.holders += 1
            return
        names = {*overrides, *defaults, "MLFLOW_TRACKING_URI"}
        _overlay.saved_env = {name: os.environ.get(name) for name in names}
        _overlay.saved_uri = getattr(utils, "_tracking_uri", None)
        try:
            for name, value in defaults.items():
                os.environ.setdefault(name, value)
            os.environ.update(overrides)
            if mlflow.get_tracking_uri() != tracking_uri:
                mlflow.set_tracking_uri(tracking_uri)
        except BaseException:
            _restore()
            raise
        _overlay.applied = wanted
        _overlay.holders = 1


def release() -> None:
    """End one ``acquire()``; the last one restores what was there before."""
    with _overlay.lock:
        if _overlay.holders <= 0:
            return
        _overlay.holders -= 1
        if _overlay.holders == 0:
            _restore()


def holders() -> int:
    """How many runs use the applied settings now."""
    return _overlay.holders


def _restore() -> None:
    """Put back MLflow's own tracking URI, then every variable we touched."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    if getattr(utils, "_tracking_uri", None) != _overlay.saved_uri:
        mlflow.set_tracking_uri(_overlay.saved_uri)  # type: ignore[arg-type]  # None resets
    for name, value in _overlay.saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _overlay.saved_env = {}
    _overlay.saved_uri = None
    _overlay.applied = ("", {})


def _shown(applied: tuple[str, dict[str, str]]) -> str:
    """Settings for an error message, without credentials."""
    uri, environment = applied
    shown = [without_credentials(uri)]
    for name, value in sorted(environment.items()):
        if not name.rstrip("?").endswith(_SECRET_SUFFIXES):
            shown.append(f"{name.rstrip('?')}={value}")
    return ", ".join(shown)
