"""predictions → model_predictions. Predictions are immutable facts: a redelivered one (same
prediction_id and predicted_at) changes nothing, and never touches the outcome columns the
validator fills in later."""

from __future__ import annotations

from typing import Any

from consumers.contracts.predictions import Prediction, canonical_json, feature_hash
from consumers.ingest.pipelines.base import CopyUpsertPipeline


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
            p.predicted_volatility, canonical_json.encode(p.feature_vector).decode(),
            p.feature_hash or feature_hash(p.feature_vector),
        )
