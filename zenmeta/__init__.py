"""zenmeta: run metadata from stack components, for plain Python.

Everything public is importable from here; the modules behind it are
private. Importing zenmeta loads no numpy, MLflow, SQLAlchemy or web
framework: integrations and stores import their libraries when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import configure, reset_configuration
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
from ._read.client import Client
from ._records import ComponentFault, DroppedValue, RecordedRun, RecordedStep
from ._redaction import redact
from ._store import flush
from ._tracking.components import StackComponent, register_component, unregister_component
from ._tracking.context import carry_context, get_run_context, get_step_context
from ._tracking.runs import PipelineRun, pipeline_run, start_run
from ._tracking.steps import log_metadata, track_step
from ._values import DType, MetadataType, Path, StorageSize, Uri

__version__ = "0.1.0"

__all__ = [
    "track_step",
    "Client",
    "pipeline_run",
    "start_run",
    "PipelineRun",
    "log_metadata",
    "redact",
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
    from ._tracking.executor import ContextThreadPoolExecutor


def __getattr__(name: str) -> Any:
    """Load ``ContextThreadPoolExecutor`` (and ``concurrent.futures``) on first use."""
    if name == "ContextThreadPoolExecutor":
        from ._tracking.executor import ContextThreadPoolExecutor

        return ContextThreadPoolExecutor
    raise AttributeError(f"module 'zenmeta' has no attribute {name!r}")
