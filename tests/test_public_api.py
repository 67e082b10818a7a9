"""The facade: what `zenmeta` exports, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import zenmeta

EXPECTED = {
    "track_step", "Client", "pipeline_run", "start_run", "PipelineRun", "log_metadata",
    "get_step_context", "get_run_context", "StepRunInfo", "PipelineRunInfo", "StepConfig",
    "PipelineInfo", "StackComponent", "register_component", "unregister_component",
    "configure", "reset_configuration", "flush", "ContextThreadPoolExecutor", "carry_context",
    "Uri", "Path", "DType", "StorageSize", "MetadataType", "RecordedRun", "RecordedStep",
    "ComponentFault", "DroppedValue", "ZenmetaError", "NoActiveContextError", "RunStateError",
    "ComponentError", "MetadataError", "ConfigurationError", "StoreError", "RunNotFoundError",
    "MissingExtraError", "redact", "__version__",
}  # fmt: skip


def test_all_is_pinned() -> None:
    """__all__ lists exactly the public names, and each exists."""
    assert set(zenmeta.__all__) == EXPECTED
    for name in zenmeta.__all__:
        assert hasattr(zenmeta, name), name


def test_errors_share_one_base() -> None:
    """Every zenmeta error is a ZenmetaError."""
    for name in EXPECTED:
        value = getattr(zenmeta, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, zenmeta.ZenmetaError)


def test_import_is_light() -> None:
    """`import zenmeta` in a fresh interpreter loads no heavy optional library."""
    heavy = ["numpy", "mlflow", "sqlalchemy", "starlette", "jinja2", "click", "rich", "uvicorn"]
    code = f"import sys, zenmeta; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
