"""The predictions topic's message: one model prediction."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Annotated, ClassVar, Literal
from uuid import UUID

import msgspec

from consumers.contracts.base import (
    NON_NEGATIVE,
    PATTERN_END,
    Bound,
    Contract,
    JsonObject,
    ModelVersion,
    Name30,
    PositiveInt,
    Symbol,
    UtcTime,
    between,
)

Direction = Literal["LONG", "SHORT", "NEUTRAL"]
FeatureHash = Annotated[str, msgspec.Meta(pattern=rf"^[0-9a-f]{{64}}{PATTERN_END}")]

# Canonical JSON for hashing: keys sorted, no whitespace, numbers exactly as written.
canonical_json = msgspec.json.Encoder(decimal_format="number", order="sorted")


def feature_hash(feature_vector: JsonObject) -> str:
    """SHA-256 (hex) of the feature vector's canonical JSON."""
    return hashlib.sha256(canonical_json.encode(feature_vector)).hexdigest()


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
    bounds: ClassVar[dict[str, Bound]] = {
        "confidence_score": between(0, 1), "predicted_volatility": NON_NEGATIVE,
    }
    rules: ClassVar[tuple[str, ...]] = (
        "predicted_at more than CIE_FUTURE_TOLERANCE_SECONDS ahead of the consumer's clock",
        "a feature_vector of more than CIE_FREE_FORM_MAX_BYTES of JSON text, "
        "CIE_FREE_FORM_MAX_ELEMENTS values or CIE_FREE_FORM_MAX_DEPTH levels",
    )
