"""The Dask benchmark's tasks, in a module the workers can import: shipped by
reference, as the functions of a script's package are (``bench_dask.py``
ships the same two again by value, as a notebook's are)."""

from __future__ import annotations

import zenmeta


def tiny(x: int) -> int:
    return x + 1


@zenmeta.track_step(name="tiny")
def tiny_step(x: int) -> int:
    return x + 1
