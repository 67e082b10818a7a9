"""zenmeta: run metadata from stack components, for plain Python.

Everything public is importable from here; the modules behind it are
private. Importing zenmeta loads no numpy, MLflow, SQLAlchemy or web
framework: integrations and stores import their libraries when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._client import Client
from ._components import StackComponent, register_component, unregister_component
from ._config import configure, reset_configuration
from ._context import carry_context, get_run_context, get_step_context
from ._errors import (
    ComponentError,
    ConfigurationError,
    MetadataError,
    MissingExtraError,
    NoActiveContextError,
    RunNotFoundError,
    RunStateError,
    StoreError,
    ZenmetaError,
)
from ._info import PipelineInfo, PipelineRunInfo, StepConfig, StepRunInfo
from ._records import ComponentFault, DroppedValue, RecordedRun, RecordedStep
from ._runs import PipelineRun, pipeline_run, start_run
from ._steps import log_metadata, track_step
from ._stores import flush
from ._types import DType, MetadataType, Path, StorageSize, Uri

__version__ = "0.1.0"

__all__ = [
    "track_step",
    "Client",
    "pipeline_run",
    "start_run",
    "PipelineRun",
    "log_metadata",
    "get_step_context",
    "get_run_context",
    "StepRunInfo",
    "PipelineRunInfo",
    "StepConfig",
    "PipelineInfo",
    "StackComponent",
    "register_component",
    "unregister_component",
    "configure",
    "reset_configuration",
    "flush",
    "ContextThreadPoolExecutor",
    "carry_context",
    "Uri",
    "Path",
    "DType",
    "StorageSize",
    "MetadataType",
    "RecordedRun",
    "RecordedStep",
    "ComponentFault",
    "DroppedValue",
    "ZenmetaError",
    "NoActiveContextError",
    "RunStateError",
    "ComponentError",
    "MetadataError",
    "ConfigurationError",
    "StoreError",
    "RunNotFoundError",
    "MissingExtraError",
    "__version__",
]


if TYPE_CHECKING:
    from ._executor import ContextThreadPoolExecutor


def __getattr__(name: str) -> Any:
    """Load ``ContextThreadPoolExecutor`` (and ``concurrent.futures``) on first use."""
    if name == "ContextThreadPoolExecutor":
        from ._executor import ContextThreadPoolExecutor

        return ContextThreadPoolExecutor
    raise AttributeError(f"module 'zenmeta' has no attribute {name!r}")
