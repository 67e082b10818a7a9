"""MLflow as a zenmeta component: a parent run per pipeline run, a nested run per step.

MLflow is imported by the hooks, never by importing this module, so that
registering the component costs nothing until a run starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from uuid import UUID

from zenmeta import (
    ConfigurationError,
    MetadataType,
    MissingExtraError,
    PipelineRunInfo,
    StackComponent,
    StepRunInfo,
    Uri,
    get_configuration,
)

from . import _mlflow_context, _mlflow_environment
from ._urls import without_credentials

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MLFlowExperimentTracker", "local_tracking_uri"]

PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_ID_TAG = "zenmeta.run_id"
STEP_RUN_ID_TAG = "zenmeta.step_run_id"
PIPELINE_TAG = "zenmeta.pipeline"
DEFAULT_REQUEST_TIMEOUT = 10
DEFAULT_REQUEST_RETRIES = 1
_MAX_CARRIED = 8
_warned_inactive: list[bool] = []
_TIMEOUT_VARIABLE = "MLFLOW_HTTP_REQUEST_TIMEOUT"
_RETRIES_VARIABLE = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"


def _mlflow_installed() -> bool:
    if "mlflow" in sys.modules:
        return sys.modules["mlflow"] is not None
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):
        return False


def _zenmeta_folder() -> str:
    """The folder of the SQLite store runs write to, else ``./.zenmeta``."""
    store = get_configuration().store
    if store.startswith("sqlite:///"):
        path = store[len("sqlite:///") :].split("?", 1)[0]
        if path and path != ":memory:":
            return os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    elif isinstance(store, str) and "://" not in store and not store.startswith("memory:"):
        return os.path.dirname(os.path.abspath(os.path.expanduser(store)))  # a plain path
    return os.path.join(os.getcwd(), ".zenmeta")


def local_tracking_uri() -> str:
    """``sqlite:///…/.zenmeta/mlflow.db``: MLflow's own default backend (SQLite),
    kept beside zenmeta's store. Its first use takes about 2 s (MLflow creates
    its tables); the folder is created if missing."""
    folder = _zenmeta_folder()
    os.makedirs(folder, exist_ok=True)
    return "sqlite:///" + os.path.join(folder, "mlflow.db").replace(os.sep, "/")


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _summary(error: BaseException) -> str:
    """The cause repeated by every later skipped step, kept short."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 160 else text[:157] + "..."


def _run_url(tracking_uri: str, experiment_id: str, run_id: str) -> Uri:
    base = without_credentials(tracking_uri).rstrip("/")
    return Uri(f"{base}/#/experiments/{experiment_id}/runs/{run_id}")


@dataclass
class _RunState:
    """One pipeline run as this component sees it."""

    tracking_uri: str = ""
    client: MlflowClient | None = None
    experiment_id: str = ""
    run_id: str = ""
    error: str = ""  # set once an MLflow call failed: later steps skip MLflow at once
    holding_settings: bool = False
    pushed: _mlflow_context.PushedRun | None = field(default=None, repr=False)


@dataclass
class _StepState:
    """One step's nested MLflow run and how to make it inactive again."""

    zenmeta_run_id: UUID
    run_id: str
    pushed: _mlflow_context.PushedRun | None = field(default=None, repr=False)
    skipped: str = ""  # why MLflow was skipped for this step, if it was


