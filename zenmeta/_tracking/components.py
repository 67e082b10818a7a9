"""Stack components: the hook interface, the default stack, safe hook calls.

Components are duck-typed, as a ZenML component would be: any object with
some of the six hook methods works. A stack is resolved into per-hook lists
once, so a step only loops over the components that really implement a hook.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uuid import UUID

    from .._info import PipelineRunInfo, StepRunInfo
    from .._values import MetadataType


from .._config import settings
from .._errors import ComponentError, ConfigurationError, MetadataError, describe_error
from .._log import warn
from .._records import USER_SOURCE, ComponentFault, DroppedValue
from .._redaction import is_redaction_note
from .callables import accepts_keyword
from .flavors import configured_components, reset_flavors

__all__ = [
    "StackComponent",
    "Stack",
    "HOOKS",
    "CARRIER_HOOKS",
    "component_name",
    "register_component",
    "unregister_component",
    "clear_components",
    "call_hook",
    "raise_if_strict",
    "Faults",
    "SLOW_HOOK_S",
]

SLOW_HOOK_S = 1.0
"""A hook slower than this is recorded (as a ``SlowHook`` fault) and warned
about: hooks run on the step's own thread, so their time is the step's."""


HOOKS = (
    "prepare_pipeline_run",
    "get_pipeline_run_metadata",
    "prepare_step_run",
    "get_step_run_metadata",
    "cleanup_step_run",
    "cleanup_pipeline_run",
)

CARRIER_HOOKS = ("get_carried_state", "attach_carried_state")
"""The pair that carries a component's run state to other processes: asked
on the owner's side by ``carry()``, handed over on the worker's side when it
first attaches to the run (see ``docs/components.md``)."""


class StackComponent:
    """Base class for components; every hook is a no-op until overridden.

    ``name`` is the source under which the component's metadata is recorded
    and the name a step selects it by; it defaults to ``flavor``, then to the
    class name in lower case.
    """

    flavor: str = ""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.flavor or type(self).__name__.lower()

    def prepare_pipeline_run(self, info: PipelineRunInfo) -> None:
        """Called when a run starts, before its metadata is collected."""

    def get_pipeline_run_metadata(self, run_id: UUID) -> dict[str, MetadataType]:
        """Called once at the beginning of a pipeline run."""
        return {}

    def prepare_step_run(self, info: StepRunInfo) -> None:
        """Called before the step function runs."""

    def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, MetadataType]:
        """Called after the step has finished, on success and on failure."""
        return {}

    def cleanup_step_run(self, info: StepRunInfo, step_failed: bool) -> None:
        """Called after the step's metadata has been collected."""

    def cleanup_pipeline_run(self, info: PipelineRunInfo, run_failed: bool) -> None:
        """Called when the run ends, whatever its outcome.

        An override may add a keyword parameter ``status``: it then also gets
        ``"completed"``, ``"failed"`` or ``"interrupted"``.
        """

    def get_carried_state(self, run_id: UUID) -> Mapping[str, str] | None:
        """Called by ``zenmeta.carry()`` in the run's owner: text this
        component needs in a worker (MLflow's parent run id). No secrets: a
        carrier travels in task payloads."""
        return None

    def attach_carried_state(self, run_id: UUID, state: Mapping[str, str]) -> None:
        """Called in a worker process when it first joins the carried run,
        with what ``get_carried_state`` returned in the owner."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def component_name(component: object) -> str:
    name = getattr(component, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(component).__name__.lower()


def _hook(component: object, hook: str) -> Callable[..., Any] | None:
    """The bound hook, or ``None`` when it is missing or the base no-op."""
    method = getattr(component, hook, None)
    if method is None or not callable(method):
        return None
    if getattr(type(component), hook, None) is getattr(StackComponent, hook):
        return None
    return method  # type: ignore[no-any-return]


class Stack:
    """The components of one run, resolved into per-hook call lists."""

    __slots__ = ("_hooks", "_selections", "components", "names", "status_takers", "step_hooks")

    def __init__(self, components: Sequence[object]) -> None:
        self.components = tuple(components)
        self.names = tuple(component_name(c) for c in self.components)
        if USER_SOURCE in self.names:
            raise ConfigurationError(_RESERVED)
        duplicates = {n for n in self.names if self.names.count(n) > 1}
        if duplicates:
            raise ConfigurationError(
                f"two components share the name {sorted(duplicates)[0]!r}; give each a unique name"
            )
        self._hooks: dict[str, tuple[tuple[str, Callable[..., Any]], ...]] = {
            hook: tuple(
                (name, fn)
                for name, c in zip(self.names, self.components, strict=True)
                if (fn := _hook(c, hook)) is not None
            )
            for hook in (*HOOKS, *CARRIER_HOOKS)
        }
        self.step_hooks = any(
            self._hooks[hook]
            for hook in ("prepare_step_run", "get_step_run_metadata", "cleanup_step_run")
        )
        """Whether any component has a step hook: a step skips all hook work if not."""
        # cleanup_pipeline_run(info, run_failed) cannot tell failed from
        # interrupted; a component that also accepts ``status=`` is told.
        self.status_takers = frozenset(
            name
            for name, fn in self._hooks["cleanup_pipeline_run"]
            if accepts_keyword(fn, "status")
        )
        self._selections: dict[tuple[str, ...], Stack] = {}

    def hooks(self, hook: str) -> tuple[tuple[str, Callable[..., Any]], ...]:
        return self._hooks[hook]

    def select(self, names: tuple[str, ...] | None) -> tuple[Stack, tuple[str, ...]]:
        """The sub-stack a step asked for, and the names it asked for but lacks."""
        if names is None:
            return self, ()
        missing = tuple(n for n in names if n not in self.names)
        selected = self._selections.get(names)
        if selected is None:
            selected = Stack(
                [c for n, c in zip(self.names, self.components, strict=True) if n in names]
            )
            self._selections[names] = selected
        return selected, missing


_RESERVED = (
    f"the component name {USER_SOURCE!r} is reserved for metadata the user logs "
    "with log_metadata(); give the component another name"
)

_registered: list[object] = []
_lock = threading.Lock()
_default: list[tuple[tuple[object, ...], Stack]] = []  # (configured flavors, stack)


def register_component(component: object) -> None:
    """Add a component to the process-wide default stack."""
    if not any(callable(getattr(component, hook, None)) for hook in HOOKS):
        raise ConfigurationError(
            f"{component!r} has none of the component hooks ({', '.join(HOOKS)})"
        )
    name = component_name(component)
    if name == USER_SOURCE:
        raise ConfigurationError(_RESERVED)
    with _lock:
        if any(component_name(c) == name for c in _registered):
            raise ConfigurationError(f"a component named {name!r} is already registered")
        _registered.append(component)
        _default.clear()


def unregister_component(component: object | str) -> None:
    """Remove a component (or the one with that name) from the default stack."""
    with _lock:
        for index, existing in enumerate(_registered):
            if existing is component or component_name(existing) == component:
                del _registered[index]
                _default.clear()
                return
    raise ConfigurationError(f"{component!r} is not registered")


def clear_components() -> None:
    with _lock:
        _registered.clear()
        _default.clear()
    reset_flavors()


def default_stack() -> Stack:
    """The registered components plus the configured flavors (``_flavors``),
    rebuilt only after a change. A registered component wins over a
    configured flavor of the same name: code is more specific than config."""
    configured = configured_components()
    with _lock:
        if not _default or _default[0][0] is not configured:
            names = {component_name(c) for c in _registered}
            extra = [c for c in configured if component_name(c) not in names]
            _default[:] = [(configured, Stack([*_registered, *extra]))]
        return _default[0][1]


def stack_of(components: Iterable[object] | None) -> Stack:
    return default_stack() if components is None else Stack(list(components))


class Faults(list[ComponentFault]):
    """The faults of one run or step, plus an interrupt a hook raised.

    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` from a hook
    are recorded like any fault, held here while the lifecycle finishes
    (the step is still written, later cleanups still run), and re-raised by
    the caller once the record is safe.
    """

    interrupt: BaseException | None = None
    """Set on the instance only when a hook was interrupted: creating a
    ``Faults`` stays as cheap as creating a list, on every step."""

    def raise_interrupt(self) -> None:
        interrupt, self.interrupt = self.interrupt, None
        if interrupt is not None:
            raise interrupt


def call_hook(
    component: str,
    hook: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    faults: list[ComponentFault],
) -> Any:
    """Call one hook; a raising hook is logged and recorded, never propagated.

    Strict mode is applied by the caller once the whole lifecycle step is
    done, so that one failing component never skips another's cleanup. An
    interrupt is recorded, then held in ``faults`` (a ``Faults``) for the
    caller to re-raise, or re-raised at once into a plain list.
    """
    started = time.perf_counter()
    try:
        result = fn(*args)
    except BaseException as error:
        error_type, message = describe_error(error)
        faults.append(ComponentFault(component, hook, error_type, message))
        rules = settings.redaction()  # the failure path: reading the settings is affordable
        shown = rules.mask_text(message)[0] if rules.enabled else message  # a log is printed
        warn("zenmeta: component %r failed in %s: %s: %s", component, hook, error_type, shown)
        if isinstance(error, Exception):
            return None
        if isinstance(faults, Faults):
            if faults.interrupt is None:
                faults.interrupt = error
            return None
        raise
    elapsed = time.perf_counter() - started
    if elapsed > SLOW_HOOK_S:
        message = f"took {elapsed:.1f} s (over {SLOW_HOOK_S} s), on the step's thread"
        faults.append(ComponentFault(component, hook, "SlowHook", message))
        warn("zenmeta: component %r is slow in %s: %s", component, hook, message)
    return result


def raise_if_strict(faults: list[ComponentFault], dropped: list[DroppedValue]) -> None:
    """In strict mode, turn the first recorded fault or drop into an error."""
    if not (faults or dropped) or not settings.strict():
        return
    dropped = [drop for drop in dropped if not is_redaction_note(drop.reason)]
    if not (faults or dropped):
        return  # a masked secret is recorded, not an error
    if faults:
        fault = faults[0]
        raise ComponentError(
            f"component {fault.component!r} failed in {fault.hook}: "
            f"{fault.error_type}: {fault.message}",
            component=fault.component,
            hook=fault.hook,
        )
    drop = dropped[0]
    raise MetadataError(
        f"metadata {drop.key!r} from {drop.source!r} was dropped: {drop.reason}",
        key=drop.key,
        source=drop.source,
    )
