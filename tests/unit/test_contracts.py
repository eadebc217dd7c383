"""The wire contracts: exact decimals, offsets required, column limits enforced."""

from __future__ import annotations

import json
from decimal import Decimal

import msgspec
import pytest

from consumers.contracts.base import contract_schema, decimal_fits
from consumers.contracts.improvements import OptimizationFailed
from consumers.contracts.predictions import feature_hash
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.improvements import ImprovementsPipeline
from consumers.ingest.pipelines.predictions import PredictionsPipeline
from consumers.platform.db import queries
from consumers.topics import TOPICS

BAR = {"symbol": "AAPL", "timestamp": "2026-03-02T14:30:00+01:00", "open": 187.12345678,
       "high": "188", "low": 186.5, "close": "187.25", "volume": 1200}


def decode_bar(**changes: object) -> object:
    return BarsPipeline().decode(json.dumps({**BAR, **changes}).encode())


@pytest.mark.parametrize(("value", "precision", "scale", "ok"), [
    ("187.12345678", 18, 8, True),
    ("187.123456789", 18, 8, False),
    ("9999999999.99999999", 18, 8, True),
    ("10000000000", 18, 8, False),
    ("1.0000", 5, 4, True),
    ("10.0000", 5, 4, False),
    ("-0.999", 4, 3, True),
    ("1E+2", 5, 2, True),
    ("NaN", 18, 8, False),
    ("0", 4, 3, True),
    ("0.00000", 4, 3, True),
    ("1.5000000000", 4, 3, True),
])
def test_decimal_fits(value: str, precision: int, scale: int, ok: bool) -> None:
    assert (decimal_fits(Decimal(value), precision, scale) is None) is ok


def test_numbers_decode_exactly_without_float() -> None:
    # Through a float this would be 0.1 and pass; read exactly it has too many places.
    raw = json.dumps(BAR).replace('"open": 187.12345678', '"open": 0.1000000000000000055511151231257827')
    with pytest.raises(msgspec.ValidationError, match=r"open: 0\.1000000000000000055511151231257827 has 34"):
        BarsPipeline().decode(raw.encode())
    exact = json.dumps(BAR).replace('"open": 187.12345678', '"open": 123456789.12345678')
    assert BarsPipeline().decode(exact.encode()).open == Decimal("123456789.12345678")


def test_prices_keep_their_digits() -> None:
    bar = decode_bar()
    assert bar.open == Decimal("187.12345678")  # type: ignore[attr-defined]
    assert bar.low == Decimal("186.5")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"timestamp": "2026-03-02T14:30:00"}, "timezone"),
    ({"open": "187.123456789"}, "open: 187.123456789 has 9 decimal places"),
    ({"rsi_14": 1000}, "rsi_14: 1000 has 4 integer digits"),
    ({"symbol": "TOOLONGSYMBOL"}, "length <= 10"),
    ({"volume": -1}, ">= 0"),
    ({"detected_regime": "sideways"}, "Invalid enum value 'sideways'"),
    ({"close": "NaN"}, "close: NaN is not a finite number"),
])
def test_bad_bars_are_refused_with_a_reason(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=reason):
        decode_bar(**changes)


def test_feature_hash_is_canonical() -> None:
    a = feature_hash({"b": Decimal("1.50"), "a": [1, 2]})
    b = feature_hash({"a": [1, 2], "b": Decimal("1.50")})
    assert a == b and len(a) == 64
    pipeline = PredictionsPipeline()
    prediction = pipeline.decode(json.dumps({
        "prediction_id": "0b6cbe0e-2f44-4c3c-8a1d-111111111111", "model_version": "v1",
        "model_type": "direction", "symbol": "AAPL", "predicted_at": "2026-03-02T14:30:00Z",
        "prediction_horizon_minutes": 15, "feature_vector": {"b": 1.50, "a": [1, 2]},
    }).encode())
    row = pipeline.to_row(prediction)
    assert row[-1] == feature_hash({"a": [1, 2], "b": Decimal("1.5")})
    assert json.loads(row[-2]) == {"a": [1, 2], "b": 1.5}


def test_improvement_events_are_a_tagged_union() -> None:
    event = ImprovementsPipeline().decode(json.dumps({
        "type": "optimization_failed", "event_id": "0b6cbe0e-2f44-4c3c-8a1d-111111111111",
        "task_id": "0b6cbe0e-2f44-4c3c-8a1d-222222222222", "failed_at": "2026-03-02T14:30:00Z",
        "error": "OOM"}).encode())
    assert isinstance(event, OptimizationFailed)
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'optimisation_failed'"):
        ImprovementsPipeline().decode(b'{"type": "optimisation_failed"}')


def test_a_producer_cannot_mark_its_improvement_event_as_announced() -> None:
    """Notification state is the notifier's: the contract does not carry it, so a producer's
    discord_notified is ignored and the event is stored unannounced."""
    from consumers.contracts.improvements import Improvement
    from consumers.ingest.pipelines.improvements import statement_and_args

    event = ImprovementsPipeline().decode(json.dumps({
        "type": "improvement", "event_id": "0b6cbe0e-2f44-4c3c-8a1d-333333333333",
        "event_type": "param_change", "component_type": "strategy", "component_id": "s1",
        "discord_notified": True, "notification_message_id": "42"}).encode())
    assert isinstance(event, Improvement)
    assert not hasattr(event, "discord_notified")
    name, args = statement_and_args(event)
    assert "discord_notified" not in queries("ingest")[name] and len(args) == 16
    schema = contract_schema(Improvement)["$defs"]["Improvement"]["properties"]
    assert "discord_notified" not in schema and "notification_message_id" not in schema


def test_every_topic_exports_a_json_schema() -> None:
    for topic in TOPICS:
        schema = json.loads(json.dumps(contract_schema(topic.contract)))
        assert "$defs" in schema, topic.name
    bar_schema = contract_schema(BarsPipeline.event_type)["$defs"]["Bar"]["properties"]
    number, text = bar_schema["open"]["anyOf"]
    assert (number["type"], number["exclusiveMaximum"], number["exclusiveMinimum"]) == (
        "number", 10_000_000_000, 0)
    assert text["type"] == "string" and "{0,8}" in text["pattern"]
    assert bar_schema["symbol"]["maxLength"] == 10
