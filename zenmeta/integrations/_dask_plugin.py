"""zenmeta's Dask worker plugin: which task a step runs in, and a flush on teardown.

Its own module because it subclasses ``distributed.WorkerPlugin`` and so
imports distributed; ``zenmeta.integrations.dask`` loads it on first use. The
scheduler pickles the plugin by reference to this module, so every worker
with zenmeta installed can rebuild it — a restarted worker too.

The plugin's hooks run in the worker's event-loop thread, never in a task's
context, so they set no ContextVar; what a task needs is read in the task's
own thread through the source handed to ``zenmeta.set_task_source``: Dask's
``thread_state.key`` names the running task, and its annotations may carry a
carrier (``zenmeta.integrations.dask.annotate``).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from dask.context import thread_state  # the one distributed sets per task
from distributed import SchedulerPlugin, WorkerPlugin
from distributed.worker import get_worker

import zenmeta
from zenmeta import Carrier

if TYPE_CHECKING:
    from distributed import Scheduler, Worker

__all__ = ["ATTEMPT_ANNOTATION", "ZenmetaSchedulerPlugin", "ZenmetaWorkerPlugin"]

ATTEMPT_ANNOTATION = "zenmeta_attempt"
"""Set by the scheduler plugin on each task before it is sent to a worker:
which dispatch of the task this is (1, 2, … after a worker died or a retry)."""

_log = logging.getLogger("zenmeta")
_ANNOTATION = "zenmeta"  # zenmeta.integrations.dask.ANNOTATION; that module imports this one
_MAX_REMEMBERED = 65_536
"""Task keys whose executions are counted at once; the oldest are forgotten
past this, so a worker that runs millions of tasks keeps a bounded table."""


@functools.lru_cache(maxsize=64)
def _carrier_from(header: str) -> Carrier | None:
    """One parse per distinct header: every task of an annotated graph has the same one."""
    try:
        return Carrier.from_header(header)
    except ValueError as error:
        _log.warning(
            "zenmeta: a Dask task's %r annotation is not a carrier: %s", _ANNOTATION, error
        )
        return None


class ZenmetaSchedulerPlugin(SchedulerPlugin):
    """On the scheduler: numbers each dispatch of a task, for its steps' attempt.

    Dask does not tell a task how often it ran, and a rerun after a worker
    died lands on another worker, which cannot count it. The scheduler sees
    every dispatch: before a task is sent again (it enters ``waiting``,
    ``queued`` or ``no-worker`` first, every time), this plugin puts the
    number of the coming dispatch in the task's annotations, which travel
    with it; the number grows when the task goes to ``processing``. A first
    dispatch carries none: the worker counts it as 1. Recomputing a result
    that lived on a dead worker counts on; a forgotten key starts again.
    """

    name = "zenmeta-attempts"
    idempotent = True  # installing again keeps the counts (and the scheduler does not warn)

    def __init__(self) -> None:
        self._dispatched: dict[Any, int] = {}
        self._scheduler: Scheduler | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    async def start(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "processing":
            self._dispatched[key] = self._dispatched.get(key, 0) + 1
        elif finish in ("waiting", "queued", "no-worker"):
            coming = self._dispatched.get(key, 0) + 1
            # A first dispatch is not annotated: the worker counts it as 1 on
            # its own, and most tasks run once (a new annotations dict per
            # task, sent with each, cost the scheduler in a map of tiny tasks).
            task = (
                None if coming == 1 or self._scheduler is None else self._scheduler.tasks.get(key)
            )
            if task is not None:
                task.annotations = {**(task.annotations or {}), ATTEMPT_ANNOTATION: coming}
        elif finish == "forgotten":
            self._dispatched.pop(key, None)


class ZenmetaWorkerPlugin(WorkerPlugin):
    """Per worker: tells zenmeta each step's Dask task key and attempt, finds
    carriers in task annotations, and flushes what the worker recorded.

    The attempt comes from the scheduler plugin (the dispatch number in the
    task's annotations); where that is missing (the scheduler plugin was not
    installed) it is the number of times this worker process has started the
    task. Every execution is its own step; the task key groups them.
    """

    name = "zenmeta"

    def __init__(self) -> None:
        self._executions: dict[Any, int] = {}
        self._annotated: set[Any] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # nothing of one worker travels to another

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def setup(self, worker: Worker) -> None:
        # The store opens lazily, at the first step a task records; from then
        # on its writer records this process and beats its heartbeat.
        zenmeta.set_task_source(self.task_source)

    def teardown(self, worker: Worker) -> None:
        # Flush, not close: the interpreter's exit closes the stores and records
        # the clean exit; a worker in the client's own process (processes=False)
        # must not close the client's stores.
        zenmeta.set_task_source(None)
        zenmeta.flush()

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing":
            executions = self._executions
            if key not in executions and len(executions) >= _MAX_REMEMBERED:
                del executions[next(iter(executions))]
            executions[key] = executions.get(key, 0) + 1
        elif start == "executing" and key in self._annotated:
            # A step attached through an annotation has no wrapper to store it
            # before the task returns: store it before the scheduler hears the
            # task is done, so a client reading the store after compute() sees it.
            self._annotated.discard(key)
            zenmeta.flush()

    def task_source(self) -> tuple[Carrier | None, str | None, int | None] | None:
        """The carrier (from the ``zenmeta`` annotation, if any), task key and
        attempt of the Dask task running in this thread; ``None`` outside one."""
        key = getattr(thread_state, "key", None)
        if key is None:
            return None
        carrier = None
        attempt = self._executions.get(key)
        try:
            task = get_worker().state.tasks.get(key)
        except ValueError:  # not in a worker's task after all
            task = None
        if task is not None and task.annotations:
            annotations = task.annotations
            header = annotations.get(_ANNOTATION)
            if isinstance(header, str):
                carrier = _carrier_from(header)
                if carrier is not None:
                    self._annotated.add(key)
            dispatch = annotations.get(ATTEMPT_ANNOTATION)
            if isinstance(dispatch, int):
                attempt = dispatch
        return carrier, str(key), attempt
