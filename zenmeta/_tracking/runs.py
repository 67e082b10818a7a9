"""Pipeline runs: the ``with`` form, the decorator form and the notebook form.

A run is created, made current, recorded, and only then are its
components' hooks called, so a run whose hooks hang or crash the process is
still on disk. Ending a run calls the cleanup hooks, records the final
status and flushes the store.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from .._values import MetadataType
    from .context import AnyRun

from .. import _process
from .._codec import MetadataSet, round_trip_sets
from .._config import check_settings, settings
from .._errors import RunStateError, describe_error
from .._info import PipelineInfo, PipelineRunInfo, utc_from_ns
from .._log import warn
from .._process import CURRENT_PID, host_name, process_start_time
from .._records import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    USER_SOURCE,
    ComponentFault,
    DroppedValue,
    RecordStore,
    RunRecord,
    Status,
    StepRecord,
)
from .._redaction import DEFAULT_RULES, Rules
from .._store import flush_after_run, plain_steps_store, report_store_fault, resolve_store
from . import context as _context
from . import signals as _signals
from .callables import check_name, check_tags, kind_of
from .components import Faults, Stack, call_hook, raise_if_strict, stack_of
from .ids import new_run_id
from .metadata import collect_metadata, mask_message, masked_faults, snapshot

__all__ = ["PipelineRun", "pipeline_run", "start_run", "status_for"]

F = TypeVar("F", bound=Callable[..., Any])
_NEW, _OPEN, _ENDED = "new", "running", "ended"


_stamps: list[Any] = [None, ""]  # the last second named, and its text


def _stamp(start_ns: int) -> str:
    """``20261202-001808`` for a run's start: formatted once per second, since
    ``strftime`` was a tenth of a short run's cost."""
    second = start_ns // 1_000_000_000
    seen = _stamps
    if seen[0] != second:
        seen = [second, time.strftime("%Y%m%d-%H%M%S", time.gmtime(second))]
        _stamps[:] = seen
    return seen[1]  # type: ignore[no-any-return]


def status_for(error: BaseException | None) -> Status:
    """``failed`` for errors; ``interrupted`` for KeyboardInterrupt, SystemExit
    and cancellation (``BaseException``s that are not ``Exception``s)."""
    if error is None:
        return COMPLETED
    return FAILED if isinstance(error, Exception) else INTERRUPTED


