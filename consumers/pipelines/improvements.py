"""improvement-events → improvement_events, model_performance, ab_tests, optimization_queue.

One topic carries every kind of event the improvement engine emits, as a tagged union on the
``type`` field. Each event has an ``event_id``; ``applied_events`` records the ids already
applied, so a redelivered event changes nothing (``consecutive_failures`` is never counted
twice). Events are applied one statement each, in Kafka order, inside the batch's transaction:
this topic carries a handful of events a minute, and lifecycle events update state row by row.
An event about an A/B test or task that does not exist (yet) is refused with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec

from consumers.contract import (
    Contract,
    JsonObject,
    ModelVersion,
    Name30,
    Name50,
    NonNegativeInt,
    PositiveInt,
    UtcTime,
)
from consumers.db import Conn, queries
from consumers.pipelines.base import Pipeline, Rejection

Text20 = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
Text100 = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Text200 = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
RATIO = (5, 4)

_json = msgspec.json.Encoder(decimal_format="number")


def as_json(value: Any) -> str | None:
    return None if value is None else _json.encode(value).decode()


class Event(Contract, frozen=True, kw_only=True, tag_field="type"):
    event_id: UUID


class Improvement(Event, frozen=True, kw_only=True, tag="improvement"):
    """A change the engine made (improvement_events)."""

    event_type: Name30
    event_timestamp: UtcTime | None = None
    component_type: Name30
    component_id: Name50
    old_value: Any = None
    new_value: Any = None
    trigger_reason: Text100 | None = None
    performance_before: Any = None
    performance_after: Any = None
    improvement_metrics: Any = None
    automated: bool = True
    approved_by: Name50 | None = None
    approval_timestamp: UtcTime | None = None
    can_rollback: bool = True
    rollback_timestamp: UtcTime | None = None
    discord_notified: bool = False
    notification_message_id: Text100 | None = None


class ModelEvaluation(Event, frozen=True, kw_only=True, tag="model_evaluation"):
    """An offline evaluation of a model version (a model_performance row)."""

    model_version: ModelVersion
    model_type: Name30
    evaluation_date: date
    training_samples: NonNegativeInt | None = None
    testing_samples: NonNegativeInt | None = None
    training_period_start: date | None = None
    training_period_end: date | None = None
    accuracy: Decimal | None = None
    precision: Decimal | None = None
    recall: Decimal | None = None
    f1_score: Decimal | None = None
    auc_roc: Decimal | None = None
    brier_score: Decimal | None = None
    expected_calibration_error: Decimal | None = None
    trending_up_accuracy: Decimal | None = None
    trending_down_accuracy: Decimal | None = None
    ranging_accuracy: Decimal | None = None
    volatile_accuracy: Decimal | None = None
    feature_importance: JsonObject | None = None
    status: Literal["evaluating", "staging", "production", "retired"] = "evaluating"

    decimals: ClassVar[dict[str, tuple[int, int]]] = {
        "accuracy": RATIO, "precision": RATIO, "recall": RATIO, "f1_score": RATIO,
        "auc_roc": RATIO, "brier_score": (6, 5), "expected_calibration_error": (6, 5),
        "trending_up_accuracy": RATIO, "trending_down_accuracy": RATIO,
        "ranging_accuracy": RATIO, "volatile_accuracy": RATIO,
    }


class AbTestStarted(Event, frozen=True, kw_only=True, tag="ab_test_started"):
    test_id: UUID
    test_name: Text100
    control_version: ModelVersion
    treatment_version: ModelVersion
    test_type: Literal["model", "strategy", "params"]
    control_traffic_percent: Percent
    treatment_traffic_percent: Percent
    started_at: UtcTime
    scheduled_duration_hours: PositiveInt = 48
    success_metric: Name50
    minimum_improvement_percent: Decimal = Decimal("5.0")

    decimals: ClassVar[dict[str, tuple[int, int]]] = {"minimum_improvement_percent": (5, 2)}


class AbTestResults(Event, frozen=True, kw_only=True, tag="ab_test_results"):
    test_id: UUID
    control_metrics: JsonObject
    treatment_metrics: JsonObject
    improvement_percent: Decimal | None = None

    decimals: ClassVar[dict[str, tuple[int, int]]] = {"improvement_percent": (6, 2)}


class AbTestConcluded(Event, frozen=True, kw_only=True, tag="ab_test_concluded"):
    test_id: UUID
    outcome: Literal["promoted", "rejected", "rollback"]
    ended_at: UtcTime
    conclusion: Text200 | None = None
    improvement_percent: Decimal | None = None

    decimals: ClassVar[dict[str, tuple[int, int]]] = {"improvement_percent": (6, 2)}


class OptimizationScheduled(Event, frozen=True, kw_only=True, tag="optimization_scheduled"):
    """Creates a task, or re-schedules it (status back to pending)."""

    task_id: UUID
    task_type: Name30
    component_id: Name50
    frequency: Text20
    next_run_at: UtcTime
    priority: PositiveInt = 5
    config: JsonObject
    enabled: bool = True


class OptimizationStarted(Event, frozen=True, kw_only=True, tag="optimization_started"):
    task_id: UUID
    started_at: UtcTime


class OptimizationCompleted(Event, frozen=True, kw_only=True, tag="optimization_completed"):
    task_id: UUID
    completed_at: UtcTime
    result: JsonObject | None = None
    next_run_at: UtcTime | None = None


class OptimizationFailed(Event, frozen=True, kw_only=True, tag="optimization_failed"):
    task_id: UUID
    failed_at: UtcTime
    error: str
    next_run_at: UtcTime | None = None


ImprovementEvent = (
    Improvement | ModelEvaluation | AbTestStarted | AbTestResults | AbTestConcluded
    | OptimizationScheduled | OptimizationStarted | OptimizationCompleted | OptimizationFailed
)


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
                event.can_rollback, event.rollback_timestamp, event.discord_notified,
                event.notification_message_id)
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
            return "optimization_start", (event.task_id, event.started_at)
        case OptimizationCompleted():
            return "optimization_complete", (
                event.task_id, event.completed_at, as_json(event.result), event.next_run_at)
        case OptimizationFailed():
            return "optimization_fail", (
                event.task_id, event.failed_at, event.error, event.next_run_at)
    raise TypeError(f"no statement for {type(event).__name__}")


class ImprovementsPipeline(Pipeline):
    name = "improvements"
    event_type = ImprovementEvent

    async def write(self, conn: Conn, events: Sequence[Any]) -> list[Rejection]:
        sql = queries("ingest")
        rejections = []
        for index, event in enumerate(events):
            kind = type(event).__struct_config__.tag
            first_time = await conn.fetchval(sql["applied_event_record"], event.event_id, kind)
            if not first_time:
                continue  # redelivered
            name, args = statement_and_args(event)
            status = await conn.execute(sql[name], *args)
            if status == "UPDATE 0":  # the test or task it is about is unknown
                await conn.execute(sql["applied_event_forget"], event.event_id)
                rejections.append(Rejection(
                    index, "UnknownSubject",
                    f"{kind} {event.event_id}: no such A/B test or optimization task "
                    "(its start or scheduling event has not been applied)"))
        return rejections
