"""``@track_step``: the step lifecycle around every kind of callable.

The per-call path is kept lean on purpose: the step's static parts
(``StepConfig``) are built once at decoration, hooks come pre-sorted from
the run's ``Stack``, and a step with no components does no hook work at all.
Generators are driven by hand so the step's context is set only while the
generator's own code runs, never while it is suspended at a ``yield``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .. import _process
from .._config import settings
from .._errors import NoActiveContextError, describe_error
from .._info import StepConfig, StepRunInfo
from .._log import warn
from .._process import CURRENT_PID
from .._records import COMPLETED, RUNNING, USER_SOURCE, ComponentFault, DroppedValue, StepRecord
from .._store import report_store_fault
from . import context as _context
from .callables import check_name, kind_of, step_name_of
from .components import Faults, Stack, call_hook, raise_if_strict
from .ids import new_id
from .metadata import collect_metadata, mask_message, masked_faults
from .runs import PipelineRun, status_for

if TYPE_CHECKING:
    from uuid import UUID

    from .._codec import MetadataSet
    from .context import AnyRun

__all__ = ["track_step", "log_metadata", "StepState", "rewrap", "step_config_of"]

F = TypeVar("F", bound=Callable[..., Any])
_step_var = _context._current_step
_tuple_new = tuple.__new__
_new = object.__new__


class StepState:
    """The mutable side of a running step: what it has collected so far.

    Built by ``_begin`` field by field, with no ``__init__`` to call: a
    Python call fewer at every step."""

    __slots__ = ("dropped", "ended", "faults", "implicit", "info", "metadata", "run", "stack")

    info: StepRunInfo
    run: AnyRun
    stack: Stack
    implicit: bool  # the run was opened for this step alone
    metadata: dict[str, MetadataSet]
    dropped: list[DroppedValue]
    faults: Faults
    ended: bool  # set under _late_writes once its record is built


_late_writes = threading.Lock()
"""Held by ``log_metadata`` while it writes a step's metadata and by the step
when it ends, so a thread that finishes late (``carry_context``) is refused
instead of changing a record that is already queued (OpenTelemetry refuses
attributes on an ended span the same way). One lock for all steps: it is
taken twice per step and contended only by threads logging at the same time."""


def _begin(config: StepConfig) -> StepState | None:
    """Find the step's run (opening an implicit one if none is current) and
    build its state; ``None`` when the step is to run untracked."""
    parent = _step_var.get()
    run = parent.run if parent is not None else _context._current_run.get()
    if run is None or run._pid != CURRENT_PID[0]:
        run = _context.current_run()  # the fallbacks, and adoption after a fork
    implicit = run is None
    if run is None:
        run = _implicit_run(config)
        if run is None:
            return None
    parent_id: UUID | None
    if parent is not None:
        parent_id = parent.info.step_run_id
    else:
        parent_id = run.parent_step_id() if run.remote else None
    start_ns = time.time_ns()
    step_name, _, components = config  # one unpacking: a NamedTuple's field is a generic lookup
    info: StepRunInfo = _tuple_new(  # StepRunInfo(...) minus its Python __new__
        StepRunInfo,
        (
            new_id(start_ns),
            run.id,
            run.name,
            run._next_invocation(step_name),
            config,
            run.pipeline,
            parent_id,
            start_ns,
        ),
    )
    stack = run._stack
    if run.remote:
        _start_remote(info, run)
    state: StepState = _new(StepState)  # StepState(...) minus its Python __init__
    state.info = info
    state.run = run
    state.implicit = implicit
    state.metadata = {}
    state.dropped = []
    state.faults = Faults()
    state.ended = False
    if components is not None:
        stack, missing = stack.select(components)
        for name in missing:
            state.faults.append(
                ComponentFault(name, "select", "LookupError", "not in the run's stack")
            )
    state.stack = stack
    return state


def _remote_fields() -> tuple[str, str | None, int | None]:
    """The executing process and the engine's task key and attempt, for a step
    of a run owned by another process."""
    attachment = _context.current_attachment()
    if attachment is None:
        return _process.PROCESS_ID, None, None
    return _process.PROCESS_ID, attachment.task_key, attachment.attempt


def _start_remote(info: StepRunInfo, run: AnyRun) -> None:
    """A remote step's started record, before any hook or the user's code:
    if this process dies in the step, the step reads ``crashed`` under its run."""
    process_id, task_key, attempt = _remote_fields()
    run._save_step_started(
        StepRecord(
            info.step_run_id,
            info.run_id,
            info.parent_step_run_id,
            info.pipeline_step_name,
            info.config.name,
            RUNNING,
            info.start_time_ns,
            info.start_time_ns,
            process_id=process_id,
            task_key=task_key,
            attempt=attempt,
        )
    )


def _prepare(state: StepState) -> None:
    if not state.stack.step_hooks:
        return
    for name, fn in state.stack.hooks("prepare_step_run"):
        call_hook(name, "prepare_step_run", fn, (state.info,), state.faults)
    if state.faults.interrupt is not None:
        state.faults.raise_interrupt()  # before the user's code: it is not to run


def _record(state: StepState, error: BaseException | None, end_ns: int) -> None:
    """Record a step that is not plain (``_end`` saved a plain one itself);
    raises only in strict mode and only when the user's own code succeeded,
    or re-raises an interrupt a hook raised once the step is written."""
    info = state.info
    if error is None:
        status, error_type, message = COMPLETED, None, None
    else:
        status = status_for(error)
        error_type, message = describe_error(error)
        message = mask_message(message, state.run.redaction)
    record: StepRecord = _tuple_new(  # StepRecord(...) minus its Python __new__
        StepRecord,
        (
            info.step_run_id,
            info.run_id,
            info.parent_step_run_id,
            info.pipeline_step_name,
            info.config.name,
            status,
            info.start_time_ns,
            end_ns,
            error_type,
            message,
            state.metadata,  # the state dies with the step: no copy needed
            masked_faults(state.faults, state.run.redaction) if state.faults else (),
            tuple(state.dropped) if state.dropped else (),
            None,
            None,
            None,
        ),
    )
    if state.run.remote:  # it supersedes the started record: the same process and task
        process_id, task_key, attempt = _remote_fields()
        record = record._replace(process_id=process_id, task_key=task_key, attempt=attempt)
    state.run._save_step(record)
    if state.faults.interrupt is not None:
        state.faults.raise_interrupt()
    if error is None and (state.faults or state.dropped):
        raise_if_strict(state.faults, state.dropped)


def _collect_and_clean_up(state: StepState, error: BaseException | None) -> None:
    """The components' step hooks at the step's end: their metadata, then cleanup."""
    info = state.info
    for name, fn in state.stack.hooks("get_step_run_metadata"):
        result = call_hook(name, "get_step_run_metadata", fn, (info,), state.faults)
        if result is not None:
            collect_metadata(
                state.metadata,
                state.dropped,
                name,
                result,
                state.run.redaction,
                faults=state.faults,
                hook="get_step_run_metadata",
            )
    for name, fn in state.stack.hooks("cleanup_step_run"):
        call_hook(name, "cleanup_step_run", fn, (info, error is not None), state.faults)


def _implicit_run(config: StepConfig) -> PipelineRun | None:
    """A one-step run for a step called outside any run, unless disabled."""
    if not settings.implicit_runs():
        return None
    run = PipelineRun(config.name, tags=("implicit",), implicit=True)
    run._open()
    run._start_hooks()
    return run


def _close_implicit(state: StepState, error: BaseException | None) -> None:
    if not state.implicit:
        return
    assert isinstance(state.run, PipelineRun)  # implicit runs are this process's own
    try:
        state.run._close(error)
    except Exception:
        if error is None:
            raise


def _end(state: StepState, token: Any, error: BaseException | None) -> None:
    """Finish the step (collect, clean up, record it), restore the context,
    close an implicit run: all three happen even when strict mode raises.
    A plain step (no error, fault, drop or parent, this process's run) is
    handed to its store here, with no call between: each call a step makes
    costs ~600 of its ~53k instructions."""
    try:
        end_ns = time.time_ns()
        if state.stack.step_hooks:
            _collect_and_clean_up(state, error)
        _late_writes.acquire()  # not ``with``: its exit is a call 3.11 cannot specialize
        try:
            state.ended = True  # from here on the record shares state.metadata
        finally:
            _late_writes.release()
        step_run_id, run_id, _, name, config, _, parent_id, start_ns = state.info  # one unpacking
        if (
            error is None
            and not state.faults
            and not state.dropped
            and parent_id is None
            and not state.run.remote  # its record names the process, task and attempt
            and (plain_store := state.run._plain_store) is not None
        ):
            try:  # config[0]: its name, by index (a NamedTuple's field is a generic lookup)
                saved = plain_store.save_plain_step(
                    step_run_id, run_id, name, config[0], start_ns, end_ns, state.metadata
                )
            except Exception as store_error:
                report_store_fault(f"cannot write steps to {state.run._store.url!r}", store_error)
                saved = True  # reported as a failed save is: never saved twice
            if not saved:
                _record(state, error, end_ns)
        else:
            _record(state, error, end_ns)
    except BaseException as strict_error:
        _context.reset(_step_var, token)
        _close_implicit(state, strict_error)
        raise
    try:
        _step_var.reset(token)  # _context.reset without its call, at every step
    except ValueError:  # a token of another context: reset again, to be logged there
        _context.reset(_step_var, token)
    if state.implicit:
        _close_implicit(state, error)


# -- one wrapper per kind of callable ------------------------------------
# The wrappers reach the step ContextVar as ``_context._current_step``, never
# through a global of this module: cloudpickle pickles a wrapper by value when
# the user's function lives in ``__main__``, a notebook or a closure, and it
# takes along every global the wrapper's code names. A module is pickled by
# reference; a ContextVar cannot be pickled at all. (One attribute load per
# use, a few nanoseconds.)


def _sync_wrapper(wrapped: Callable[..., Any], config: StepConfig) -> Callable[..., Any]:
    def call_step(*args: Any, **kwargs: Any) -> Any:
        state = _begin(config)
        if state is None:
            return wrapped(*args, **kwargs)
        token = _context._current_step.set(state)
        try:
            if state.stack.step_hooks:  # _prepare's own test: no call for a plain loop
                _prepare(state)
            result = wrapped(*args, **kwargs)
        except BaseException as error:
            _end(state, token, error)
            raise
        _end(state, token, None)
        return result

    return call_step


def _async_wrapper(wrapped: Callable[..., Any], config: StepConfig) -> Callable[..., Any]:
    async def call_step(*args: Any, **kwargs: Any) -> Any:
        state = _begin(config)
        if state is None:
            return await wrapped(*args, **kwargs)
        token = _context._current_step.set(state)
        try:
            _prepare(state)
            result = await wrapped(*args, **kwargs)
        except BaseException as error:
            _end(state, token, error)
            raise
        _end(state, token, None)
        return result

    return call_step


def _generator_wrapper(wrapped: Callable[..., Any], config: StepConfig) -> Callable[..., Any]:
    def call_step(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        state = _begin(config)
        if state is None:
            return (yield from wrapped(*args, **kwargs))
        token = _context._current_step.set(state)
        try:
            _prepare(state)
            inner = wrapped(*args, **kwargs)
        except BaseException as error:
            _end(state, token, error)
            raise
        _context._current_step.reset(token)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = _context._current_step.set(state)
            try:
                item = inner.send(sent) if thrown is None else inner.throw(thrown)
            except StopIteration as stop:
                outcome: BaseException | None = None
                result = stop.value
            except BaseException as error:
                outcome = error
            else:
                _context._current_step.reset(token)
                try:
                    sent, thrown = (yield item), None
                except GeneratorExit as closing:
                    token = _context._current_step.set(state)
                    try:
                        inner.close()
                        outcome = None
                    except BaseException as error:
                        outcome = error
                    _end(state, token, outcome)
                    if outcome is not None:
                        raise outcome from None
                    raise closing
                except BaseException as error:
                    sent, thrown = None, error
                continue
            _end(state, token, outcome)
            if outcome is not None:
                raise outcome
            return result

    return call_step


def _async_generator_wrapper(wrapped: Callable[..., Any], config: StepConfig) -> Callable[..., Any]:
    async def call_step(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        state = _begin(config)
        if state is None:
            async for item in wrapped(*args, **kwargs):
                yield item
            return
        token = _context._current_step.set(state)
        try:
            _prepare(state)
            inner = wrapped(*args, **kwargs)
        except BaseException as error:
            _end(state, token, error)
            raise
        _context.reset(_context._current_step, token)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = _context._current_step.set(state)
            try:
                if thrown is None:
                    item = await inner.asend(sent)
                else:
                    item = await inner.athrow(thrown)
            except StopAsyncIteration:
                outcome: BaseException | None = None
            except BaseException as error:
                outcome = error
            else:
                _context.reset(_context._current_step, token)
                try:
                    sent, thrown = (yield item), None
                except GeneratorExit as closing:
                    token = _context._current_step.set(state)
                    try:
                        await inner.aclose()
                        outcome = None
                    except BaseException as error:
                        outcome = error
                    _end(state, token, outcome)
                    if outcome is not None:
                        raise outcome from None
                    raise closing
                except BaseException as error:
                    sent, thrown = None, error
                continue
            _end(state, token, outcome)
            if outcome is not None:
                raise outcome
            return

    return call_step


def _wrap(func: Callable[..., Any], config: StepConfig) -> Callable[..., Any]:
    """A wrapper of the same kind as ``func`` (so ``inspect`` answers alike),
    carrying its name, doc, ``__wrapped__`` and so its signature."""
    kind = kind_of(func)
    if kind == "async_generator":
        wrapper = _async_generator_wrapper(func, config)
    elif kind == "generator":
        wrapper = _generator_wrapper(func, config)
    elif kind == "coroutine":
        wrapper = _async_wrapper(func, config)
    else:
        wrapper = _sync_wrapper(func, config)
    functools.update_wrapper(wrapper, func)
    wrapper.__zenmeta_step__ = config  # type: ignore[attr-defined]
    return wrapper


def step_config_of(fn: object) -> StepConfig | None:
    """The configuration of a ``@track_step`` wrapper, ``None`` for anything else."""
    config = getattr(fn, "__zenmeta_step__", None)
    return config if type(config) is StepConfig else None


def rewrap(
    func: Callable[..., Any],
    name: str,
    settings: Mapping[str, Any],
    components: tuple[str, ...] | None,
) -> Callable[..., Any]:
    """A step wrapper rebuilt where it was unpickled: shipping the user's
    function and the step's configuration costs a third of shipping the
    wrapper's own code by value (``Carried.__reduce__``)."""
    return _wrap(func, StepConfig(name, MappingProxyType(dict(settings)), components))


@overload
def track_step(func: F, /) -> F: ...


@overload
def track_step(
    *,
    name: str | None = None,
    components: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Callable[[F], F]: ...


def track_step(
    func: Any = None,
    /,
    *,
    name: str | None = None,
    components: Sequence[str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Any:
    """Track every call of a function as a step of the current run.

    Bare (``@track_step``) or with arguments: ``name`` overrides the step
    name, ``components`` selects components of the run's stack by name
    (like ZenML's ``experiment_tracker=``), ``settings`` is handed to
    components as ``info.config.settings``. Works on functions, async
    functions, generators, async generators and methods of every kind.
    """

    def decorate(target: Any) -> Any:
        if isinstance(target, (classmethod, staticmethod)):
            # Wrap the function inside and rebuild the descriptor, so binding
            # stays Python's own: no proxy object on the call path.
            return type(target)(decorate(target.__func__))
        step_name = name or step_name_of(target)
        config = StepConfig(
            step_name,
            MappingProxyType(dict(settings or {})),
            None if components is None else tuple(components),
        )
        return _wrap(target, config)

    if name is not None:
        check_name(name, "@track_step(name=...)")
    if func is None:
        return decorate
    if not callable(func) and not isinstance(func, (classmethod, staticmethod)):
        raise TypeError(f"@track_step decorates a function, not {type(func).__name__}")
    return decorate(func)


def log_metadata(metadata: Mapping[str, Any], *, run: bool = False) -> None:
    """Attach metadata to the current step, else to the current run.

    ``run=True`` attaches it to the current run even from inside a step
    (ZenML's ``log_metadata`` can target the run alike). Values are coerced
    per key; a value that cannot be kept is dropped with a warning and a
    record of why, never raising into the step (except in strict mode). A
    re-logged key replaces its value.
    """
    state = _step_var.get()
    if state is not None and not run:
        _late_writes.acquire()  # not ``with``: see _end
        try:
            if state.ended:
                warn(
                    "zenmeta: log_metadata() reached step %r after it ended; its values "
                    "were not recorded",
                    state.info.pipeline_step_name,
                )
                return
            rules = state.run.redaction
            dropped = collect_metadata(state.metadata, state.dropped, USER_SOURCE, metadata, rules)
        finally:
            _late_writes.release()
        if dropped:
            raise_if_strict([], state.dropped[-1:])
        return
    current = _context.current_run()
    if current is None:
        raise NoActiveContextError(
            "log_metadata() was called outside any step or run; call it inside a "
            "@track_step function or a `with pipeline_run()` block"
        )
    current.log_metadata(metadata)
