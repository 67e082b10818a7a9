"""Frozen descriptions of a run and of one step execution.

Field names and shapes follow ZenML's ``StepRunInfo`` where it has them, so a
component written for ZenML reads these objects unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

__all__ = ["StepConfig", "PipelineInfo", "StepRunInfo", "PipelineRunInfo"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def utc_from_ns(ns: int) -> datetime:
    """Times are kept as integer nanoseconds (cheap to take) and shown as UTC."""
    from datetime import datetime, timezone  # on first read, not at import

    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)


class StepConfig(NamedTuple):
    """The static configuration of a decorated step, shared by its calls.

    ``components`` holds the names of the components the step selected, or
    ``None`` when it uses the run's whole stack.
    """

    name: str
    settings: Mapping[str, Any] = _EMPTY
    components: tuple[str, ...] | None = None


class PipelineInfo(NamedTuple):
    """The pipeline a run belongs to; ZenML's ``info.pipeline``."""

    name: str


class StepRunInfo(NamedTuple):
    """One execution of a step, handed to every component hook.

    A named tuple rather than a dataclass: it is immutable all the same, and
    it is built on every step call, where a frozen dataclass costs ~1.5 µs.
    """

    step_run_id: UUID
    run_id: UUID
    run_name: str
    pipeline_step_name: str
    config: StepConfig
    pipeline: PipelineInfo
    parent_step_run_id: UUID | None
    start_time_ns: int

    @property
    def start_time(self) -> datetime:
        """When the step started, in UTC."""
        return utc_from_ns(self.start_time_ns)


class PipelineRunInfo(NamedTuple):
    """One pipeline run, handed to the run-level hooks."""

    run_id: UUID
    run_name: str
    pipeline: PipelineInfo
    parent_run_id: UUID | None
    tags: tuple[str, ...]
    start_time_ns: int

    @property
    def pipeline_name(self) -> str:
        return self.pipeline.name

    @property
    def start_time(self) -> datetime:
        """When the run started, in UTC."""
        return utc_from_ns(self.start_time_ns)