class MLFlowExperimentTracker(StackComponent):
    """Track each pipeline run as a parent MLflow run and each step as a nested run.

    At run start the experiment (``experiment_name``, else the pipeline's name)
    is created if missing and a parent run, tagged ``zenmeta.run_id``, is
    created and remembered by id. Each step gets a nested run named after its
    invocation (``train``, ``train_2``…) that is MLflow's active run inside the
    step, so ``mlflow.log_metric(...)`` there lands in it. Between steps, inside
    ``with pipeline_run(...)``, the parent run is the active one, so
    ``mlflow.log_param(...)`` or autologging there lands in the parent, never in
    a stray run of the ``Default`` experiment. A step that calls
    ``with mlflow.start_run():`` itself gets a run nested under its own, in its
    experiment (as ``nested=True`` would). Runs end ``FINISHED`` or
    ``FAILED``; step runs still open when their pipeline run ends (an abandoned
    generator step) end ``KILLED``.

    Tracking URI: ``tracking_uri``, else MLflow's own setting
    (``MLFLOW_TRACKING_URI`` or ``mlflow.set_tracking_uri``), else
    ``local_tracking_uri()``, a SQLite file beside zenmeta's store. For the
    run's duration MLflow's process-wide tracking URI, the credentials given
    here and the HTTP limits are set (the user's fluent calls need them) and
    then restored; two concurrent runs needing different URIs cannot share a
    process, and the second one gets no MLflow runs (a recorded fault).

    Active run: MLflow keeps it per thread. This component replaces that
    store with a per-context one (see ``_mlflow_context``), so each step run
    through ``ContextThreadPoolExecutor``/``carry_context`` and each of
    several concurrent async steps on one event loop sees its own run. Limits:
    a step in a plain ``threading.Thread`` (no carried context) sees no run, as
    with MLflow alone; while a generator step is suspended at ``yield``, its
    run stays the active one for the code iterating over it; a non-nested
    ``mlflow.start_run()`` inside a step raises, as inside any MLflow run.

    Failures: every MLflow call made by the hooks is bounded by
    ``request_timeout`` seconds and ``request_retries`` retries (default 10 s
    and 1 retry, unless ``MLFLOW_HTTP_REQUEST_TIMEOUT``/``…_MAX_RETRIES`` are
    set; the same limits apply to MLflow calls in the steps during the run).
    Once a call fails, the rest of the run skips MLflow at once instead of
    waiting on a dead server again: the failure is one fault and one warning on
    the run, and each skipped step records why as ``mlflow_skipped``.
    """

    flavor = "mlflow"

    def __init__(
        self,
        name: str | None = None,
        *,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        tracking_username: str | None = None,
        tracking_password: str | None = None,
        tracking_token: str | None = None,
        request_timeout: int | None = None,
        request_retries: int | None = None,
    ) -> None:
        if not _mlflow_installed():
            raise MissingExtraError("mlflow", "mlflow")
        super().__init__(name)
        self._tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.tags = dict(tags or {})
        self._overrides: dict[str, str] = {}
        self._defaults = {
            _TIMEOUT_VARIABLE: str(DEFAULT_REQUEST_TIMEOUT),
            _RETRIES_VARIABLE: str(DEFAULT_REQUEST_RETRIES),
        }
        for variable, value in (
            ("MLFLOW_TRACKING_USERNAME", tracking_username),
            ("MLFLOW_TRACKING_PASSWORD", tracking_password),
            ("MLFLOW_TRACKING_TOKEN", tracking_token),
            (_TIMEOUT_VARIABLE, request_timeout),
            (_RETRIES_VARIABLE, request_retries),
        ):
            if value is not None:
                self._overrides[variable] = str(value)
                self._defaults.pop(variable, None)
        self._runs: dict[UUID, _RunState] = {}
        self._steps: dict[UUID, _StepState] = {}
        self._lock = threading.Lock()
        self._active: _mlflow_context.ContextRunStack | None = None
        self._carried: list[UUID] = []  # runs of other processes this one works for

    def tracking_uri(self) -> str:
        """The tracking URI a run starting now uses."""
        if self._tracking_uri:
            return self._tracking_uri
        from mlflow.tracking._tracking_service.utils import get_tracking_uri, is_tracking_uri_set

        if is_tracking_uri_set():  # type: ignore[no-untyped-call]
            return get_tracking_uri()
        return local_tracking_uri()

    # -- run hooks ---------------------------------------------------------
    def prepare_pipeline_run(self, info: PipelineRunInfo) -> None:
        """Create the experiment if needed and the run's parent MLflow run."""
        state = self._runs[info.run_id] = _RunState()
        try:
            from mlflow import MlflowClient
        except ImportError as error:
            state.error = "mlflow cannot be imported"
            raise MissingExtraError("mlflow", "mlflow") from error
        try:
            self._active = _mlflow_context.install()
            if self._active is None and not _warned_inactive:
                _warned_inactive.append(True)
                logging.getLogger("zenmeta").warning(
                    "zenmeta: this MLflow keeps its active run in an unknown way; step runs "
                    "are created, but mlflow.log_metric() inside a step will not find them"
                )
            state.tracking_uri = self.tracking_uri()
            _mlflow_environment.acquire(state.tracking_uri, self._overrides, self._defaults)
            state.holding_settings = True
            client = state.client = MlflowClient(tracking_uri=state.tracking_uri)
            state.experiment_id = self._experiment_id(client, info.pipeline_name, state)
            tags = {
                **self.tags,
                RUN_ID_TAG: str(info.run_id),
                PIPELINE_TAG: info.pipeline_name,
            }
            outer = self._runs.get(info.parent_run_id) if info.parent_run_id else None
            if outer and outer.run_id and outer.experiment_id == state.experiment_id:
                tags[PARENT_RUN_TAG] = outer.run_id
            run = client.create_run(state.experiment_id, run_name=info.run_name, tags=tags)
            state.run_id = run.info.run_id
            if self._active is not None:  # active for the run's context, between steps
                from mlflow.tracking.fluent import ActiveRun

                state.pushed = self._active.push(ActiveRun(run))  # type: ignore[no-untyped-call]
        except Exception as error:
            state.error = _summary(error)
            raise

    def get_pipeline_run_metadata(self, run_id: UUID) -> dict[str, MetadataType]:
        """Where the parent run is: tracking URI, experiment, run id, run page."""
        state = self._runs.get(run_id)
        if state is None or not state.run_id:
            return {}
        metadata: dict[str, MetadataType] = {
            "mlflow_tracking_uri": Uri(without_credentials(state.tracking_uri)),
            "mlflow_experiment_id": state.experiment_id,
            "mlflow_run_id": state.run_id,
        }
        if _is_http(state.tracking_uri):
            metadata["mlflow_run_url"] = _run_url(
                state.tracking_uri, state.experiment_id, state.run_id
            )
        return metadata

    def cleanup_pipeline_run(
        self, info: PipelineRunInfo, run_failed: bool, status: str | None = None
    ) -> None:
        """End step runs left open as KILLED, then the parent run (KILLED when
        the run was interrupted); restore settings."""
        state = self._runs.pop(info.run_id, None)
        if state is None:
            return
        try:
            left_open: list[Any] = []
            if state.pushed is not None and self._active is not None:
                left_open = self._active.pop(state.pushed)
            if state.client is None or not state.run_id:
                return
            with self._lock:
                orphans = [
                    (key, step)
                    for key, step in self._steps.items()
                    if step.zenmeta_run_id == info.run_id
                ]
                for key, _ in orphans:
                    del self._steps[key]
            for _, step in orphans:
                self._end_step_run(state.client, step, "KILLED")
            failed = "KILLED" if status == "interrupted" else "FAILED"
            final = failed if run_failed else "FINISHED"
            for run in reversed(left_open):  # started between steps and never ended
                state.client.set_terminated(run.info.run_id, final)
            state.client.set_terminated(state.run_id, final)
        finally:
            if state.holding_settings:
                _mlflow_environment.release()

    # -- across processes (zenmeta.carry / attach) --------------------------
    def get_carried_state(self, run_id: UUID) -> dict[str, str] | None:
        """The parent run a worker's step runs nest under, and where it is
        (the tracking URI without credentials: a worker brings its own)."""
        state = self._runs.get(run_id)
        if state is None or not state.run_id:
            return None
        return {
            "tracking_uri": without_credentials(state.tracking_uri),
            "experiment_id": state.experiment_id,
            "run_id": state.run_id,
        }

    def attach_carried_state(self, run_id: UUID, carried: Mapping[str, str]) -> None:
        """In a worker: adopt the owner's parent run, so this process's step
        runs hang under it. The component's own ``tracking_uri`` wins over
        the carried one; MLflow's settings are held while this process works
        for the run (the last ``_MAX_CARRIED`` runs it joined)."""
        state = self._runs[run_id] = _RunState()
        try:
            from mlflow import MlflowClient
        except ImportError as error:
            state.error = "mlflow cannot be imported"
            raise MissingExtraError("mlflow", "mlflow") from error
        self._carried.append(run_id)
        while len(self._carried) > _MAX_CARRIED:
            old = self._runs.pop(self._carried.pop(0), None)
            if old is not None and old.holding_settings:
                _mlflow_environment.release()
        try:
            self._active = _mlflow_context.install()
            state.tracking_uri = self._tracking_uri or carried.get("tracking_uri") or ""
            state.tracking_uri = state.tracking_uri or self.tracking_uri()
            _mlflow_environment.acquire(state.tracking_uri, self._overrides, self._defaults)
            state.holding_settings = True
            state.client = MlflowClient(tracking_uri=state.tracking_uri)
            state.experiment_id = carried["experiment_id"]
            state.run_id = carried["run_id"]
        except Exception as error:
            state.error = _summary(error)
            raise

    # -- step hooks --------------------------------------------------------
    def prepare_step_run(self, info: StepRunInfo) -> None:
        """Start the step's nested run and make it active in the step's context."""
        state = self._runs.get(info.run_id)
        if state is None:
            raise RuntimeError(f"no MLflow run was started for zenmeta run {info.run_id}")
        if state.error or state.client is None:
            # The run's own fault already said why, once; a warning per step
            # would repeat it. The step records the reason instead.
            reason = f"MLflow failed earlier in this run ({state.error or 'no client'})"
            self._steps[info.step_run_id] = _StepState(info.run_id, "", None, reason)
            return
        from mlflow.tracking.fluent import ActiveRun

        outer = self._steps.get(info.parent_step_run_id) if info.parent_step_run_id else None
        tags = {
            **self.tags,
            PARENT_RUN_TAG: outer.run_id if outer else state.run_id,
            RUN_ID_TAG: str(info.run_id),
            STEP_RUN_ID_TAG: str(info.step_run_id),
            PIPELINE_TAG: info.pipeline.name,
        }
        try:
            run = state.client.create_run(
                state.experiment_id, run_name=info.pipeline_step_name, tags=tags
            )
        except Exception as error:
            state.error = _summary(error)
            raise
        pushed = None if self._active is None else self._active.push(ActiveRun(run))  # type: ignore[no-untyped-call]
        self._steps[info.step_run_id] = _StepState(info.run_id, run.info.run_id, pushed)

    def get_step_run_metadata(self, info: StepRunInfo) -> dict[str, MetadataType]:
        """The step's MLflow run id and experiment id, as ZenML's tracker records them."""
        step = self._steps.get(info.step_run_id)
        state = self._runs.get(info.run_id)
        if step is None or state is None:
            return {}
        if step.skipped:
            return {"mlflow_skipped": step.skipped}
        metadata: dict[str, MetadataType] = {
            "mlflow_run_id": step.run_id,
            "mlflow_experiment_id": state.experiment_id,
        }
        if _is_http(state.tracking_uri):
            metadata["mlflow_run_url"] = _run_url(
                state.tracking_uri, state.experiment_id, step.run_id
            )
        return metadata

    def cleanup_step_run(self, info: StepRunInfo, step_failed: bool) -> None:
        """End the step's run FINISHED or FAILED, with any run the step left open."""
        with self._lock:
            step = self._steps.pop(info.step_run_id, None)
        state = self._runs.get(info.run_id)
        if step is None or state is None or state.client is None or step.skipped:
            return
        try:
            self._end_step_run(state.client, step, "FAILED" if step_failed else "FINISHED")
        except Exception as error:
            state.error = _summary(error)
            raise

    # -- internals -----------------------------------------------------------
    def _end_step_run(self, client: MlflowClient, step: _StepState, status: str) -> None:
        """Make the run inactive first, so a failing server never leaves it active."""
        left_open: list[Any] = []
        if step.pushed is not None and self._active is not None:
            left_open = self._active.pop(step.pushed)
        for run in reversed(left_open):
            client.set_terminated(run.info.run_id, status)
        client.set_terminated(step.run_id, status)

    def _experiment_id(self, client: MlflowClient, pipeline_name: str, state: _RunState) -> str:
        """The experiment's id, creating it if missing (a concurrent creator wins)."""
        from mlflow.exceptions import MlflowException

        name = self.experiment_name or pipeline_name
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(
                    name, artifact_location=self._artifact_location(name, state.tracking_uri)
                )
            except MlflowException:
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise ConfigurationError(
                f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted; "
                "restore it in MLflow or give the component another experiment_name"
            )
        return str(experiment.experiment_id)

    def _artifact_location(self, name: str, tracking_uri: str) -> str | None:
        """Artifacts of the local default go beside it, not into ``./mlruns``."""
        if self._tracking_uri or tracking_uri != local_tracking_uri():
            return None
        folder = FilePath(_zenmeta_folder(), "mlartifacts", quote(name, safe=""))
        return folder.as_uri()
