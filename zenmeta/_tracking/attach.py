"""Joining a run from another process or thread: ``carry``, ``attach``, ``carried``.

The owner of a run makes a ``Carrier`` (``carry()``); whoever receives it
enters it (``attach(carrier)`` for a block, ``attach_process(carrier)`` for a
whole worker process, ``carried(fn)`` per call, ``ZENMETA_PARENT`` for a
subprocess) and its steps join that run under the carried step. There they
belong to an ``AttachedRun``: the same surface a step uses from a
``PipelineRun`` (``_tracking/steps.py`` cannot tell them apart but by
``remote``), minus everything that writes the run row, which stays the
owner's alone — a worker that rewrote it would race the owner's final status.

One ``AttachedRun`` per run and process, created on first attach: it names
its steps ``train@<process token>``, ``train@<token>_2``… (a random token per
process, re-minted after ``fork``: pids repeat across hosts, tokens do not),
resolves the store once (refusing a SQLite file or ``memory://`` that lives
on another machine or in another process, rather than writing a stray local
one), and hands the carried component state to the worker's components. A
run object inherited through ``fork`` is *adopted*: the child gets its own
``AttachedRun`` for it, so a forked worker never writes the parent's run row
and never names a step as its siblings do.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, ParamSpec, TypeVar

from .._config import settings
from .._errors import NoActiveContextError, RunStateError
from .._info import PipelineInfo, PipelineRunInfo
from .._log import warn
from .._process import CURRENT_PID, host_name
from .._store import report_store_fault, wait_until_open
from . import context as _context
from .carrier import (
    CARRIER_VARIABLE,
    TOKEN_DIGITS,
    Carrier,
    CarrierError,
    boot_id,
    frozen_state,
    process_token,
    without_password,
)
from .components import Faults, Stack, call_hook, stack_of
from .reach import Refused, flush_at_exit, forget_exit_flush, store_for
from .steps import rewrap, step_config_of

if TYPE_CHECKING:
    from types import FrameType, TracebackType
    from uuid import UUID

    from .._records import RecordStore, StepRecord
    from .._redaction import Rules
    from .runs import PipelineRun

__all__ = [
    "AttachedRun",
    "Attachment",
    "Carried",
    "adopt",
    "attach",
    "attach_process",
    "carried",
    "carry",
]

P = ParamSpec("P")
R = TypeVar("R")

_attached: dict[UUID, AttachedRun] = {}
"""This process's ``AttachedRun`` per run id (bounded: see ``_remember``)."""
_local_runs: dict[UUID, tuple[RecordStore, Stack, Rules]] = {}
"""Store, stack and redaction of runs of this process that were carried, so
an attach in this very process uses the run's own store object (``memory://``
included) and components. Bounded like ``_attached``; no weak references, so
that ``import zenmeta`` does not load ``weakref``."""
_lock = threading.Lock()
_MAX_ATTACHED = 256


class Attachment(NamedTuple):
    """What a block (or a process) is attached to: the carrier, and which
    task execution this is when the engine says so (Dask's key and attempt)."""

    carrier: Carrier
    task_key: str | None = None
    attempt: int | None = None


