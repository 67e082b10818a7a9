"""Dask: steps run on a cluster's workers belong to the run that submitted them.

A Dask task runs in another process, where no run is current, so without help
each ``@track_step`` there opens a one-step implicit run of its own. Two ways
in, both built on zenmeta's carrier (plain data, never a context):

- **The robust path** — ``client.map(zenmeta.carried(step), xs)`` and
  ``client.submit(zenmeta.carried(step), x)``: the wrapper carries the run and
  the submitting step, survives any graph optimisation, tokenizes
  deterministically, and stores its steps before the task returns.
- **``dask.delayed`` graphs, no wrapper** — build the graph inside
  ``with zenmeta.integrations.dask.annotate():``; each task carries the
  carrier's text form as the ``zenmeta`` annotation, and a step starting in
  such a task joins the run. Annotations are a hint Dask may lose: with
  linear fusion of delayed graphs switched on (``optimization.fuse.delayed``,
  off by default in Dask 2026.8) the fused task carries no annotation at all,
  and a task built outside the block has none, so their steps open implicit
  runs as anywhere (``tests/integrations/test_dask.py`` shows both). Compute
  with ``optimize_graph=False`` to keep every annotation, or use ``carried``.

Both need :func:`install`, which registers :class:`ZenmetaWorkerPlugin` on
every worker — now, and on every worker that starts later (the scheduler
hands registered plugins to new and restarted workers). In each worker it
tells zenmeta the Dask task key and attempt of the task a step runs in
(``zenmeta.set_task_source``), so every execution is its own step grouped by
task key (Dask recomputes lost results and retries failed tasks: one call can
be several executions), and it flushes on teardown, because a nanny may end
its worker in ways that skip ``atexit``.

The carrier's header holds no password: annotations are visible to the
scheduler and its dashboard. Dask and distributed are imported when first
used; without them the error names the extra (``pip install 'zenmeta[dask]'``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import zenmeta
from zenmeta import MissingExtraError

if TYPE_CHECKING:
    from distributed import Client

    from zenmeta import Carrier

    from ._dask_plugin import ZenmetaWorkerPlugin

__all__ = ["ANNOTATION", "PLUGIN_NAME", "ZenmetaWorkerPlugin", "annotate", "install"]

ANNOTATION = "zenmeta"
"""The task annotation that holds a carrier's header (``Carrier.to_header()``)."""

PLUGIN_NAME = "zenmeta"
"""The name the worker plugin is registered under: installing twice replaces it."""


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module, "dask") from None


def install(client: Client, *, name: str = PLUGIN_NAME) -> ZenmetaWorkerPlugin:
    """Register zenmeta's worker plugin with ``client``'s cluster; returns it.

    Every worker running now sets it up at once, and every worker that joins
    or restarts later sets it up before its first task. Installing again under
    the same ``name`` replaces the plugin (Dask tears the old one down first).
    A small scheduler plugin beside it numbers each dispatch of a task, so a
    rerun on another worker is recorded as attempt 2 (the scheduler must
    accept pickled plugins: Dask's default ``distributed.scheduler.pickle``).
    """
    _require("distributed")
    from ._dask_plugin import ZenmetaSchedulerPlugin, ZenmetaWorkerPlugin

    client.register_plugin(ZenmetaSchedulerPlugin(), name=f"{name}-attempts")
    plugin = ZenmetaWorkerPlugin()
    client.register_plugin(plugin, name=name)
    return plugin


@contextmanager
def annotate(carrier: Carrier | None = None) -> Iterator[Carrier]:
    """Annotate every Dask task built inside the block with a carrier.

    ``carrier`` defaults to ``zenmeta.carry()``: the current run, with the
    current step as the parent of the tasks' steps (outside a run that raises
    ``zenmeta.NoActiveContextError``). Build the ``dask.delayed`` graph inside
    the block; computing it may happen later. Yields the carrier.
    """
    dask = _require("dask")
    if carrier is None:
        carrier = zenmeta.carry()
    with dask.annotate(**{ANNOTATION: carrier.to_header()}):
        yield carrier


def __getattr__(name: str) -> Any:
    # The plugin class subclasses distributed's WorkerPlugin, so it lives in a
    # module that imports distributed; it is reached here on first use only.
    if name == "ZenmetaWorkerPlugin":
        _require("distributed")
        from ._dask_plugin import ZenmetaWorkerPlugin

        return ZenmetaWorkerPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
