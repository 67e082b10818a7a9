"""What the MLflow component costs per step, next to MLflow doing the same alone.

Both sides write to one MLflow SQLite store in a temporary folder and log
one metric per step: a zenmeta step with ``MLFlowExperimentTracker`` (a
nested run created, made active, tagged, ended, and the step recorded in an
in-memory zenmeta store) against ``with mlflow.start_run(nested=True):`` in a
parent run. Rounds alternate between the two so that machine noise hits both;
the figures are medians of single steps.

    .venv/bin/python benchmarks/bench_mlflow.py [--steps 30] [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import mlflow
from mlflow.tracking._tracking_service import utils as tracking_utils

import zenmeta
from zenmeta.integrations.mlflow import MLFlowExperimentTracker
from zenmeta.testing import InMemoryStore

URI_VARIABLE = "MLFLOW_TRACKING_URI"


@zenmeta.track_step
def tracked_step(value: int) -> int:
    mlflow.log_metric("value", value)
    return value


def _zenmeta_round(tracker: MLFlowExperimentTracker, steps: int) -> list[float]:
    times = []
    with zenmeta.pipeline_run("bench_zenmeta", components=[tracker]):
        for value in range(steps):
            started = time.perf_counter()
            tracked_step(value)
            times.append(time.perf_counter() - started)
    return times


def _mlflow_round(experiment_id: str, steps: int) -> list[float]:
    times = []
    with mlflow.start_run(experiment_id=experiment_id, run_name="bench_mlflow"):
        for value in range(steps):
            started = time.perf_counter()
            with mlflow.start_run(run_name="tracked_step", nested=True):
                mlflow.log_metric("value", value)
            times.append(time.perf_counter() - started)
    return times


def bench_mlflow(steps: int = 30, rounds: int = 5) -> dict[str, float]:
    """Median seconds per step for both ways, and their ratio (zenmeta / MLflow)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    previous = (getattr(tracking_utils, "_tracking_uri", None), os.environ.get(URI_VARIABLE))
    with tempfile.TemporaryDirectory(prefix="zenmeta-bench-mlflow-") as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        zenmeta.configure(store=InMemoryStore())
        tracker = MLFlowExperimentTracker(tracking_uri=uri, experiment_name="bench")
        mlflow.set_tracking_uri(uri)
        try:
            experiment_id = mlflow.MlflowClient(uri).create_experiment("bench_plain")
            sides: dict[str, Callable[[], list[float]]] = {
                "zenmeta step + MLflow component": lambda: _zenmeta_round(tracker, steps),
                "mlflow.start_run(nested=True)": lambda: _mlflow_round(experiment_id, steps),
            }
            for run_round in sides.values():
                run_round()  # warm up: tables, caches, lazy imports
            times: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(rounds):
                for name, run_round in sides.items():
                    times[name] += run_round()
        finally:
            mlflow.set_tracking_uri(previous[0])  # type: ignore[arg-type]  # None resets
            if previous[1] is not None:
                os.environ[URI_VARIABLE] = previous[1]
            zenmeta.configure(store=None)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ours, theirs = medians.values()
    return {**medians, "ratio": ours / theirs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each side")
    arguments = parser.parse_args()
    result = bench_mlflow(arguments.steps, arguments.rounds)
    ratio = result.pop("ratio")
    print(f"{'per step, median (same SQLite MLflow store)':<46} {'ms':>8}")
    for name, seconds in result.items():
        print(f"{name:<46} {seconds * 1000:>8.2f}")
    print(f"{'ratio zenmeta / MLflow alone':<46} {ratio:>8.2f}")


if __name__ == "__main__":
    main()