class PipelineRun:
    """A handle on one run: enter it with ``with``/``async with``, or use
    ``zenmeta.start_run()`` and ``run.end()`` when a run spans notebook cells.
    A run object can be entered once; use ``pipeline_run`` as a decorator to
    get a new run per call.
    """

    remote = False
    """Owned by this process (an ``AttachedRun`` is the remote kind): its
    steps need no started record."""

    def __init__(
        self,
        name: str | None = None,
        *,
        run_name: str | None = None,
        components: Iterable[object] | None = None,
        tags: Iterable[str] | None = None,
        implicit: bool = False,
    ) -> None:
        if name is not None:
            check_name(name, "the pipeline name")
        if run_name is not None:
            check_name(run_name, "run_name")
        self.id: UUID = new_run_id()
        self.pipeline_name = name or "pipeline"
        self._requested_name = run_name
        self.name = run_name or ""
        self._components = None if components is None else list(components)
        self.tags = check_tags(tags)
        self.implicit = implicit
        self.status: Status = RUNNING
        self.parent_run_id: UUID | None = None
        self.start_ns = 0
        self.end_ns: int | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self._phase = _NEW
        self._detached = False
        self._lock = threading.Lock()
        self._token: Token[AnyRun | None] | None = None
        self._metadata: dict[str, MetadataSet] = {}
        self._faults = Faults()
        self._dropped: list[DroppedValue] = []
        self._step_counts: dict[str, itertools.count[int]] = {}
        self.redaction: Rules = DEFAULT_RULES
        self._pid = CURRENT_PID[0]
        # On the instance too: Python 3.11 reads an instance's own attribute
        # in one specialized step, a class's by the generic lookup, and every
        # step reads this one.
        self.remote = type(self).remote
        self._stack: Stack
        self._store: RecordStore
        self.info: PipelineRunInfo
        self.pipeline: PipelineInfo

    # -- public view ------------------------------------------------------
    @property
    def start_time(self) -> datetime:
        return utc_from_ns(self.start_ns)

    @property
    def end_time(self) -> datetime | None:
        return None if self.end_ns is None else utc_from_ns(self.end_ns)

    @property
    def metadata(self) -> dict[str, dict[str, MetadataType]]:
        """The run's metadata so far, by source, with types restored."""
        with self._lock:
            sets = snapshot(self._metadata)
        return round_trip_sets(sets)

    @property
    def faults(self) -> tuple[ComponentFault, ...]:
        return tuple(self._faults)

    @property
    def dropped(self) -> tuple[DroppedValue, ...]:
        return tuple(self._dropped)

    def __repr__(self) -> str:
        return f"<PipelineRun {self.name or self.pipeline_name!r} {self.status} id={self.id}>"

    # -- lifecycle --------------------------------------------------------
    def _open(self) -> None:
        check_settings()  # a bad setting fails here, never inside a step
        self._stack = stack_of(self._components)
        self.redaction = settings.redaction()  # like the store: chosen as each run starts
        with self._lock:
            if self._phase != _NEW:
                raise RunStateError(
                    f"run {self.name!r} ({self.id}) was already entered; a run object "
                    "is entered once: create a new pipeline_run(...) for another run",
                    run_id=self.id,
                )
            self._phase = _OPEN
        parent = _context.current_run()
        self.parent_run_id = None if parent is None else parent.id
        # Resolved before the clock starts: the first run of a process imports
        # the store front (and logging, for its fork hook), which is set-up, not
        # the user's code.
        self._store = resolve_store()
        # The method is looked up at each step, never bound once here: a store
        # still opening when the run began forwards plain steps through its own
        # method (about 2,600 instructions a step, 5% of it); once open, its
        # attribute is the opened store's method.
        self._plain_store: Any = plain_steps_store(self._store)
        self.start_ns = time.time_ns()
        if not self.name:
            self.name = f"{self.pipeline_name}-{_stamp(self.start_ns)}-{self.id.hex[:6]}"
        self.pipeline = PipelineInfo(self.pipeline_name)
        self.info = PipelineRunInfo(
            self.id, self.name, self.pipeline, self.parent_run_id, self.tags, self.start_ns
        )
        _signals.run_opened(self)
        _signals.install_termination_handler()

    def _start_hooks(self) -> None:
        """Record the run, then collect its components' run metadata."""
        self._save()
        for name, fn in self._stack.hooks("prepare_pipeline_run"):
            call_hook(name, "prepare_pipeline_run", fn, (self.info,), self._faults)
        hooks = self._stack.hooks("get_pipeline_run_metadata")
        for name, fn in hooks:
            result = call_hook(name, "get_pipeline_run_metadata", fn, (self.id,), self._faults)
            if result is not None:
                with self._lock:
                    collect_metadata(
                        self._metadata,
                        self._dropped,
                        name,
                        result,
                        self.redaction,
                        faults=self._faults,
                        hook="get_pipeline_run_metadata",
                    )
        if hooks or self._faults or self._dropped:
            self._save()
        interrupt = self._faults.interrupt
        if interrupt is not None:
            self._faults.interrupt = None
            self._close(interrupt)  # recorded interrupted, never left running
            raise interrupt
        try:
            raise_if_strict(self._faults, self._dropped)
        except Exception as error:
            self._close(error)
            raise

    def _close(self, error: BaseException | None) -> None:
        with self._lock:
            if self._phase != _OPEN:
                raise RunStateError(f"run {self.name!r} has already ended", run_id=self.id)
            self._phase = _ENDED
        status = status_for(error)
        faults_before = len(self._faults)
        takers = self._stack.status_takers
        for name, fn in self._stack.hooks("cleanup_pipeline_run"):
            hook = functools.partial(fn, status=status) if name in takers else fn
            args = (self.info, status != COMPLETED)
            call_hook(name, "cleanup_pipeline_run", hook, args, self._faults)
        interrupt = self._faults.interrupt
        self._faults.interrupt = None
        if error is None and interrupt is not None:
            error, status = interrupt, status_for(interrupt)
        self.end_ns = time.time_ns()
        self.status = status
        if error is not None:
            self.error_type, message = describe_error(error)
            self.error_message = mask_message(message, self.redaction)
        _signals.run_closed(self)
        self._save()
        flush_after_run()
        if interrupt is not None:
            raise interrupt
        if error is None:
            raise_if_strict(self._faults[faults_before:], [])

    def _save(self) -> None:
        with self._lock:
            record = RunRecord(  # positional: keywords cost a NamedTuple ~1 µs more
                self.id,
                self.name,
                self.pipeline_name,
                self.parent_run_id,
                self.tags,
                self.status,
                self.start_ns,
                self.end_ns,
                host_name(),
                CURRENT_PID[0],
                process_start_time(),
                self.error_type,
                self.error_message,
                snapshot(self._metadata),
                masked_faults(self._faults, self.redaction),
                tuple(self._dropped),
                _process.PROCESS_ID,
            )
        try:
            self._store.save_run(record)
        except Exception as error:
            report_store_fault(f"cannot write runs to {self._store.url!r}", error)

    def _save_step(self, record: StepRecord) -> None:
        try:
            self._store.save_step(record)
        except Exception as error:
            report_store_fault(f"cannot write steps to {self._store.url!r}", error)

    def _save_step_started(self, record: StepRecord) -> None:
        """Store a step's started record where the store keeps them (remote
        steps: ``steps.py`` calls this only when ``remote`` is true)."""
        save_started = getattr(self._store, "save_step_started", None)
        if save_started is None:
            return
        try:
            save_started(record)
        except Exception as error:
            report_store_fault(f"cannot write steps to {self._store.url!r}", error)

    def parent_step_id(self) -> UUID | None:
        """The step outermost steps hang under: none, in the run's own process."""
        return None

    def _next_invocation(self, step_name: str) -> str:
        """``train``, then ``train_2``, ``train_3``… unique within this run.

        Other processes never count here: a forked worker adopts the run as
        an attached process (``attach.adopt``) and names its steps
        ``train@<process token>``.
        """
        counter = self._step_counts.get(step_name)
        if counter is None:
            counter = self._step_counts.setdefault(step_name, itertools.count(1))
        number = next(counter)
        return step_name if number == 1 else f"{step_name}_{number}"

    def log_metadata(self, metadata: Mapping[str, Any], *, source: str = USER_SOURCE) -> None:
        """Attach metadata to this run; a re-logged key replaces its value."""
        if self._pid != CURRENT_PID[0]:
            raise RunStateError(
                f"run {self.name!r} belongs to process {self._pid}; this forked process "
                "records steps, not the run: log run metadata in the parent",
                run_id=self.id,
            )
        with self._lock:
            if self._phase != _OPEN:
                raise RunStateError(f"run {self.name!r} is not running", run_id=self.id)
            collect_metadata(self._metadata, self._dropped, source, metadata, self.redaction)
        self._save()
        raise_if_strict([], self._dropped[-1:] if self._dropped else [])

    # -- the with form ----------------------------------------------------
    def __enter__(self) -> PipelineRun:
        self._open()
        self._token = _context.set_run(self)
        try:
            self._start_hooks()
        except BaseException:
            _context.reset(_context._current_run, self._token)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _context.reset(_context._current_run, self._token)
            self._token = None
        try:
            self._close(exc)
        except Exception:
            if exc is None:
                raise  # strict mode; never replaces the user's own exception

    async def __aenter__(self) -> PipelineRun:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- the decorator form ------------------------------------------------
    def _fresh(self) -> PipelineRun:
        return PipelineRun(
            self.pipeline_name if self.pipeline_name != "pipeline" else None,
            run_name=self._requested_name,
            components=self._components,
            tags=self.tags,
        )

    def __call__(self, func: F) -> F:
        """Decorate a function so that each call runs inside a new run."""
        if self.pipeline_name == "pipeline":
            self.pipeline_name = func.__name__
        if kind_of(func) == "coroutine":

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)

        return run_sync  # type: ignore[return-value]

    # -- the notebook form --------------------------------------------------
    def end(self, status: Status = COMPLETED) -> None:
        """End a run started with ``start_run()``: ``completed`` unless told."""
        if not self._detached:
            raise RunStateError(
                "this run was entered with `with`; it ends when the block exits", run_id=self.id
            )
        _context.remove_detached(self)
        error: BaseException | None = None
        if status == FAILED:
            error = RuntimeError("ended as failed by run.end()")
        elif status == INTERRUPTED:
            error = KeyboardInterrupt("ended as interrupted by run.end()")
        elif status != COMPLETED:
            raise RunStateError(f"a run ends as completed, failed or interrupted, not {status!r}")
        self._close(error)


