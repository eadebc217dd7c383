"""The optimization-tasks topic: what the scheduler (`cie schedule`) publishes, one message per
run of a due task of optimization_queue, keyed by its task id. Workers run the task and report
back on improvement-events (OptimizationStarted, OptimizationCompleted, OptimizationFailed)
with the same ``task_id`` and ``run_number``."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from consumers.contracts.base import Contract, JsonObject, Name30, Name50, PositiveInt, UtcTime
from consumers.contracts.improvements import Frequency


class OptimizationTask(Contract, frozen=True, kw_only=True):
    """One run of a recurring optimization task."""

    rules: ClassVar[tuple[str, ...]] = (
        "a run may be delivered more than once (a publish retried after a failure): "
        "(task_id, run_number) names it, run it once",
    )
    task_id: UUID
    run_number: PositiveInt
    task_type: Name30
    component_id: Name50
    frequency: Frequency
    priority: PositiveInt
    scheduled_for: UtcTime  # the slot this run is for (next_run_at when it was claimed)
    config: JsonObject
