"""Avro and Protobuf generated from the contracts, and read back by the pipelines: every kind
of event the demo produces, written as a registry serializer writes it (fastavro; the
protobuf runtime with Confluent's message index), becomes the row its JSON becomes (issue
#44). The integration tests do the same through the real registry and Kafka."""

from __future__ import annotations

import io
import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import fastavro
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import topics
from consumers.contracts.avro import avro_schema
from consumers.contracts.bars import Bar
from consumers.contracts.encoding import Encoding
from consumers.contracts.fills import Fill
from consumers.contracts.free_form import FreeFormLimits
from consumers.contracts.improvements import ImprovementEvent
from consumers.contracts.protobuf import proto_messages, proto_schema_text
from consumers.demo import session
from consumers.errors import FreeFormTooLarge, UnknownSchema
from consumers.ingest.checkpoint import Batch
from consumers.ingest.pipelines.base import EventTimeSettings
from consumers.ingest.schemas import Framed, Schema, Schemas, message_indexes
from consumers.platform.db import copy_line
from consumers.producer import encode
from tests.support.registry import avro_dict, proto_message
from tests.unit.test_hostile_messages import NOW, record
from tests.unit.test_msgpack import row

PIPELINES = {t.name: t.pipeline(EventTimeSettings(), FreeFormLimits()) for t in topics.TOPICS}


def demo_events() -> list[Any]:
    start = (NOW - timedelta(days=1)).replace(second=0)
    return session(random.Random(4), start=start, minutes=20, symbols=["AAPL", "BRK.B"])


def stored(written: Any) -> Any:
    """A row as the database keeps it: a decimal's trailing zeros are its column's (Avro
    gives every decimal its schema's scale, 1.0500 for 1.05)."""
    def value(text: Any) -> Any:
        if isinstance(text, Decimal):
            return text.normalize()
        if isinstance(text, str) and text[:1] in "-0123456789":
            try:
                return Decimal(text).normalize()
            except ArithmeticError:  # a time, a UUID
                return text
        return text
    if isinstance(written, str):
        return [value(piece) for piece in written.split("\t")]
    query, args = written
    return query, [value(arg) for arg in args]


def avro_framed(event: Any) -> Framed:
    contract = topics.of_event(event).contract
    parsed = fastavro.parse_schema(avro_schema(contract))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, avro_dict(event))
    return Framed(Schema(1, Encoding.AVRO, frozenset({"t-value"}), parsed, avro_schema(contract)),
                  out.getvalue())


def proto_framed(event: Any) -> Framed:
    messages = proto_messages(topics.of_event(event).contract)
    index = next(i for i, m in enumerate(messages) if m.contract is type(event))
    return Framed(Schema(1, Encoding.PROTOBUF, frozenset({"t-value"})),
                  proto_message(event).SerializeToString(), (index,))


@pytest.mark.parametrize("framing", [avro_framed, proto_framed], ids=["avro", "protobuf"])
def test_every_kind_of_event_reads_as_its_json_does(framing: Any) -> None:
    seen = set()
    for event in demo_events():
        pipeline = PIPELINES[topics.of_event(event).name]
        framed = framing(event)
        seen.add(type(event))
        assert stored(row(pipeline.accept(framed.payload, NOW, framed.schema.encoding, framed))) \
            == stored(row(pipeline.accept(encode(event), NOW))), event
    assert len(seen) >= 6  # bars, fills, predictions and several improvement kinds


def test_the_avro_schemas_keep_every_rule_the_registry_can_check() -> None:
    fill = avro_schema(Fill)
    fields = {f["name"]: f for f in fill["fields"]}
    assert fields["price"]["type"] == {"type": "bytes", "logicalType": "decimal",
                                       "precision": 18, "scale": 8}
    assert fields["commission"]["default"] == "\u0000"  # Decimal(0): one zero byte
    assert fields["intended_price"]["type"][0] == "null"
    assert fields["intended_price"]["default"] is None
    assert fields["filled_at"]["type"]["logicalType"] == "timestamp-micros"
    union = avro_schema(ImprovementEvent)
    assert [r["fields"][0] for r in union][:2] == [
        {"name": "type", "type": "string", "default": "improvement"},
        {"name": "type", "type": "string", "default": "model_evaluation"}]
    started = next(r for r in union if r["name"] == "AbTestStarted")
    percent = next(f for f in started["fields"] if f["name"] == "minimum_improvement_percent")
    # a decimal's default is its unscaled value's two's-complement bytes, as Avro writes it
    unscaled = int.from_bytes(percent["default"].encode("latin-1"), "big", signed=True)
    assert Decimal(unscaled).scaleb(-percent["type"]["scale"]) == Decimal("5.0")
    for schema in (avro_schema(Bar), fill, union):
        fastavro.parse_schema(schema)  # every one is valid Avro


def test_a_protobuf_schema_numbers_fields_in_declaration_order() -> None:
    text = proto_schema_text(Bar)
    assert 'syntax = "proto3";' in text
    assert "  string symbol = 1;" in text and "  int64 volume = 7;" in text
    assert "  optional string atr_14 = 8;" in text
    assert proto_schema_text(ImprovementEvent).count("message ") == 9


