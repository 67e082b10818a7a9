"""``python -m zenmeta``: the same command as the ``zenmeta`` script."""

from __future__ import annotations

from ._ui.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
