"""The writer's turns with the interpreter lock, while it writes a batch.

The database driver releases the interpreter lock for every statement it
runs. When the statement is done, the writer asks for the lock back, and a
thread that holds it without pause (a step loop) keeps it for the whole
switch interval: 5 ms by default. A batch runs several statements (begin,
an insert per table and block of rows, the value index's fill, commit), so
on this project's 2-core benchmark machine a million-step loop's writer
spent 4.5-4.7 µs a step waiting for its turns, fell behind, and held the
loop to 62-65k steps/s (``bench_store.py --million --metadata``: writer
waits). While a transaction is open, the writer lowers the interval to
``SWITCH_INTERVAL_S``; the same loop then ran at 66-73k steps/s, the
writer's waits at 1.9-2.5 µs a step (0.2 ms and 0.5 ms did no better). The
interval only decides how long a thread that wants the lock waits for it,
so nothing but the timing of thread switches changes, and only while a
batch is written. An interval already as short is left alone, and the
earlier one is restored only if nobody set another meanwhile.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["SWITCH_INTERVAL_S", "prompt_turns"]

SWITCH_INTERVAL_S = 0.001
"""The switch interval while a batch is written (``sys.setswitchinterval``)."""


class prompt_turns:  # noqa: N801 - used as a ``with`` statement, like a function
    """``with prompt_turns():`` around one transaction."""

    __slots__ = ("_before",)

    def __enter__(self) -> None:
        before = sys.getswitchinterval()
        self._before = 0.0
        if before > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            self._before = before

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._before and sys.getswitchinterval() == SWITCH_INTERVAL_S:
            sys.setswitchinterval(self._before)
