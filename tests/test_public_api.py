"""The facade: what `zenmeta` exports, and that importing it stays light."""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys

import pytest

import zenmeta

EXPECTED = {
    "track_step", "Client", "pipeline_run", "start_run", "PipelineRun", "log_metadata",
    "get_step_context", "get_run_context", "StepRunInfo", "PipelineRunInfo", "StepConfig",
    "PipelineInfo", "StackComponent", "register_component", "unregister_component",
    "configure", "reset_configuration", "flush", "copy_store", "ContextThreadPoolExecutor",
    "carry_context",
    "Uri", "Path", "DType", "StorageSize", "MetadataType", "RecordedRun", "RecordedStep",
    "ComponentFault", "DroppedValue", "ZenmetaError", "NoActiveContextError", "RunStateError",
    "ComponentError", "MetadataError", "ConfigurationError", "StoreError", "StoreNotFoundError",
    "RunNotFoundError", "MissingExtraError", "__version__", "get_configuration", "QueryError",
    "RecordSink", "RunRecord", "StepRecord", "redact",
    "Carrier", "CarrierError", "carry", "attach", "attach_process", "carried",
    "ContextProcessPoolExecutor",
    "set_task_source",
}  # fmt: skip


def test_all_is_pinned_and_sorted() -> None:
    """__all__ lists exactly the public names, sorted, and each exists."""
    assert set(zenmeta.__all__) == EXPECTED
    assert zenmeta.__all__ == sorted(zenmeta.__all__)
    for name in zenmeta.__all__:
        assert hasattr(zenmeta, name), name


def test_every_public_class_and_function_names_zenmeta_as_its_module() -> None:
    """Tracebacks say ``zenmeta.StoreError`` and pickles name no private module."""
    for name in zenmeta.__all__:
        value = getattr(zenmeta, name)
        if isinstance(value, type) or inspect.isfunction(value):
            assert value.__module__ == "zenmeta", name
    info = zenmeta.PipelineInfo("p")
    assert b"zenmeta._" not in pickle.dumps(info)
    assert pickle.loads(pickle.dumps(info)) == info


def test_dir_lists_the_lazily_loaded_names_too() -> None:
    """Tab completion finds ``ContextThreadPoolExecutor`` before it is first used."""
    code = "import zenmeta; print('ContextThreadPoolExecutor' in dir(zenmeta))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "True"
    assert set(zenmeta.__all__) <= set(dir(zenmeta))


def test_a_pipeline_run_shows_users_only_what_is_theirs() -> None:
    """Engine methods (saving steps, numbering invocations, the stack, the store) are private."""
    public = {name for name in dir(zenmeta.PipelineRun) if not name.startswith("_")}
    assert {"end", "metadata", "start_time", "end_time"} <= public
    assert not public & {"save_step", "next_invocation", "stack", "store"}
    with zenmeta.pipeline_run("p") as run:
        assert {"id", "name", "status"} <= set(vars(run))
        assert not {"stack", "store"} & set(vars(run))


def test_get_configuration_reports_the_settings_in_effect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Integrations read settings through the public API, environment included."""
    monkeypatch.setenv("ZENMETA_DURABILITY", "immediate")
    zenmeta.configure(store="memory://", strict=True)
    found = zenmeta.get_configuration()
    assert (found.store, found.strict, found.durability) == ("memory://", True, "immediate")
    assert found.implicit_runs is True


def test_errors_share_one_base() -> None:
    """Every zenmeta error is a ZenmetaError."""
    for name in EXPECTED:
        value = getattr(zenmeta, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, zenmeta.ZenmetaError)


def test_import_is_light() -> None:
    """`import zenmeta` in a fresh interpreter loads no heavy optional library."""
    heavy = ["numpy", "mlflow", "sqlalchemy", "starlette", "jinja2", "click", "rich", "uvicorn"]
    heavy += ["opentelemetry", "alembic", "psycopg", "dask", "ray", "cloudpickle", "joblib"]
    heavy += ["concurrent.futures", "multiprocessing"]
    code = f"import sys, zenmeta; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_settings_read_the_environment_as_it_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast environment read sees every change made through os.environ."""
    from zenmeta._config import environment

    for value in ("1", "héllo ✓", ""):
        monkeypatch.setenv("ZENMETA_STORE", value)
        assert environment("ZENMETA_STORE") == value == os.environ.get("ZENMETA_STORE")
    monkeypatch.delenv("ZENMETA_STORE")
    assert environment("ZENMETA_STORE") is None
    monkeypatch.setenv("ZENMETA_DURABILITY", "immediate")
    assert zenmeta.get_configuration().durability == "immediate"
    assert environment("ZENMETA_UNLISTED") is None
