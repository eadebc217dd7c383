"""predictions → model_predictions. Predictions are immutable facts: a redelivered one (same
prediction_id and predicted_at) changes nothing, and never touches the outcome columns the
validator fills in later."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec

from consumers.contract import (
    Contract,
    JsonObject,
    ModelVersion,
    Name30,
    PositiveInt,
    Symbol,
    UtcTime,
)
from consumers.pipelines.base import CopyUpsertPipeline

Direction = Literal["LONG", "SHORT", "NEUTRAL"]
FeatureHash = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]

# Canonical JSON for hashing: keys sorted, no whitespace, numbers exactly as written.
_canonical = msgspec.json.Encoder(decimal_format="number", order="sorted")


def feature_hash(feature_vector: JsonObject) -> str:
    """SHA-256 (hex) of the feature vector's canonical JSON."""
    return hashlib.sha256(_canonical.encode(feature_vector)).hexdigest()


class Prediction(Contract, frozen=True, kw_only=True):
    """One model prediction (the model_predictions columns, less outcomes, id and created_at)."""

    prediction_id: UUID
    model_version: ModelVersion
    model_type: Name30
    symbol: Symbol
    predicted_at: UtcTime
    prediction_horizon_minutes: PositiveInt
    predicted_direction: Direction | None = None
    confidence_score: Decimal | None = None
    predicted_volatility: Decimal | None = None
    feature_vector: JsonObject
    feature_hash: FeatureHash | None = None

    decimals: ClassVar[dict[str, tuple[int, int]]] = {
        "confidence_score": (5, 4), "predicted_volatility": (10, 6),
    }


class PredictionsPipeline(CopyUpsertPipeline):
    name = "predictions"
    time_fields = ("predicted_at",)
    event_type = Prediction
    stage = "stage_model_predictions"
    target = "model_predictions"
    key = ("prediction_id", "predicted_at")
    columns = tuple(Prediction.__struct_fields__)

    def to_row(self, event: Any) -> tuple[Any, ...]:
        p: Prediction = event
        return (
            p.prediction_id, p.model_version, p.model_type, p.symbol, p.predicted_at,
            p.prediction_horizon_minutes, p.predicted_direction, p.confidence_score,
            p.predicted_volatility, _canonical.encode(p.feature_vector).decode(),
            p.feature_hash or feature_hash(p.feature_vector),
        )