@pytest.mark.parametrize(("encoded", "indexes"), [
    (b"\x00", (0,)),  # the first message, written as a lone 0
    (b"\x02\x04", (2,)),  # one index, 2 (zigzag)
    (b"\x04\x02\x06", (1, 3)),  # a nested message's path
])
def test_confluent_message_indexes(encoded: bytes, indexes: tuple[int, ...]) -> None:
    assert message_indexes(encoded + b"rest", 0) == (indexes, b"rest")


def test_cut_short_message_indexes_are_refused() -> None:
    with pytest.raises(UnknownSchema, match="cut short"):
        message_indexes(b"\x04\x02", 0)


def test_a_framed_message_without_a_registry_is_a_dead_letter() -> None:
    batch = Batch(max_value_bytes=None)
    framed = b"\x00\x00\x00\x00\x07" + avro_framed(demo_events()[0]).payload
    batch.add(PIPELINES["bars"], [record(framed)])
    (letter,) = batch.letters
    assert letter.error_class == "UnknownSchema"
    assert "schema id 7" in letter.reason and "CIE_SCHEMA_REGISTRY_URL" in letter.reason


def test_a_registry_refusal_is_remembered_and_named() -> None:
    schemas = Schemas(None)
    schemas._known[9] = "schema id 9 is not in the schema registry"
    schemas._known[10] = Schema(10, Encoding.AVRO, frozenset({"fills-value"}))
    with pytest.raises(UnknownSchema, match="not in the schema registry"):
        schemas.framed(b"\x00\x00\x00\x00\x09abc", "bars")
    with pytest.raises(UnknownSchema, match="registered under fills-value, not bars-value"):
        schemas.framed(b"\x00\x00\x00\x00\x0aabc", "bars")
    assert schemas.framed(b'{"a": 1}', "bars") is None


def test_free_form_text_in_avro_and_protobuf_is_held_to_the_limits() -> None:
    pipeline = topics.BY_NAME["predictions"].pipeline(
        EventTimeSettings(), FreeFormLimits(max_bytes=100))
    prediction = next(e for e in demo_events() if type(e).__name__ == "Prediction")
    big = msgspec.structs.replace(prediction, feature_vector={"x": "y" * 200})
    for framing in (avro_framed, proto_framed):
        framed = framing(big)
        with pytest.raises(FreeFormTooLarge, match="feature_vector"):
            pipeline.accept(framed.payload, NOW, framed.schema.encoding, framed)


def test_a_payload_that_is_not_its_schemas_is_a_decode_error() -> None:
    bar = next(e for e in demo_events() if isinstance(e, Bar))
    for framing in (avro_framed, proto_framed):
        framed = framing(bar)
        cut = Framed(framed.schema, framed.payload[:7], framed.indexes)
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            PIPELINES["bars"].accept(cut.payload, NOW, cut.schema.encoding, cut)


BAR_DECIMAL = st.one_of(
    st.none(),
    st.decimals(min_value=Decimal("-99999999.99999999"), max_value=Decimal("9999999999.99999999"),
                places=8, allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal(0), Decimal("-0.00000001"), Decimal("100.5"), Decimal(101)]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.fixed_dictionaries({name: BAR_DECIMAL for name in (
    "atr_14", "rsi_14", "macd_line", "vix", "spy_correlation", "regime_confidence")}))
def test_avro_and_protobuf_bars_on_the_text_path_store_what_the_exact_path_stores(
        values: dict[str, Decimal | None]) -> None:
    """Whatever the text path accepts, the exact path stores alike; what the exact path
    refuses, the text path refuses."""
    bar = next(e for e in demo_events() if isinstance(e, Bar))
    scales = {name: Bar.decimals[name][1] for name in values}
    quantized = {name: None if v is None else v.quantize(Decimal(1).scaleb(-scales[name]))
                 for name, v in values.items()}
    try:
        candidate = msgspec.structs.replace(bar, **quantized)
    except ValueError:  # the contract refuses the value: no producer's schema writes it here
        return
    pipeline = PIPELINES["bars"]
    for framing in (avro_framed, proto_framed):
        try:
            framed = framing(candidate)
        except (ValueError, TypeError, OverflowError):
            continue  # not writable in this format at the column's scale
        try:
            exact = copy_line(pipeline.to_row(pipeline.decode(
                framed.payload, framed.schema.encoding, framed)))
        except (msgspec.ValidationError, msgspec.DecodeError):
            exact = None
        fast = text_path(framed)
        if exact is None:
            assert fast is None, (framing.__name__, candidate)
        elif fast is not None:  # it may leave a value to the exact path (-0.0000), never
            assert stored(fast[1]) == stored(exact), (framing.__name__, candidate)


def test_demo_bars_in_avro_and_protobuf_take_the_text_path() -> None:
    for bar in (e for e in demo_events() if isinstance(e, Bar)):
        for framing in (avro_framed, proto_framed):
            assert text_path(framing(bar)) is not None, framing.__name__


def text_path(framed: Framed) -> tuple[Any, str] | None:
    """What the bars' text path makes of ``framed``: None, the exact path reads it."""
    pipeline = PIPELINES["bars"]
    if framed.schema.encoding is Encoding.AVRO:
        reader = framed.schema.text_reader(Bar)
        return None if reader is None else reader.read(framed.payload)
    record = pipeline._protobuf_text(framed)
    return None if record is None else pipeline._text.decode_record(record)
