"""improvement-events → improvement_events, model_performance, ab_tests, optimization_queue.

One topic carries every kind of event the improvement engine emits, as a tagged union on the
``type`` field. Each event has an ``event_id``; ``applied_events`` records the ids already
applied, so a redelivered event changes nothing (``consecutive_failures`` is never counted
twice), and a task's reports apply only to the run that is running (a late or repeated one
changes nothing, see ingest.sql). Events are applied one statement each, in Kafka order,
inside the batch's transaction: this topic carries a handful of events a minute, and
lifecycle events update state row by row.
An event about an A/B test or task that does not exist (yet) is refused with that reason.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
import structlog

from consumers.contracts.improvements import (
    AbTestConcluded,
    AbTestResults,
    AbTestStarted,
    Event,
    Improvement,
    ImprovementEvent,
    ModelEvaluation,
    OptimizationCompleted,
    OptimizationFailed,
    OptimizationScheduled,
    OptimizationStarted,
)
from consumers.ingest.pipelines.base import Pipeline, Rejection
from consumers.platform.db import Conn, queries

log = structlog.get_logger(__name__)

_json = msgspec.json.Encoder(decimal_format="number")


def as_json(value: Any) -> str | None:
    return None if value is None else _json.encode(value).decode()


def statement_and_args(event: Event) -> tuple[str, tuple[Any, ...]]:
    """The named query that applies ``event`` and its parameters."""
    match event:
        case Improvement():
            return "improvement_insert", (
                event.event_id, event.event_type, event.event_timestamp, event.component_type,
                event.component_id, as_json(event.old_value), as_json(event.new_value),
                event.trigger_reason, as_json(event.performance_before),
                as_json(event.performance_after), as_json(event.improvement_metrics),
                event.automated, event.approved_by, event.approval_timestamp,
                event.can_rollback, event.rollback_timestamp)
        case ModelEvaluation():
            return "model_evaluation_insert", (
                event.model_version, event.model_type, event.evaluation_date,
                event.training_samples, event.testing_samples, event.training_period_start,
                event.training_period_end, event.accuracy, event.precision, event.recall,
                event.f1_score, event.auc_roc, event.brier_score,
                event.expected_calibration_error, event.trending_up_accuracy,
                event.trending_down_accuracy, event.ranging_accuracy, event.volatile_accuracy,
                as_json(event.feature_importance), event.status)
        case AbTestStarted():
            return "ab_test_start", (
                event.test_id, event.test_name, event.control_version, event.treatment_version,
                event.test_type, event.control_traffic_percent, event.treatment_traffic_percent,
                event.started_at, event.scheduled_duration_hours, event.success_metric,
                event.minimum_improvement_percent)
        case AbTestResults():
            return "ab_test_results", (
                event.test_id, as_json(event.control_metrics), as_json(event.treatment_metrics),
                event.improvement_percent)
        case AbTestConcluded():
            return "ab_test_conclude", (
                event.test_id, event.outcome, event.ended_at, event.conclusion,
                event.improvement_percent)
        case OptimizationScheduled():
            return "optimization_schedule", (
                event.task_id, event.task_type, event.component_id, event.frequency,
                event.next_run_at, event.priority, as_json(event.config), event.enabled)
        case OptimizationStarted():
            return "optimization_start", (event.task_id, event.started_at, event.run_number)
        case OptimizationCompleted():
            return "optimization_complete", (
                event.task_id, event.completed_at, as_json(event.result), event.next_run_at,
                event.run_number)
        case OptimizationFailed():
            return "optimization_fail", (
                event.task_id, event.failed_at, event.error, event.next_run_at,
                event.run_number)
    raise TypeError(f"no statement for {type(event).__name__}")


async def _stale(conn: Conn, event: Event) -> bool:
    """A task report that changed nothing although its task exists: a start after the run
    ended, a report of another run, a report twice (the status guards of ingest.sql)."""
    if not isinstance(event, OptimizationStarted | OptimizationCompleted | OptimizationFailed):
        return False
    known: bool = await conn.fetchval(queries("ingest")["optimization_task_known"],
                                      event.task_id)
    return known


class Statement(NamedTuple):
    """An event ready to apply: its payloads already JSON text (``accept`` then drops them
    from the event)."""

    event: Event
    query: str  # the named query that applies it
    args: tuple[Any, ...]


class ImprovementsPipeline(Pipeline):
    name = "improvements"
    event_type = ImprovementEvent

    def ready(self, event: Any) -> Statement:
        query, args = statement_and_args(event)
        return Statement(event, query, args)

    def held_bytes(self, ready: Any) -> int:
        statement: Statement = ready
        return sum(sys.getsizeof(arg) for arg in statement.args if isinstance(arg, str))

    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        sql = queries("ingest")
        statements: Sequence[Statement] = events
        rejections = []
        for index, (event, query, args) in enumerate(statements):
            kind = type(event).__struct_config__.tag
            first_time = await conn.fetchval(sql["applied_event_record"], event.event_id, kind)
            if not first_time:
                continue  # redelivered
            status = await conn.execute(sql[query], *args)
            if status == "UPDATE 0" and await _stale(conn, event):
                log.info("improvements.stale_event", kind=kind, event_id=str(event.event_id),
                         task_id=str(getattr(event, "task_id", "")))
                continue  # out of order or about another run: changes nothing, applied
            if status == "UPDATE 0":  # the test or task it is about is unknown
                await conn.execute(sql["applied_event_forget"], event.event_id)
                rejections.append(Rejection(
                    index, "UnknownSubject",
                    f"{kind} {event.event_id}: no such A/B test or optimization task "
                    "(its start or scheduling event has not been applied)"))
        return rejections