class AttachedRun:
    """A run owned by another process (or entered through a carrier), as the
    steps of this process see it: they are recorded; the run row is not."""

    remote = True
    _plain_store: Any = None  # remote steps are never plain (steps._end)

    def __init__(self, carrier: Carrier, store: RecordStore, stack: Stack, redaction: Rules):
        self.carrier = carrier
        self.id = carrier.run_id
        self.name = carrier.run_name
        self.pipeline_name = carrier.pipeline
        self.pipeline = PipelineInfo(carrier.pipeline)
        self.info = PipelineRunInfo(
            carrier.run_id, carrier.run_name, self.pipeline, None, (), carrier.run_start_ns
        )
        self.redaction = redaction
        self.faults = Faults()
        self._store = store
        self._stack = stack
        self._pid = CURRENT_PID[0]
        self.remote = True  # on the instance, as PipelineRun says why
        self._token = process_token()[:TOKEN_DIGITS]
        self._counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.eager = False
        """Store each outermost step before it returns: set for whole-process
        attachments (``attach_process``, ``ZENMETA_PARENT``) and forked
        workers, whose pools may end them with SIGTERM or ``os._exit`` at any
        moment after the result is sent (``with Pool()`` calls ``terminate()``)."""

    def __repr__(self) -> str:
        return f"<AttachedRun {self.name!r} id={self.id} in process {self._token}>"

    def parent_step_id(self) -> UUID | None:
        """The carried step that the outermost steps here hang under."""
        attachment = _context.current_attachment()
        if attachment is not None and attachment.carrier.run_id == self.id:
            return attachment.carrier.parent_step_id
        return self.carrier.parent_step_id

    def _next_invocation(self, step_name: str) -> str:
        """``train@<token>``, ``train@<token>_2``…: unique in the run across processes."""
        with self._count_lock:
            number = self._counts.get(step_name, 0) + 1
            self._counts[step_name] = number
        name = f"{step_name}@{self._token}"
        return name if number == 1 else f"{name}_{number}"

    def _save_step(self, record: StepRecord) -> None:
        try:
            self._store.save_step(record)
        except Exception as error:
            report_store_fault(f"cannot write steps to {self._store.url!r}", error)
            return
        if self.eager and record.parent_step_run_id == self.parent_step_id():
            self.flush()  # the outermost step of this process: a task's end

    def _save_step_started(self, record: StepRecord) -> None:
        save = getattr(self._store, "save_step_started", None)
        if save is None:
            return
        try:
            save(record)
        except Exception as error:
            report_store_fault(f"cannot write steps to {self._store.url!r}", error)

    def flush(self) -> None:
        """Store every step this process queued for the run's store."""
        try:
            self._store.flush()
        except Exception as error:
            report_store_fault(f"cannot flush {self._store.url!r}", error)

    def log_metadata(self, metadata: Mapping[str, Any], *, source: str = "user") -> None:
        """Refused: the run row belongs to the owner process. Raising says so at
        the call (a recorded drop would have no record to live in here)."""
        raise RunStateError(
            f"run {self.name!r} ({self.id}) is owned by process {self.carrier.owner_pid} on "
            f"{self.carrier.owner_host!r}; an attached process records steps, not the run: "
            "log run metadata in the owner, or step metadata inside a @track_step function",
            run_id=self.id,
        )


# -- the owner's side ----------------------------------------------------------


def carry() -> Carrier:
    """A carrier for the current run and step, to hand to another process or thread.

    Outside a run: ``NoActiveContextError``. Inside a step, that step is the
    parent of the steps the carrier's receiver records."""
    run = _context.current_run()
    if run is None:
        raise NoActiveContextError(
            "carry() was called outside a run; call it inside `with pipeline_run()` or a step"
        )
    step = _context._current_step.get()
    if run.remote:
        assert isinstance(run, AttachedRun)
        parent = step.info.step_run_id if step is not None else run.parent_step_id()
        return run.carrier._replace(parent_step_id=parent)
    assert not isinstance(run, AttachedRun)
    wait_until_open(run._store)  # a receiver on this machine opens the same file
    if run.id not in _local_runs:
        if len(_local_runs) >= _MAX_ATTACHED:
            del _local_runs[next(iter(_local_runs))]
        _local_runs[run.id] = (run._store, run._stack, run.redaction)
    states: dict[str, dict[str, str]] = {}
    for name, hook in run._stack.hooks("get_carried_state"):
        state = call_hook(name, "get_carried_state", hook, (run.id,), run._faults)
        if isinstance(state, Mapping) and state:
            states[name] = {str(key): str(value) for key, value in state.items()}
    return Carrier(
        run.id,
        run.name,
        run.pipeline_name,
        None if step is None else step.info.step_run_id,
        without_password(run._store.url),
        host_name(),
        boot_id(),
        CURRENT_PID[0],
        process_token(),
        run.start_ns,
        frozen_state(states),
    )


# -- the receiver's side -----------------------------------------------------


def attached_run(carrier: Carrier) -> AttachedRun:
    """This process's ``AttachedRun`` for the carrier's run, made on first use.

    Raises ``CarrierError`` when the carrier's store cannot be reached from here."""
    run = _attached.get(carrier.run_id)
    if run is not None and run._pid == CURRENT_PID[0]:
        return run
    with _lock:
        run = _attached.get(carrier.run_id)
        if run is not None and run._pid == CURRENT_PID[0]:
            return run
        local = _local_runs.get(carrier.run_id) if carrier.same_process() else None
        if local is not None:
            run = AttachedRun(carrier, *local)
        else:
            stack = stack_of(None)
            run = AttachedRun(carrier, store_for(carrier), stack, settings.redaction())
            _hand_over_state(run, stack)
            flush_at_exit()
        return _remember(run)


def _remember(run: AttachedRun) -> AttachedRun:
    if len(_attached) >= _MAX_ATTACHED:
        del _attached[next(iter(_attached))]  # the oldest: a later attach makes it again
    _attached[run.id] = run
    return run


