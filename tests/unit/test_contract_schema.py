"""The JSON Schema `cie contracts` exports says what the decoder enforces.

One corpus of messages goes through a standard validator (jsonschema, formats checked) and
through the consumer's decoder; each must get the same verdict. Exceptions, by name: forms
the decoder reads leniently and the schema does not promise (decimal strings in exponent
notation, with a '+' sign or spaces), and the rules each contract's description names
(checked by the pipeline or the database, e.g. high >= low)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import jsonschema
import msgspec
import pytest

from consumers.contracts.base import contract_schema
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.fills import FillsPipeline
from consumers.ingest.pipelines.predictions import PredictionsPipeline

BAR = {"symbol": "AAPL", "timestamp": "2026-03-02T14:30:00+01:00", "open": "187.12345678",
       "high": 188, "low": "186.5", "close": 187.25, "volume": 1200}
FILL = {"fill_id": "0b6e4b1a-2b2d-4f55-8f0e-6a1f4f2e9c11",
        "trade_id": "5c2e1a77-3d4b-4e8f-9a0b-1c2d3e4f5a6b", "strategy_id": "s1",
        "model_version": "v1", "symbol": "AAPL", "side": "BUY", "quantity": 10,
        "price": "100.5", "filled_at": "2026-03-02T14:30:00Z"}
PREDICTION = {"prediction_id": "7f1d3a52-1f0e-4c4c-9f57-8d1e0b0f1a01", "model_version": "v1",
              "model_type": "lstm", "symbol": "AAPL", "predicted_at": "2026-03-02T14:30:00Z",
              "prediction_horizon_minutes": 15, "feature_vector": {"rsi": 55.5}}

# (changes to the valid message, expected verdict): good and hostile, the issue's 16 among them
BARS: list[tuple[dict[str, Any], bool]] = [
    ({}, True),
    ({"open": "NaN"}, False), ({"open": "1e400"}, False), ({"open": "-1.00"}, False),
    ({"open": "0"}, False), ({"open": "0.00000001"}, True), ({"open": "10.123456789"}, False),
    ({"open": "9999999999.99999999"}, True), ({"open": "10000000000"}, False),
    ({"open": "187.10000000000000"}, True), ({"open": "00012.5"}, True), ({"open": "."}, False),
    ({"open": "1,5"}, False), ({"open": ""}, False), ({"open": -1}, False), ({"open": 0}, False),
    ({"open": 187.5}, True), ({"open": 10_000_000_000}, False), ({"open": True}, False),
    ({"rsi_14": "1234.5"}, False), ({"rsi_14": "100"}, True), ({"rsi_14": "100.00"}, True),
    ({"rsi_14": "100.01"}, False), ({"rsi_14": "-0.5"}, False), ({"rsi_14": 55.55}, True),
    ({"rsi_14": 55.555}, False), ({"rsi_14": None}, True), ({"rsi_14": "99.99"}, True),
    ({"regime_confidence": "1.0000"}, True), ({"regime_confidence": "1.0001"}, False),
    ({"regime_confidence": "0.5"}, True), ({"spy_correlation": "-1"}, True),
    ({"spy_correlation": "-1.001"}, False), ({"spy_correlation": -0.999}, True),
    ({"spy_correlation": 1.5}, False), ({"vix": "1234.5678"}, True), ({"vix": "12345"}, False),
    ({"symbol": "aapl"}, False), ({"symbol": "TOOLONGSYMBOL"}, False),
    ({"symbol": "'); DROP TABLE market_conditions; --"}, False), ({"symbol": ""}, False),
    ({"symbol": "AAPL\n"}, False), ({"symbol": "BRK.B"}, True),
    ({"timestamp": "2026-03-02T14:30:00"}, False), ({"timestamp": "2026-02-30T14:30:00Z"}, False),
    ({"timestamp": "2026-03-02T14:30:00.123456Z"}, True), ({"timestamp": "yesterday"}, False),
    ({"volume": -1}, False), ({"volume": 1.5}, False), ({"volume": 2**63}, False),
    ({"detected_regime": "sideways"}, False), ({"detected_regime": "ranging"}, True),
    ({"close": None}, False), ({"extra": {"nested": [1, 2]}}, True),
]
FILLS: list[tuple[dict[str, Any], bool]] = [
    ({}, True), ({"price": "0"}, False), ({"price": "0.00000001"}, True),
    ({"commission": "-0.01"}, False), ({"commission": "0"}, True), ({"commission": "1.23456"}, False),
    ({"intended_price": "0"}, False), ({"intended_price": None}, True),
    ({"fill_id": "not-a-uuid"}, False), ({"side": "HOLD"}, False), ({"quantity": 0}, False),
    ({"quantity": 2**31}, False), ({"order_submitted_at": "2026-03-02T14:29:59.5Z"}, True),
    ({"strategy_id": "s" * 51}, False), ({"symbol": "AAPL\n"}, False),
]
PREDICTIONS: list[tuple[dict[str, Any], bool]] = [
    ({}, True), ({"confidence_score": "1.5"}, False), ({"confidence_score": "0.9999"}, True),
    ({"confidence_score": 1}, True), ({"predicted_volatility": "-0.1"}, False),
    ({"predicted_direction": "UP"}, False), ({"prediction_horizon_minutes": 0}, False),
    ({"feature_hash": "abc"}, False), ({"feature_vector": []}, False),
    ({"feature_hash": "0f" * 32}, True), ({"feature_hash": "0f" * 32 + "\n"}, False),
]
# Read by the decoder, not promised by the schema (the schema is stricter).
LENIENT = [(BAR, {"open": "1.5e2"}), (BAR, {"open": "+187"}), (BAR, {"open": " 187"}),
           (BAR, {"open": "1_87"})]


def validator(pipeline: Any) -> jsonschema.Draft202012Validator:
    # numbers read as Decimal on both sides, as the consumer reads them (multipleOf is exact)
    schema = json.loads(msgspec.json.encode(contract_schema(pipeline.event_type)),
                        parse_float=Decimal)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def decoder_accepts(pipeline: Any, raw: bytes) -> bool:
    try:
        pipeline.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False
    return True


CASES = ([(BarsPipeline, BAR, c, e) for c, e in BARS]
         + [(FillsPipeline, FILL, c, e) for c, e in FILLS]
         + [(PredictionsPipeline, PREDICTION, c, e) for c, e in PREDICTIONS])


@pytest.mark.parametrize(("pipeline_type", "base", "changes", "expected"), CASES,
                         ids=[f"{p.name}:{c}" for p, _, c, _ in CASES])
def test_schema_and_decoder_give_the_same_verdict(
    pipeline_type: Any, base: dict[str, Any], changes: dict[str, Any], expected: bool
) -> None:
    pipeline = pipeline_type()
    raw = json.dumps({**base, **changes}).encode()
    schema_ok = validator(pipeline).is_valid(json.loads(raw, parse_float=Decimal))
    assert (schema_ok, decoder_accepts(pipeline, raw)) == (expected, expected)


@pytest.mark.parametrize(("base", "changes"), LENIENT)
def test_lenient_forms_are_read_but_not_promised(base: dict[str, Any],
                                                 changes: dict[str, Any]) -> None:
    raw = json.dumps({**base, **changes}).encode()
    assert decoder_accepts(BarsPipeline(), raw)
    assert not validator(BarsPipeline()).is_valid(json.loads(raw, parse_float=Decimal))


def test_rules_beyond_the_schema_are_named_in_its_description() -> None:
    bar = contract_schema(BarsPipeline.event_type)["$defs"]["Bar"]
    assert "high below low" in bar["description"]
    fill = contract_schema(FillsPipeline.event_type)["$defs"]["Fill"]
    assert "CIE_CLOCK_SKEW_TOLERANCE_MS" in fill["description"]
