"""Ray: steps of remote tasks belong to the run that submitted them.

``ray.remote`` refuses callable objects, so a carrying wrapper cannot itself
be the remote function. Instead :func:`remote` builds the ``RemoteFunction``
once, around a function that accepts one hidden keyword argument, and its
``.remote(*args, **kwargs)`` passes the carrier of the current run and step
there at call time — the way Ray's own tracing passes ``_ray_trace_ctx``
(``ray/util/tracing/tracing_helper.py``). In the worker the call runs
attached to that run under that step, with Ray's task id as the task key,
and stores its steps before it returns. Building the ``RemoteFunction`` per
call would re-export it every time (+11.5 ms a call, measured).

Called outside a run, a task runs as plain Ray would run it (its steps then
open implicit runs, as anywhere). The carrier holds no password: the worker
finds credentials in its own environment (``runtime_env={"env_vars": ...}``
is the way to hand it static settings). Ray is imported when first used;
without it the error names the extra (``pip install 'zenmeta[ray]'``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zenmeta
from zenmeta import MissingExtraError, NoActiveContextError

if TYPE_CHECKING:
    from zenmeta import Carrier

__all__ = ["CARRIER_KEYWORD", "RemoteStep", "remote"]

CARRIER_KEYWORD = "_zenmeta_carrier"
"""The hidden keyword argument a carrier travels in; a task's own code never sees it."""

_executions: dict[str, int] = {}
_executions_lock = threading.Lock()
_MAX_REMEMBERED = 65_536


def _require_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise MissingExtraError("ray", "ray") from None


def _current_carrier() -> Carrier | None:
    try:
        return zenmeta.carry()
    except NoActiveContextError:
        return None


def _task_identity() -> tuple[str | None, int | None]:
    """Ray's task id, and how often this worker process has started that task
    (Ray keeps the id across retries but does not tell the attempt)."""
    ray = importlib.import_module("ray")
    try:
        task_id = ray.get_runtime_context().get_task_id()
    except Exception:  # an unusual worker: the step is still recorded
        return None, None
    if task_id is None:
        return None, None
    with _executions_lock:
        if task_id not in _executions and len(_executions) >= _MAX_REMEMBERED:
            del _executions[next(iter(_executions))]
        attempt = _executions[task_id] = _executions.get(task_id, 0) + 1
    return task_id, attempt


def _accepting_carrier(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` plus the hidden keyword: attached to the carrier when one came."""

    @functools.wraps(fn)
    def run_attached(*args: Any, **kwargs: Any) -> Any:
        carrier = kwargs.pop(CARRIER_KEYWORD, None)
        if carrier is None:
            return fn(*args, **kwargs)
        task_key, attempt = _task_identity()
        try:
            with zenmeta.attach(carrier, task_key=task_key, attempt=attempt):
                return fn(*args, **kwargs)
        finally:
            zenmeta.flush()  # stored before Ray hands the result back

    # Ray checks the call's arguments against the signature it reads here.
    signature = inspect.signature(fn)
    hidden = inspect.Parameter(CARRIER_KEYWORD, inspect.Parameter.KEYWORD_ONLY, default=None)
    parameters = list(signature.parameters.values())
    at = len(parameters)
    if parameters and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD:
        at -= 1
    parameters.insert(at, hidden)
    run_attached.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return run_attached


class RemoteStep:
    """A Ray remote function that carries the current run to its tasks.

    ``.remote(*args, **kwargs)`` submits a task, as on the ``RemoteFunction``;
    ``.options(...)`` returns another ``RemoteStep`` with Ray's options set.
    The ``RemoteFunction`` itself is ``.remote_function``.
    """

    __slots__ = ("remote_function",)

    def __init__(self, remote_function: Any) -> None:
        self.remote_function = remote_function

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit a task; its steps join the current run under the current step."""
        if CARRIER_KEYWORD in kwargs:
            raise TypeError(f"{CARRIER_KEYWORD!r} is zenmeta's own argument; do not pass it")
        carrier = _current_carrier()
        if carrier is not None:
            kwargs[CARRIER_KEYWORD] = carrier
        return self.remote_function.remote(*args, **kwargs)

    def options(self, **options: Any) -> RemoteStep:
        """The same task with Ray's options (``num_cpus=``, ``max_retries=``, …) set."""
        return RemoteStep(self.remote_function.options(**options))

    def __repr__(self) -> str:
        return f"<zenmeta RemoteStep {self.remote_function!r}>"


def remote(fn: Callable[..., Any], /, **options: Any) -> RemoteStep:
    """Make ``fn`` a Ray remote function whose tasks belong to the current run.

    ``options`` are Ray's (``ray.remote(num_cpus=1)(fn)``'s keywords). ``fn``
    is usually a ``@track_step`` function, or calls some.
    """
    ray = _require_ray()
    if not callable(fn) or inspect.isclass(fn):
        raise TypeError(f"zenmeta.integrations.ray.remote takes a function, not {fn!r}")
    task_function = _accepting_carrier(fn)
    built = ray.remote(**options)(task_function) if options else ray.remote(task_function)
    return RemoteStep(built)
