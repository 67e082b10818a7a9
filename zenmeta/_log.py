"""zenmeta's warnings, through the standard ``logging`` module.

``logging`` is imported on the first warning, not with zenmeta: most runs
never warn, and a bare ``import zenmeta`` should stay cheap.
"""

from __future__ import annotations

__all__ = ["warn", "warn_throttled", "forget_warnings"]


def warn(message: str, *args: object) -> None:
    """Log a warning on the ``zenmeta`` logger."""
    import logging

    logging.getLogger("zenmeta").warning(message, *args)


WARN_AGAIN_S = 60.0
"""A repeated fault (a full disk fails every batch) is warned about again
after this long, not at every failure."""
CAUSES_KEPT = 64
"""How many distinct causes are remembered; the oldest is forgotten first."""

_last_warned: dict[str, float] = {}


def warn_throttled(cause: str, message: str, *args: object) -> bool:
    """Warn about ``cause`` at most once per ``WARN_AGAIN_S``; ``True`` if it warned.

    The set of remembered causes is bounded, so a fault whose text changes
    every time (it names a run) cannot grow it without end.
    """
    import time

    now = time.monotonic()
    last = _last_warned.get(cause)
    if last is not None and now - last < WARN_AGAIN_S:
        return False
    _last_warned.pop(cause, None)
    while len(_last_warned) >= CAUSES_KEPT:
        del _last_warned[next(iter(_last_warned))]
    _last_warned[cause] = now
    warn(message, *args)
    return True


def forget_warnings() -> None:
    """Forget which causes were warned about; tests call this."""
    _last_warned.clear()