@overload
def pipeline_run(name: F, /) -> F: ...


@overload
def pipeline_run(
    name: str | None = None,
    *,
    run_name: str | None = None,
    components: Iterable[object] | None = None,
    tags: Iterable[str] | None = None,
) -> PipelineRun: ...


def pipeline_run(
    name: Any = None,
    *,
    run_name: str | None = None,
    components: Iterable[object] | None = None,
    tags: Iterable[str] | None = None,
) -> Any:
    """Open a pipeline run: ``with pipeline_run("training") as run: ...``.

    ``components`` replaces the default stack for this run. Also usable as
    ``async with`` and as a decorator (a new run per call), with arguments
    or bare (``@pipeline_run``: the pipeline is named after the function).
    """
    if callable(name) and not isinstance(name, str):
        return PipelineRun(run_name=run_name, components=components, tags=tags)(name)
    return PipelineRun(name, run_name=run_name, components=components, tags=tags)


def start_run(
    name: str | None = None,
    *,
    run_name: str | None = None,
    components: Iterable[object] | None = None,
    tags: Iterable[str] | None = None,
) -> PipelineRun:
    """Start a run that stays open until ``run.end()``, across notebook cells.

    It is kept in a process-level list, not only in a ContextVar, because a
    Jupyter cell may run in a fresh context; steps called with no ``with``
    run around them join the newest such run.
    """
    run = PipelineRun(name, run_name=run_name, components=components, tags=tags)
    run._detached = True
    for earlier in _context.detached_runs():
        if earlier.pipeline_name == run.pipeline_name:
            warn(
                "zenmeta: run %r of pipeline %r is still open; start_run() ends it as "
                "completed before starting the next (call run.end() to end it yourself)",
                earlier.name,
                earlier.pipeline_name,
            )
            with contextlib.suppress(RunStateError):
                earlier.end()
    _signals.install_excepthook()
    run._open()
    _context.add_detached(run)
    try:
        run._start_hooks()
    except BaseException:
        _context.remove_detached(run)
        raise
    return run


def _end_detached_at_exit() -> None:
    """Like MLflow, end runs still open at exit as completed, so none is
    left reading ``running``; their steps were recorded as they finished.
    A process ending on an uncaught exception ends them ``failed`` with it,
    one stopped by SIGTERM ``interrupted``."""
    error = _signals.uncaught_error()
    if error is None and _signals.terminated():
        error = SystemExit(_signals.TERMINATED_STATUS)
    for run in reversed(_context.detached_runs()):
        with contextlib.suppress(Exception):  # at exit nobody is left to raise to
            _context.remove_detached(run)
            run._close(error)


atexit.register(_end_detached_at_exit)
