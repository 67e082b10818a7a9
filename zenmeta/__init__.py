"""zenmeta: run metadata from stack components, for plain Python.

Everything public is importable from here; the modules behind it are
private. Importing zenmeta loads no numpy, MLflow, SQLAlchemy or web
framework: integrations and stores import their libraries when first used.
"""

from __future__ import annotations

from types import FunctionType
from typing import TYPE_CHECKING, Any

from ._config import configure, get_configuration, reset_configuration
from ._errors import (
    CarrierError,
    ComponentError,
    ConfigurationError,
    MetadataError,
    MissingExtraError,
    NoActiveContextError,
    QueryError,
    RunNotFoundError,
    RunStateError,
    StoreError,
    StoreNotFoundError,
    ZenmetaError,
)
from ._info import PipelineInfo, PipelineRunInfo, StepConfig, StepRunInfo
from ._read.client import Client
from ._read.copy import copy_store
from ._records import (
    ComponentFault,
    DroppedValue,
    RecordedRun,
    RecordedStep,
    RecordSink,
    RunRecord,
    StepRecord,
)
from ._redaction import redact
from ._store import flush
from ._tracking.attach import attach, attach_process, carried, carry
from ._tracking.carrier import Carrier
from ._tracking.components import StackComponent, register_component, unregister_component
from ._tracking.context import carry_context, get_run_context, get_step_context, set_task_source
from ._tracking.runs import PipelineRun, pipeline_run, start_run
from ._tracking.steps import log_metadata, track_step
from ._values import DType, MetadataType, Path, StorageSize, Uri

__version__ = "0.1.0"

__all__ = [
    "Carrier",
    "CarrierError",
    "Client",
    "ComponentError",
    "ComponentFault",
    "ConfigurationError",
    "ContextProcessPoolExecutor",
    "ContextThreadPoolExecutor",
    "DType",
    "DroppedValue",
    "MetadataError",
    "MetadataType",
    "MissingExtraError",
    "NoActiveContextError",
    "Path",
    "PipelineInfo",
    "PipelineRun",
    "PipelineRunInfo",
    "QueryError",
    "RecordSink",
    "RecordedRun",
    "RecordedStep",
    "RunNotFoundError",
    "RunRecord",
    "RunStateError",
    "StackComponent",
    "StepConfig",
    "StepRecord",
    "StepRunInfo",
    "StorageSize",
    "StoreError",
    "StoreNotFoundError",
    "Uri",
    "ZenmetaError",
    "__version__",
    "attach",
    "attach_process",
    "carried",
    "carry",
    "carry_context",
    "configure",
    "copy_store",
    "flush",
    "get_configuration",
    "get_run_context",
    "get_step_context",
    "log_metadata",
    "pipeline_run",
    "redact",
    "register_component",
    "reset_configuration",
    "set_task_source",
    "start_run",
    "track_step",
    "unregister_component",
]


def _name_as_public(value: Any) -> Any:
    """Say ``zenmeta.X``, not ``zenmeta._store.X``: tracebacks read
    ``zenmeta.StoreError``, and pickles survive moves of the private modules."""
    if isinstance(value, (type, FunctionType)):  # not MetadataType: a typing alias
        value.__module__ = __name__
    return value


for _public in __all__:
    if _public in globals():
        _name_as_public(globals()[_public])
del _public

if TYPE_CHECKING:
    from ._tracking.executor import ContextProcessPoolExecutor, ContextThreadPoolExecutor

_LAZY = ("ContextProcessPoolExecutor", "ContextThreadPoolExecutor")
"""Loaded on first use: ``concurrent.futures`` costs more than the rest of zenmeta."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from ._tracking import executor

        return _name_as_public(getattr(executor, name))
    raise AttributeError(f"module 'zenmeta' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every public name, the lazy ones too, so tab completion finds them."""
    return sorted({*globals(), *_LAZY})
