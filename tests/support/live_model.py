"""Model mq's validated predictions as the rollup's live model tests write and check them."""

from __future__ import annotations

import json
import random
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg

from consumers.analytics import performance as perf

DIRECTIONS = ("LONG", "SHORT", "NEUTRAL")
REGIMES = (*perf.REGIMES, "none")  # start_regime as the validator records it
FIGURES = ("testing_samples", "accuracy", "precision", "recall", "f1_score", "auc_roc",
           "brier_score", "expected_calibration_error", "trending_up_accuracy",
           "trending_down_accuracy", "ranging_accuracy", "volatile_accuracy")


def random_prediction(rng: random.Random, predicted_at: datetime,
                      validated: bool = True) -> tuple[object, ...]:
    predicted, actual = rng.choice(DIRECTIONS), rng.choice(DIRECTIONS)
    confidence = None if rng.random() < 0.05 else Decimal(rng.randint(0, 10_000)).scaleb(-4)
    return (uuid.uuid4(), "mq", "gbm", f"S{rng.randint(0, 9)}", predicted_at, 15, predicted,
            confidence, json.dumps({"x": 1}), actual if validated else None,
            Decimal("0.001") if validated else None,
            predicted == actual if validated else None,
            predicted_at + timedelta(minutes=16) if validated else None,
            rng.choice(REGIMES) if validated else None)


async def add_predictions(db: asyncpg.Connection, rows: list[tuple[object, ...]]) -> None:
    """Inserted as any writer does (the insert trigger marks each validated one)."""
    await db.executemany(
        """INSERT INTO model_predictions (prediction_id, model_version, model_type, symbol,
               predicted_at, prediction_horizon_minutes, predicted_direction, confidence_score,
               feature_vector, actual_direction, actual_return, prediction_accuracy,
               validated_at, start_regime)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""", rows)


async def row_by_row(db: asyncpg.Connection, day: date, time_zone: str) -> dict[str, object]:
    """The day's figures from every validated prediction of model mq as a row."""
    rows = await db.fetch(
        """SELECT predicted_direction, actual_direction, confidence_score,
                  nullif(start_regime, 'none') AS regime
           FROM model_predictions
           WHERE model_version = 'mq' AND validated_at IS NOT NULL
             AND (predicted_at AT TIME ZONE $2::text)::date = $1""", day, time_zone)
    return as_columns(perf.model_figures(
        [perf.ScoredPrediction(*row) for row in rows], perf.Undefined()))


def as_columns(figures: perf.ModelFigures) -> dict[str, object]:
    """Model figures as the live row's FIGURES columns hold them."""
    return {"testing_samples": figures.samples, "accuracy": figures.accuracy,
            "precision": figures.precision, "recall": figures.recall,
            "f1_score": figures.f1_score, "auc_roc": figures.auc_roc,
            "brier_score": figures.brier_score,
            "expected_calibration_error": figures.expected_calibration_error,
            **{f"{regime}_accuracy": figures.regime_accuracy[regime]
               for regime in perf.REGIMES}}


async def stored(db: asyncpg.Connection, day: date) -> dict[str, object]:
    row = await db.fetchrow(
        f"SELECT {', '.join(FIGURES)} FROM model_performance "
        "WHERE source = 'live' AND model_version = 'mq' AND evaluation_date = $1", day)
    assert row is not None, day
    return dict(row)
