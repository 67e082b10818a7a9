"""zenmeta in one minute: a small training pipeline tracked by two components.

Three steps (load data, train a logistic regression by gradient descent,
evaluate) log their metrics with plain ``mlflow.log_metric`` calls and
describe their arrays with ``zenmeta.log_metadata``. Two components add
their own metadata: the MLflow tracker (a parent MLflow run for the pipeline
run, a nested run per step, all in ``.zenmeta/mlflow.db``) and the
environment probe (interpreter, host, git commit, package versions). Both
are stored with the run in zenmeta's embedded store (``.zenmeta/``), which
the last lines print back.

Without code, the same components can be switched on for every run with
``ZENMETA_COMPONENTS=mlflow,environment`` or ``[tool.zenmeta] components``
in pyproject.toml.

Run it with ``make demo`` (or ``.venv/bin/python examples/demo.py``).
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import time

import mlflow
import numpy as np

import zenmeta
from zenmeta import DType, StorageSize, log_metadata, pipeline_run, track_step
from zenmeta.integrations.environment import EnvironmentComponent
from zenmeta.integrations.mlflow import MLFlowExperimentTracker

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def describe(name: str, array: np.ndarray) -> dict[str, object]:
    """What zenmeta keeps about an array: its shape, type and size in bytes."""
    return {
        f"{name}_shape": list(array.shape),
        f"{name}_dtype": DType(str(array.dtype)),
        f"{name}_size": StorageSize(array.nbytes),
    }


@track_step
def load_data(samples: int = 4000, features: int = 8, seed: int = 7) -> Arrays:
    """A synthetic binary classification problem, split 80/20."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, features))
    true_weights = rng.normal(size=features)
    y = (x @ true_weights + 0.5 * rng.normal(size=samples) > 0).astype(np.float64)
    cut = int(samples * 0.8)
    mlflow.log_params({"samples": samples, "features": features, "seed": seed})
    log_metadata({**describe("x_train", x[:cut]), **describe("x_test", x[cut:])})
    return x[:cut], y[:cut], x[cut:], y[cut:]


@track_step
def train(
    x: np.ndarray, y: np.ndarray, learning_rate: float = 0.5, epochs: int = 200
) -> np.ndarray:
    """Logistic regression by full-batch gradient descent."""
    mlflow.log_params({"learning_rate": learning_rate, "epochs": epochs})
    weights = np.zeros(x.shape[1])
    for epoch in range(epochs):
        predicted = 1.0 / (1.0 + np.exp(-(x @ weights)))
        weights -= learning_rate * x.T @ (predicted - y) / len(y)
        if epoch % 25 == 0 or epoch == epochs - 1:
            eps = 1e-12
            loss = -np.mean(y * np.log(predicted + eps) + (1 - y) * np.log(1 - predicted + eps))
            mlflow.log_metric("loss", float(loss), step=epoch)
    log_metadata(describe("weights", weights))
    return weights


@track_step
def evaluate(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy on the held-out split."""
    accuracy = float(np.mean(((x @ weights) > 0) == (y > 0.5)))
    mlflow.log_metric("accuracy", accuracy)
    log_metadata({"accuracy": accuracy})
    return accuracy


def show(run_id: str) -> None:
    """Print the recorded run: with zenmeta's CLI when it exists, else via ``Client``."""
    cli = ("zenmeta._ui.cli", "zenmeta.__main__")
    if all(importlib.util.find_spec(module) is not None for module in cli):
        command = [sys.executable, "-m", "zenmeta", "runs", "show", run_id]
        print(f"\n$ python -m zenmeta runs show {run_id}")
        subprocess.run(command, check=True)
        return
    client = zenmeta.Client()
    run = client.get_run(run_id)
    print(f"\nrun {run.name} ({run.id}): {run.status}, {run.duration:.2f} s")
    for source, values in run.metadata.items():
        print(f"  [{source}]")
        for key, value in values.items():
            print(f"    {key} = {value!r}")
    for step in client.list_steps(run):
        print(f"  step {step.name}: {step.status}, {step.duration * 1000:.0f} ms")
        for source, values in step.metadata.items():
            shown = ", ".join(f"{key}={value!r}" for key, value in values.items())
            print(f"    [{source}] {shown}")


def main() -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # MLflow's table set-up chatter
    started = time.perf_counter()
    tracker = MLFlowExperimentTracker(experiment_name="zenmeta-demo")
    components = [tracker, EnvironmentComponent(packages=["numpy", "mlflow"])]
    with pipeline_run("demo_training", components=components) as run:
        x_train, y_train, x_test, y_test = load_data()
        weights = train(x_train, y_train)
        accuracy = evaluate(weights, x_test, y_test)
    elapsed = time.perf_counter() - started
    print(f"accuracy {accuracy:.3f}; pipeline run {run.status} in {elapsed:.1f} s")
    print(f"MLflow UI: mlflow ui --backend-store-uri {tracker.tracking_uri()}")
    show(str(run.id))


if __name__ == "__main__":
    main()
