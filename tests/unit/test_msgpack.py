"""MessagePack, chosen per message by its content-type header: read into the same contracts,
checked by the same rules, written as the same rows as JSON; whatever else it carries is a
dead letter that says why (issue #44)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import topics
from consumers.analytics.validator import (
    ValidatorBarsPipeline,
    ValidatorFillsPipeline,
    ValidatorSettings,
)
from consumers.contracts.encoding import Encoding, declared, readable
from consumers.contracts.free_form import FreeFormLimits
from consumers.contracts.predictions import Prediction
from consumers.demo import session
from consumers.errors import FreeFormTooLarge, NotJsonValue
from consumers.ingest.checkpoint import Batch
from consumers.ingest.pipelines.base import EventTimeSettings, Pipeline
from consumers.ingest.pipelines.predictions import PredictionsPipeline
from consumers.producer import MSGPACK_HEADERS, encode, pack
from tests.unit.test_hostile_messages import NOW, PIPELINES, VALID

PACKED = Encoding.MSGPACK


def packed_record(value: bytes, offset: int = 0,
                  headers: tuple[tuple[str, bytes], ...] = tuple(MSGPACK_HEADERS),
                  ) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic="t", partition=0, offset=offset, timestamp=0, timestamp_type=0,
                          key=None, value=value, checksum=None, serialized_key_size=0,
                          serialized_value_size=len(value), headers=list(headers))


def row(ready: Any) -> Any:
    """What ``write`` stores of a ready event: its COPY line, or its statement."""
    return ready.line if hasattr(ready, "line") else (ready.query, ready.args)


def letters(pipeline: Pipeline, values: list[bytes],
            headers: tuple[tuple[str, bytes], ...] = tuple(MSGPACK_HEADERS),
            ) -> list[tuple[str, str]]:
    batch = Batch(max_value_bytes=None)
    batch.add(pipeline, [packed_record(v, i, headers) for i, v in enumerate(values)])
    assert len(batch.events) + len(batch.letters) == len(values)
    return [(letter.error_class, letter.reason) for letter in batch.letters]


@pytest.mark.parametrize(("headers", "encoding", "unknown"), [
    ([], Encoding.JSON, None),
    ([("content-type", b"application/json")], Encoding.JSON, None),
    ([("content-type", b"")], Encoding.JSON, None),
    ([("Content-Type", b"application/msgpack")], PACKED, None),
    ([("content-type", b"application/x-msgpack; charset=binary")], PACKED, None),
    ([("content-type", b"APPLICATION/VND.MSGPACK")], PACKED, None),
    ([("contentType", b"application/msgpack")], Encoding.JSON, None),  # not the header
    ([("content-type", b'"application/msgpack"')], PACKED, None),  # Spring quotes its values
    ([("source", b"oms"), ("content-type", b"application/avro")], Encoding.JSON,
     "application/avro"),
])
def test_the_content_type_header_decides_how_a_value_is_read(
        headers: list[tuple[str, bytes]], encoding: Encoding, unknown: str | None) -> None:
    found = declared(headers)
    assert (found.encoding, found.unknown) == (encoding, unknown)


@pytest.mark.parametrize("name", sorted(VALID))
def test_each_topic_stores_the_same_row_from_messagepack_as_from_json(name: str) -> None:
    pipeline = PIPELINES[name]()
    from_json = pipeline.accept(msgspec.json.encode(VALID[name]), NOW)
    from_msgpack = pipeline.accept(msgspec.msgpack.encode(VALID[name]), NOW, PACKED)
    assert row(from_msgpack) == row(from_json)


def test_a_whole_session_reads_the_same_in_either_encoding() -> None:
    """Every kind of event the demo produces, at full precision, with feature vectors and
    payloads: the rows of our producer's MessagePack are the rows of the same values in JSON,
    and for bars and fills (no free-form field) the rows of our producer's JSON."""
    start = (NOW - timedelta(days=1)).replace(second=0)
    events = session(random.Random(3), start=start, minutes=20, symbols=["AAPL", "BRK.B"])
    pipelines = {topic.name: topic.pipeline(EventTimeSettings(), FreeFormLimits())
                 for topic in topics.TOPICS}
    seen: set[str] = set()
    for event in events:
        pipeline = pipelines[topics.of_event(event).name]
        seen.add(pipeline.name)
        packed = pack(event)
        from_msgpack = row(pipeline.accept(packed, NOW, PACKED))
        same_values = msgspec.json.encode(msgspec.msgpack.decode(packed))
        assert from_msgpack == row(pipeline.accept(same_values, NOW)), event
        if pipeline.name in ("bars", "fills"):
            assert from_msgpack == row(pipeline.accept(encode(event), NOW)), event
    assert seen == set(pipelines)


def test_our_producer_packs_free_form_numbers_as_numbers() -> None:
    """MessagePack has no decimal: a feature vector's Decimals go as float64, the contract's
    decimals as exact strings."""
    start = (NOW - timedelta(days=1)).replace(second=0)
    prediction = next(e for e in session(random.Random(3), start=start, minutes=20,
                                         symbols=["AAPL"]) if isinstance(e, Prediction))
    sent = msgspec.msgpack.decode(pack(prediction))
    assert all(isinstance(v, float) for v in sent["feature_vector"].values())
    assert sent["confidence_score"] == str(prediction.confidence_score)