def _hand_over_state(run: AttachedRun, stack: Stack) -> None:
    """Give each component of this process the state its owner-side twin carried."""
    carried_state = run.carrier.component_state
    for name, hook in stack.hooks("attach_carried_state"):
        state = carried_state.get(name)
        if state is not None:
            call_hook(name, "attach_carried_state", hook, (run.id, state), run.faults)


def adopt(run: PipelineRun | AttachedRun) -> AttachedRun:
    """This process's own ``AttachedRun`` for a run object inherited through ``fork``."""
    found = _attached.get(run.id)
    if found is not None and found._pid == CURRENT_PID[0]:
        return found
    step = _context._current_step.get()
    parent = step.info.step_run_id if step is not None and step.run is run else None
    if isinstance(run, AttachedRun):
        carrier = run.carrier._replace(parent_step_id=parent or run.parent_step_id())
    else:
        carrier = Carrier(
            run.id,
            run.name,
            run.pipeline_name,
            parent,
            without_password(run._store.url),
            host_name(),
            boot_id(),
            run._pid,
            "",  # the parent's token is not known here; it only tells processes apart
            run.start_ns,
        )
    store: RecordStore = run._store
    if carrier.store.lower().startswith("memory:"):
        warn(
            "zenmeta: steps of run %r in forked process %d are not recorded: its store %r "
            "lives in the parent's memory",
            run.name,
            CURRENT_PID[0],
            carrier.store,
        )
        store = Refused(carrier.store)
    adopted = AttachedRun(carrier, store, run._stack, run.redaction)
    adopted.eager = True
    with _lock:
        return _remember(adopted)


def _forget_after_fork() -> None:
    _attached.clear()
    _local_runs.clear()
    forget_exit_flush()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class attach:  # noqa: N801 - used like a function: ``with zenmeta.attach(carrier):``
    """Join the carried run for a block: steps in it (in this thread, or in
    threads that carry the context) are recorded in that run, under the
    carried step. ``task_key`` and ``attempt`` say which execution of an
    engine's task this is (recorded on its steps). A class, not a generator:
    entering and leaving cost a few ContextVar sets."""

    __slots__ = ("_attachment", "_run", "_tokens")

    def __init__(
        self, carrier: Carrier, *, task_key: str | None = None, attempt: int | None = None
    ) -> None:
        if not isinstance(carrier, Carrier):
            raise TypeError(f"attach() takes a zenmeta.Carrier, not {type(carrier).__name__}")
        if task_key is None and _context._task_source:  # an engine's task (Dask's key)
            answer = _context.task_answer()
            if answer is not None:
                task_key, attempt = answer[1], answer[2] if attempt is None else attempt
        self._attachment = Attachment(carrier, task_key, attempt)
        self._run: AttachedRun | None = None
        self._tokens: tuple[Any, Any, Any] | None = None

    def __enter__(self) -> AttachedRun:
        if self._tokens is not None:
            raise RunStateError("this attach() block is already entered; make one per block")
        run = self._run = attached_run(self._attachment.carrier)
        self._tokens = (
            _context._current_attachment.set(self._attachment),
            _context._current_run.set(run),
            _context._current_step.set(None),  # the carried step is the parent, not ours
        )
        return run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tokens, self._tokens = self._tokens, None
        if tokens is not None:
            _context.reset(_context._current_step, tokens[2])
            _context.reset(_context._current_run, tokens[1])
            _context.reset(_context._current_attachment, tokens[0])


def attach_process(
    carrier: Carrier, *, task_key: str | None = None, attempt: int | None = None
) -> None:
    """Attach this whole process to the carried run: a pool's ``initializer``.

    Steps with no run of their own join it, each outermost step stored as it
    ends (a pool may SIGTERM its idle workers at any moment: ``with Pool()``
    calls ``terminate()``). A plain function, not a context manager, because
    an initializer's context is gone once it returns."""
    if not isinstance(carrier, Carrier):
        raise TypeError(f"attach_process() takes a zenmeta.Carrier, not {type(carrier).__name__}")
    run = attached_run(carrier)
    run.eager = True
    _context.set_process_attachment(Attachment(carrier, task_key, attempt), run)
    flush_at_exit()


def attach_from_environment(header: str) -> AttachedRun | None:
    """Attach this process to the carrier in ``ZENMETA_PARENT``; called on the
    first step that finds no run. A carrier that cannot be read or reached is
    said in a warning and ignored: a stray variable never breaks a program."""
    try:
        carrier = Carrier.from_header(header)
        attach_process(carrier)
    except CarrierError as error:
        warn("zenmeta: %s=… is ignored: %s", CARRIER_VARIABLE, error)
        return None
    found = _context.process_attachment()
    return None if found is None else found[1]


