"""Hostile input never escapes ``Batch.add``: every message becomes an event or a dead letter.

A crash on one message's content would restart the process onto the same offset, forever,
and stop every topic with it (a 2 KB message nesting JSON 1,000 levels deep did exactly that).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.errors import ImplausibleTime
from consumers.ingest.checkpoint import Batch
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.base import EventTimeSettings, Pipeline
from consumers.ingest.pipelines.fills import FillsPipeline
from consumers.ingest.pipelines.improvements import ImprovementsPipeline
from consumers.ingest.pipelines.predictions import PredictionsPipeline

NOW = datetime.now(UTC).replace(microsecond=0)

VALID: dict[str, dict[str, Any]] = {
    "bars": {"symbol": "AAPL", "timestamp": NOW.isoformat(), "open": "187.1", "high": "188",
             "low": "186.5", "close": "187.25", "volume": 1200, "rsi_14": "55.5"},
    "predictions": {"prediction_id": "7f1d3a52-1f0e-4c4c-9f57-8d1e0b0f1a01",
                    "model_version": "v1", "model_type": "lstm", "symbol": "AAPL",
                    "predicted_at": NOW.isoformat(), "prediction_horizon_minutes": 15,
                    "predicted_direction": "LONG", "confidence_score": "0.75",
                    "feature_vector": {"rsi": 55.5, "vol": [1, 2, 3]}},
    "fills": {"fill_id": "0b6e4b1a-2b2d-4f55-8f0e-6a1f4f2e9c11",
              "trade_id": "5c2e1a77-3d4b-4e8f-9a0b-1c2d3e4f5a6b", "strategy_id": "s1",
              "model_version": "v1", "symbol": "AAPL", "side": "BUY", "quantity": 10,
              "price": "100.5", "commission": "0.1", "filled_at": NOW.isoformat()},
    "improvements": {"type": "improvement", "event_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                     "event_type": "retrain", "component_type": "model", "component_id": "m1",
                     "old_value": {"lr": 0.1}, "new_value": {"lr": 0.05}},
}
PIPELINES: dict[str, Callable[[], Pipeline]] = {
    "bars": BarsPipeline, "predictions": PredictionsPipeline, "fills": FillsPipeline,
    "improvements": ImprovementsPipeline,
}

# Values that have broken JSON decoders, Decimal or the database's text input somewhere.
HOSTILE_TEXT = [
    "[" * 5000 + "]" * 5000,  # nesting deeper than the recursion limit
    '{"a":' * 3000 + "1" + "}" * 3000,
    "NaN", "Infinity", "-Infinity", "1e999999", "-1e999999", "1e-999999", "9" * 5000,
    '"\\ud800"', '"\\udfff\\ud800"', '"a\\u0000b"', '"\\u0000"',
    '"' + "x" * 10_000_000 + '"',  # a 10 MB string
    "1" * 100_000,
    '"1e400"', '"NaN"', '"-0.000000001"', '"10.123456789"', "true", "null", "[]", "{}",
    '"\'); DROP TABLE market_conditions; --"',
    '"2026-02-30T25:61:61Z"', '"9999-12-31T23:59:59Z"', '"0001-01-01T00:00:00+14:00"',
]


def record(value: bytes | None, offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic="t", partition=0, offset=offset, timestamp=0, timestamp_type=0,
                          key=None, value=value, checksum=None, serialized_key_size=0,
                          serialized_value_size=len(value or b""), headers=())


def assert_accounted(pipeline: Pipeline, values: list[bytes | None]) -> Batch:
    batch = Batch(max_value_bytes=None)
    batch.add(pipeline, [record(v, i) for i, v in enumerate(values)])
    offsets = [r.offset for r in batch.event_records] + [d.record.offset for d in batch.letters]
    assert sorted(offsets) == list(range(len(values)))  # each exactly once
    assert len(batch.events) == len(batch.event_records)
    return batch


def with_field(name: str, field: str, raw: str) -> bytes:
    """The valid message of ``name`` with ``field``'s JSON text replaced by ``raw``."""
    text = json.dumps({**VALID[name], field: "__HOLE__"})
    return text.replace('"__HOLE__"', raw).encode()


@pytest.mark.parametrize("name", list(VALID))
def test_valid_messages_decode(name: str) -> None:
    batch = assert_accounted(PIPELINES[name](), [json.dumps(VALID[name]).encode()])
    assert batch.letters == []


@pytest.mark.parametrize("raw", HOSTILE_TEXT, ids=lambda r: r[:24])
@pytest.mark.parametrize("name", list(VALID))
def test_hostile_value_in_every_field(name: str, raw: str) -> None:
    pipeline = PIPELINES[name]()
    fields = [*VALID[name], "unknown_field"]
    values: list[bytes | None] = [with_field(name, field, raw) for field in fields]
    assert_accounted(pipeline, values)


def test_deep_nesting_in_an_ignored_field_is_a_dead_letter_naming_the_error() -> None:
    batch = assert_accounted(BarsPipeline(), [with_field("bars", "extra", "[" * 1000 + "]" * 1000)])
    [letter] = batch.letters
    assert letter.error_class == "RecursionError"
    assert "recursion" in letter.reason