def test_a_float64_price_is_read_by_its_shortest_repr_and_checked_like_json() -> None:
    bars = PIPELINES["bars"]()
    as_floats = {**VALID["bars"], "open": 187.1, "close": 187.25}
    assert row(bars.accept(msgspec.msgpack.encode(as_floats), NOW, PACKED)) \
        == row(bars.accept(msgspec.json.encode(as_floats), NOW))
    # 0.1 + 0.2 is 0.30000000000000004: more places than the column keeps, refused as in JSON
    (refused,) = letters(bars, [msgspec.msgpack.encode({**VALID["bars"], "rsi_14": 0.1 + 0.2})])
    assert refused[0] == "ValidationError" and "decimal places" in refused[1]


def test_what_messagepack_carries_beyond_the_contract_is_a_dead_letter() -> None:
    bars, predictions = PIPELINES["bars"](), PIPELINES["predictions"]()
    ext = msgspec.msgpack.encode({**VALID["bars"], "volume": msgspec.msgpack.Ext(5, b"x")})
    binary_symbol = msgspec.msgpack.encode({**VALID["bars"], "symbol": b"AAPL"})
    naive = msgspec.msgpack.encode({**VALID["bars"], "timestamp": NOW.replace(tzinfo=None)})
    good = msgspec.msgpack.encode(VALID["bars"])
    json_body = msgspec.json.encode(VALID["bars"])  # labelled MessagePack: "{" reads as 123
    refused = letters(bars, [ext, good, binary_symbol, good[:-3], naive, json_body])
    assert refused == [
        ("ValidationError", "Expected `int`, got `ext` - at `$.volume`"),
        ("ValidationError", "Expected `str`, got `bytes` - at `$.symbol`"),
        ("DecodeError", "Input data was truncated"),
        ("ValidationError", "Expected `datetime` with a timezone component - at `$.timestamp`"),
        ("ValidationError", "Expected `object`, got `int`")]
    binary_feature = msgspec.msgpack.encode(
        {**VALID["predictions"], "feature_vector": {"raw": b"\x00\x01"}})
    ext_feature = msgspec.msgpack.encode(
        {**VALID["predictions"], "feature_vector": {"x": msgspec.msgpack.Ext(1, b"")}})
    assert letters(predictions, [binary_feature, ext_feature]) == [
        ("NotJsonValue", "feature_vector: holds a binary value, which has no JSON form"),
        ("NotJsonValue", "MessagePack extension type 1 is not part of any contract")]


def test_msgpack_timestamps_are_read_as_utc() -> None:
    bars = PIPELINES["bars"]()
    when = datetime(2026, 1, 5, 14, 29, 30, 123456, tzinfo=UTC)
    stamped = msgspec.msgpack.encode({**VALID["bars"], "timestamp": when})  # the timestamp ext
    assert bars.accept(stamped, NOW, PACKED).event.timestamp == when


def test_an_unknown_content_type_is_read_as_json_and_named_if_that_fails() -> None:
    bars = PIPELINES["bars"]()
    avro = (("content-type", b"application/avro"),)
    refused = letters(bars, [msgspec.json.encode(VALID["bars"]), b"\x08AAPL\x02"],
                      headers=avro)
    assert len(refused) == 1
    error, reason = refused[0]
    assert error == "DecodeError" and "content-type 'application/avro'" in reason


def test_the_free_form_limits_hold_for_messagepack() -> None:
    limits = FreeFormLimits(max_bytes=4096, max_elements=300, max_depth=5)
    pipeline = PredictionsPipeline(free_form=limits)

    def vector(value: Any) -> bytes:
        return msgspec.msgpack.encode({**VALID["predictions"], "feature_vector": value})

    deep: Any = 1
    for _ in range(6):  # 6 levels deep
        deep = {"a": deep}
    for value, says in [({"x": "y" * 5000}, "bytes of MessagePack"),
                        ({"v": list(range(300))}, "more than 300 values"),
                        (deep, "nested deeper than 5")]:
        with pytest.raises(FreeFormTooLarge, match=says):
            pipeline.accept(vector(value), NOW, PACKED)
    pipeline.accept(vector({"v": list(range(298))}), NOW, PACKED)  # 299 with the dict
    with pytest.raises(NotJsonValue):
        pipeline.accept(vector({"v": [1, [2, [b"3"]]]}), NOW, PACKED)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(VALID)), junk=st.binary(max_size=300),
       cut=st.integers(min_value=0, max_value=400))
def test_no_messagepack_value_escapes_the_batch(name: str, junk: bytes, cut: int) -> None:
    """Random bytes, and a valid message cut short or with bytes spliced in, each become an
    event or a dead letter."""
    valid = msgspec.msgpack.encode(VALID[name])
    values = [junk, valid[:cut], valid[:cut] + junk + valid[cut:]]
    letters(PIPELINES[name](), values)


def test_cie_trace_shows_a_messagepack_value_as_json() -> None:
    value = msgspec.msgpack.encode(VALID["fills"])
    assert json.loads(readable(value, MSGPACK_HEADERS)) == VALID["fills"]
    assert readable(b"\xc1not msgpack", MSGPACK_HEADERS) == "\ufffdnot msgpack"  # as it is
    assert readable(b'{"a": 1}', []) == '{"a": 1}'


def test_the_validator_reads_messagepack_too() -> None:
    rules = ValidatorSettings(gap_tolerance=timedelta(minutes=5), neutral_band=Decimal("0.001"),
                              max_horizon=timedelta(hours=1), ingest_wait=timedelta(seconds=5))
    for pipeline, name in [(ValidatorBarsPipeline(rules), "bars"),
                           (ValidatorFillsPipeline(), "fills")]:
        batch = Batch(max_value_bytes=None)
        batch.add(pipeline, [packed_record(msgspec.msgpack.encode(VALID[name]))])
        assert batch.letters == []
        assert batch.events == [pipeline.accept(msgspec.json.encode(VALID[name]), NOW)]
