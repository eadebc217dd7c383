"""The improvement-events topic: every kind of event the improvement engine emits, as a
tagged union on the ``type`` field. Each event has an ``event_id``."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec

from consumers.contracts.base import (
    Contract,
    JsonObject,
    ModelVersion,
    Name30,
    Name50,
    NonNegativeInt,
    PositiveInt,
    UtcTime,
)

Text100 = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Text200 = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
# How often an optimization task runs: the periods the scheduler advances by (migration 13).
Frequency = Literal["hourly", "daily", "weekly"]
# What an A/B test is decided on: figures the rollups compute for strategy_performance
# (consumers/improvement/abtest.py says which way is better for each).
SuccessMetric = Literal["sharpe_ratio", "sortino_ratio", "calmar_ratio", "win_rate",
                        "profit_factor", "net_pnl", "avg_trade", "max_drawdown"]
RATIO = (5, 4)

class Event(Contract, frozen=True, kw_only=True, tag_field="type"):
    rules: ClassVar[tuple[str, ...]] = (
        "an event about an A/B test or optimization task that does not exist (yet)",
        "a payload (any field without a declared type) of more than CIE_FREE_FORM_MAX_BYTES of "
        "JSON text; more than CIE_FREE_FORM_MAX_ELEMENTS values in all of "
        "them, or one nested more than CIE_FREE_FORM_MAX_DEPTH levels",
    )
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
    # No discord_notified or notification_message_id: whether the event was announced is the
    # notifier's to record. A producer that sends them is ignored (unknown fields are), so a
    # compromised producer cannot mark its event as announced and silence Discord.


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
    success_metric: SuccessMetric
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
    frequency: Frequency
    next_run_at: UtcTime
    priority: PositiveInt = 5
    config: JsonObject
    enabled: bool = True


class OptimizationStarted(Event, frozen=True, kw_only=True, tag="optimization_started"):
    """A worker's reports (started, completed, failed) name the run they are about by the
    ``run_number`` of its optimization-tasks message; a report of another run than the one
    running changes nothing. Without it, the report is about whatever run is running."""

    task_id: UUID
    started_at: UtcTime
    run_number: PositiveInt | None = None


class OptimizationCompleted(Event, frozen=True, kw_only=True, tag="optimization_completed"):
    task_id: UUID
    completed_at: UtcTime
    result: JsonObject | None = None
    next_run_at: UtcTime | None = None
    run_number: PositiveInt | None = None


class OptimizationFailed(Event, frozen=True, kw_only=True, tag="optimization_failed"):
    task_id: UUID
    failed_at: UtcTime
    error: str
    next_run_at: UtcTime | None = None
    run_number: PositiveInt | None = None


ImprovementEvent = (
    Improvement | ModelEvaluation | AbTestStarted | AbTestResults | AbTestConcluded
    | OptimizationScheduled | OptimizationStarted | OptimizationCompleted | OptimizationFailed
)
