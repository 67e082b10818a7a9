"""Components that ship with zenmeta, each importing its library only when used.

- ``zenmeta.integrations.mlflow.MLFlowExperimentTracker`` (flavor ``mlflow``,
  extra ``zenmeta[mlflow]``): a parent MLflow run per pipeline run, a nested
  run per step.
- ``zenmeta.integrations.environment.EnvironmentComponent`` (flavor
  ``environment``): host, interpreter, script, git and package versions.
- ``zenmeta.integrations.resources.ResourcesComponent`` (flavor
  ``resources``; GPU figures with the extra ``zenmeta[gpu]``): wall and CPU
  time, memory and GPU use per step.

All are also reachable by flavor name through the ``zenmeta.components``
entry-point group, like any third-party component.
"""