class Carried(Generic[P, R]):
    """``fn`` bound to a carrier: each call runs attached to the carried run,
    and stores its steps before returning. Pickles (pickle and cloudpickle)
    as the function and the carrier; Dask tokenizes it by both, run and
    parent ids included, so a retried run never hits Dask's result cache."""

    __slots__ = ("_by_value", "_reduced", "carrier", "fn")

    def __init__(self, fn: Callable[P, R], carrier: Carrier) -> None:
        if not callable(fn):
            raise TypeError(f"carried() wraps a callable, not {type(fn).__name__}")
        self.fn = fn
        self.carrier = carrier
        self._reduced: tuple[Any, ...] | None = None
        self._by_value: tuple[Any, ...] | None = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        with attach(self.carrier) as run:
            try:
                return self.fn(*args, **kwargs)
            finally:
                if not self.carrier.same_process():  # the owner flushes its own at run end
                    run.flush()

    def __reduce__(self) -> tuple[Any, ...]:
        # Dask pickles a task's function once per task: worked out once here,
        # once per kind of pickler (see _reduce_carried).
        if _by_cloudpickle():
            if self._by_value is None:
                self._by_value = _reduce_carried(self.fn, self.carrier)
            return self._by_value
        if self._reduced is None:
            self._reduced = _reduce_carried(self.fn, self.carrier, by_name=True)
        return self._reduced

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        parent = self.carrier.parent_step_id
        return ("zenmeta.carried", self.fn, self.carrier.run_id.hex, parent and parent.hex)

    @property
    def __name__(self) -> str:  # engines name tasks after it (Dask's keys)
        return str(getattr(self.fn, "__name__", type(self.fn).__name__))

    @property
    def __wrapped__(self) -> Callable[P, R]:
        return self.fn

    def __repr__(self) -> str:
        return f"<carried {self.fn!r} into run {self.carrier.run_name!r}>"


def _importable(fn: Any, *, main_too: bool = False) -> bool:
    """Whether ``fn`` goes by reference: its module names it by its qualified
    name (for cloudpickle, a module other than ``__main__``)."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if module is None or (module.__name__ == "__main__" and not main_too):
        return False
    found: Any = module
    for part in str(getattr(fn, "__qualname__", "")).split("."):
        found = getattr(found, part, None)
    return found is fn


def _by_cloudpickle() -> bool:
    """Whether a cloudpickle (its own, Ray's, joblib's copy) is pickling us.

    It ships a function of ``__main__`` (a notebook's, a script's) by value;
    pickle ships it by name, and cannot ship the undecorated function of a
    ``@track_step`` wrapper at all (its name is the wrapper's). Neither says
    which it is to ``__reduce__``; cloudpickle's ``dump`` is a Python frame
    just above it (the C pickler adds none)."""
    frame: FrameType | None = sys._getframe(2)  # above __reduce__
    for _ in range(3):
        if frame is None:
            return False
        if "cloudpickle" in frame.f_globals.get("__name__", ""):
            return True
        frame = frame.f_back
    return False


def _reduce_carried(fn: Any, carrier: Carrier, *, by_name: bool = False) -> tuple[Any, ...]:
    """A ``@track_step`` wrapper that must go by value (a notebook's, a
    closure) goes as the user's function and the step's configuration, and
    is decorated again where it lands: the wrapper's own code by value
    tripled what the scheduler pickled per task (issue 12's Dask benchmark).
    For pickle (``by_name``), a wrapper its module names goes by that name."""
    config = step_config_of(fn)
    if config is None or _importable(fn, main_too=by_name):
        return (Carried, (fn, carrier))
    settings = dict(config.settings)
    return (_carried_step, (fn.__wrapped__, config.name, settings, config.components, carrier))


def _carried_step(
    func: Callable[..., Any],
    name: str,
    settings: Mapping[str, Any],
    components: tuple[str, ...] | None,
    carrier: Carrier,
) -> Carried[..., Any]:
    return Carried(rewrap(func, name, settings, components), carrier)


def carried(fn: Callable[P, R], carrier: Carrier | None = None) -> Carried[P, R]:
    """Wrap ``fn`` so each call, anywhere, joins the run current now (or
    ``carrier``'s), under the current step; ``NoActiveContextError`` outside a run."""
    return Carried(fn, carry() if carrier is None else carrier)


def forget_attachments() -> None:
    """``testing.reset``: no attached run, no process attachment, the
    environment read again at the next step."""
    with _lock:
        _attached.clear()
        _local_runs.clear()
    _context.clear_process_attachment()