def test_empty_and_oversized_values() -> None:
    valid = json.dumps(VALID["bars"]).encode()
    batch = Batch(max_value_bytes=len(valid))
    batch.add(BarsPipeline(), [record(None, 0), record(b" " * (len(valid) + 1), 1),
                               record(valid, 2)])
    assert [d.error_class for d in batch.letters] == ["EmptyMessage", "MessageTooLarge"]
    assert f"{len(valid) + 1} bytes" in batch.letters[1].reason
    assert len(batch.events) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(VALID)), value=st.binary(max_size=2000))
def test_random_bytes(name: str, value: bytes) -> None:
    assert_accounted(PIPELINES[name](), [value])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(VALID)), data=st.data())
def test_mutated_valid_messages(name: str, data: st.DataObject) -> None:
    message = dict(VALID[name])
    field = data.draw(st.sampled_from([*message, "extra"]))
    mutation = data.draw(st.sampled_from(["json", "hostile", "drop", "bytes", "duplicate"]))
    if mutation == "json":
        message[field] = data.draw(json_values)
        value = json.dumps(message).encode()
    elif mutation == "hostile":
        value = with_field(name, field, data.draw(st.sampled_from(HOSTILE_TEXT[:-3])))
    elif mutation == "drop":
        message.pop(field, None)
        value = json.dumps(message).encode()
    elif mutation == "duplicate":  # the same key twice: the last one counts
        text = json.dumps(message)
        value = (text[:-1] + f', "{field}": ' + json.dumps(data.draw(json_values)) + "}").encode()
    else:
        raw = bytearray(json.dumps(message).encode())
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
        value = bytes(raw)
    assert_accounted(PIPELINES[name](), [value])


def test_future_event_times_are_refused() -> None:
    pipeline = BarsPipeline(EventTimeSettings(future=timedelta(minutes=5)))
    now = datetime.now(UTC)  # not NOW: the suite may have run for minutes since import
    soon = json.dumps({**VALID["bars"], "timestamp": (now + timedelta(minutes=4)).isoformat()})
    late = json.dumps({**VALID["bars"], "timestamp": (now + timedelta(minutes=6)).isoformat()})
    batch = assert_accounted(pipeline, [soon.encode(), late.encode()])
    [letter] = batch.letters
    assert letter.record.offset == 1 and letter.error_class == "ImplausibleTime"
    assert "ahead of the consumer's clock" in letter.reason


def test_clock_skew_within_tolerance_clamps_latency_to_zero() -> None:
    pipeline = FillsPipeline(EventTimeSettings(skew=timedelta(milliseconds=50)))
    filled = NOW - timedelta(minutes=1)
    skewed = {**VALID["fills"], "filled_at": filled.isoformat(),
              "order_submitted_at": (filled + timedelta(milliseconds=3)).isoformat()}
    event = pipeline.accept(json.dumps(skewed).encode(), datetime.now(UTC)).event
    assert event.order_submitted_at == event.filled_at == filled
    too_far = {**skewed, "order_submitted_at": (filled + timedelta(seconds=2)).isoformat()}
    with pytest.raises(ImplausibleTime, match="after filled_at"):
        pipeline.accept(json.dumps(too_far).encode(), datetime.now(UTC))


def test_a_dead_letter_is_cut_to_fit_and_says_what_was_cut() -> None:
    from consumers.ingest.kafka import (
        DLQ_HEADERS_DROPPED,
        DLQ_KEY_TRUNCATED,
        DLQ_VALUE_TRUNCATED,
        DeadLetter,
        dead_letter_message,
    )

    big = ConsumerRecord(topic="t", partition=1, offset=7, timestamp=0, timestamp_type=0,
                         key=b"k" * 5000, value=b"v" * 50_000, checksum=None,
                         serialized_key_size=5000, serialized_value_size=50_000,
                         headers=[("trace", b"h" * 9000),
                                  ("content-type", b"application/msgpack")])
    key, value, headers = dead_letter_message(DeadLetter(big, "DecodeError", "bad"), 10_000)
    named = dict(headers)
    assert (named[DLQ_KEY_TRUNCATED], named[DLQ_HEADERS_DROPPED]) == (b"5000", b"1")
    assert named[DLQ_VALUE_TRUNCATED] == b"50000" and "trace" not in named
    assert named["content-type"] == b"application/msgpack"  # replayed as what it was
    assert key == b"k" * 1024 and value is not None and b"v" * 100 in value
    assert len(key) + len(value) + sum(len(n) + len(v) + 8 for n, v in headers) <= 10_000
    small = dead_letter_message(DeadLetter(record(b"{", 3), "DecodeError", "bad"), 10_000)
    assert small[1] == b"{" and DLQ_VALUE_TRUNCATED not in dict(small[2])


@pytest.mark.parametrize("form", ["string", "number"])
def test_a_megabyte_of_digits_is_refused_before_any_pattern_or_decimal(form: str) -> None:
    """A decimal's text is refused for its length alone, before the text path's expression or
    an exact Decimal spends time on it; the reason says which field and how long."""
    digits = "1" * 1_000_000
    value = json.dumps({**VALID["bars"], "close": digits if form == "string" else 0})
    if form == "number":
        value = value.replace('"close": 0', f'"close": {digits}')
    with pytest.raises(msgspec.ValidationError) as refused:
        BarsPipeline().accept(value.encode(), NOW)
    assert str(refused.value) == (
        f"close: {len(digits) + (2 if form == 'string' else 0)} characters, more than a "
        "decimal may have (64)")
