"""zenmeta's warnings, through the standard ``logging`` module.

``logging`` is imported on the first warning, not with zenmeta: most runs
never warn, and a bare ``import zenmeta`` should stay cheap.
"""

from __future__ import annotations

__all__ = ["warn"]


def warn(message: str, *args: object) -> None:
    """Log a warning on the ``zenmeta`` logger."""
    import logging

    logging.getLogger("zenmeta").warning(message, *args)
