"""The Avro text path (ingest/pipelines/avro_text.py): a reader compiled from the writer's
schema takes a bar straight to its COPY line. Written by fastavro under schemas a producer may
register (its own scales, unions either way round, fields added or left out), every bar it
accepts is stored as the exact path (fastavro and the contract) stores it, and every bar the
exact path refuses, it leaves to the exact path."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import fastavro
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.contracts.avro import avro_schema
from consumers.contracts.bars import Bar
from consumers.contracts.encoding import Encoding
from consumers.ingest.pipelines.avro_text import avro_text_reader
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.schemas import Framed, Schema
from consumers.platform.db import copy_line
from tests.unit.test_registry_formats import demo_events, stored

PIPELINE = BarsPipeline()
PRICES = ("open", "high", "low", "close", "atr_14", "ema_20", "ema_50", "bb_upper", "bb_lower",
          "macd_line", "macd_signal")


def writer_schema(*, price_scale: int = 8, null_last: bool = False, extra: bool = False,
                  without: tuple[str, ...] = (), millis: bool = False,
                  nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    """The contract's Avro schema as another producer might register it."""
    schema = copy.deepcopy(avro_schema(Bar))
    fields = []
    for field in schema["fields"]:
        if field["name"] in without:
            continue
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            if isinstance(branch, dict) and field["name"] in PRICES:
                branch["scale"] = price_scale
            if isinstance(branch, dict) and branch.get("logicalType") == "timestamp-micros" \
                    and millis:
                branch["logicalType"] = "timestamp-millis"
        if field["name"] in nullable:  # a null where the contract needs a value
            field["type"] = ["null", field["type"]]
        if null_last and isinstance(field["type"], list):
            field["type"] = field["type"][::-1]
            field.pop("default", None)
        fields.append(field)
    if extra:  # a newer producer's fields, which this contract does not have
        fields.insert(2, {"name": "venue", "type": ["null", "string"], "default": None})
        fields.append({"name": "vwap", "type": {"type": "bytes", "logicalType": "decimal",
                                                 "precision": 18, "scale": 8}})
        fields.append({"name": "trades", "type": "long"})
    return {**schema, "fields": fields}


def framed(schema: dict[str, Any], record: dict[str, Any]) -> Framed:
    parsed = fastavro.parse_schema(schema)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return Framed(Schema(1, Encoding.AVRO, frozenset({"t-value"}), parsed, schema), out.getvalue())


def both_paths(message: Framed) -> tuple[str | None, str | None]:
    """(the exact path's line, the text path's), None where one does not take the message."""
    try:
        exact: str | None = copy_line(PIPELINE.to_row(
            PIPELINE.decode(message.payload, Encoding.AVRO, message)))
    except (msgspec.ValidationError, msgspec.DecodeError):
        exact = None
    reader = message.schema.text_reader(Bar)
    fast = None if reader is None else reader.read(message.payload)
    return exact, None if fast is None else fast[1]


def record_of(bar: Bar, schema: dict[str, Any],
              changes: Iterable[tuple[str, Any]] = ()) -> dict[str, Any]:
    """``bar`` with ``changes`` as a producer with ``schema`` hands it to its serializer: each
    decimal at the schema's scale."""
    record: dict[str, Any] = msgspec.structs.asdict(bar)
    record.update(venue="XNAS", vwap=Decimal("1.5"), trades=12)
    record.update(changes)
    scales = {f["name"]: _scale(f["type"]) for f in schema["fields"]}
    for name, scale in scales.items():
        if scale is not None and record.get(name) is not None:
            record[name] = record[name].quantize(Decimal(1).scaleb(-scale))
    return record


def written(schema: dict[str, Any], bar: Bar,
            changes: Iterable[tuple[str, Any]]) -> Framed | None:
    """``bar`` with ``changes`` framed under ``schema``, or None if the schema cannot hold
    them (a null where it has none)."""
    try:
        return framed(schema, record_of(bar, schema, changes))
    except (ValueError, TypeError, OverflowError):
        return None


def _scale(avro_type: Any) -> int | None:
    for branch in avro_type if isinstance(avro_type, list) else [avro_type]:
        if isinstance(branch, dict) and branch.get("logicalType") == "decimal":
            return int(branch["scale"])
    return None


VARIANTS = [
    {}, {"price_scale": 4}, {"price_scale": 0}, {"null_last": True}, {"extra": True},
    {"without": ("vix", "detected_regime")}, {"millis": True},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(v) or "registered")
def test_demo_bars_take_the_text_path_and_land_as_the_exact_path_lands_them(
        variant: dict[str, Any]) -> None:
    schema = writer_schema(**variant)
    for bar in (e for e in demo_events() if isinstance(e, Bar)):
        exact, fast = both_paths(framed(schema, record_of(bar, schema)))
        assert exact is not None and fast is not None, variant
        assert stored(fast) == stored(exact)


def decimal_edges(name: str) -> list[Decimal | None]:
    """A decimal field's values at and around every limit its column and bound set."""
    precision, scale = Bar.decimals[name]
    ulp, top = Decimal(1).scaleb(-scale), Decimal(10) ** (precision - scale)
    bound = Bar.bounds.get(name)
    edges: list[Decimal | None] = [None, Decimal(0), ulp, -ulp, top - ulp, top, -(top - ulp),
                                   -top]
    if bound is not None:
        edges += [e + d for e in (bound.low, bound.high) if e is not None for d in (-ulp, 0, ulp)]
    return edges


def decimal_values(name: str) -> st.SearchStrategy[Decimal | None]:
    precision, scale = Bar.decimals[name]
    top = Decimal(10) ** (precision - scale)
    return st.one_of(st.sampled_from(decimal_edges(name)), st.decimals(
        min_value=-top * 10, max_value=top * 10, places=scale, allow_nan=False,
        allow_infinity=False))


PLAIN_EDGES: dict[str, list[Any]] = {
    "symbol": ["AAPL", "A", "ABCDEFGHIJ", "ABCDEFGHIJK", "BRK.B", "", "aapl", "X\\Y", "É",
               "AAPL\n", "A\tB"],
    "volume": [0, 1, 5_000_000, -1, 2**63 - 1],
    "detected_regime": [None, "ranging", "volatile", "sideways", "Ranging"],
}
PLAIN_VALUES = {
    **{name: st.sampled_from(edges) for name, edges in PLAIN_EDGES.items()},
    "timestamp": st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                              timezones=st.just(UTC)),
}
# a valid bar with one to three fields changed: all of them at once would nearly always be
# refused for one of them, and say nothing about the others
CHANGES = st.lists(st.sampled_from([*Bar.decimals, *PLAIN_VALUES]).flatmap(
    lambda name: st.tuples(st.just(name), PLAIN_VALUES[name] if name in PLAIN_VALUES
                           else decimal_values(name))),
    min_size=1, max_size=3)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=CHANGES, variant=st.sampled_from(VARIANTS))
def test_the_text_path_stores_what_the_exact_path_stores_and_refuses_what_it_refuses(
        changes: list[tuple[str, Any]], variant: dict[str, Any]) -> None:
    bar = next(e for e in demo_events() if isinstance(e, Bar))
    message = written(writer_schema(**variant), bar, changes)
    if message is None:
        return
    exact, fast = both_paths(message)
    if exact is None:
        assert fast is None, changes
    elif fast is not None:
        assert stored(fast) == stored(exact), changes


@pytest.mark.parametrize("variant", [{}, {"price_scale": 4}, {"nullable": ("symbol", "volume")}],
                         ids=["registered", "price_scale=4", "nullable"])
def test_each_value_at_a_limit_alone_is_taken_or_refused_as_the_exact_path_does(
        variant: dict[str, Any]) -> None:
    schema = writer_schema(**variant)
    bar = next(e for e in demo_events() if isinstance(e, Bar))
    edges = {**PLAIN_EDGES, "symbol": [*PLAIN_EDGES["symbol"], None], "volume": [
        *PLAIN_EDGES["volume"], None], **{name: decimal_edges(name) for name in Bar.decimals}}
    fast_taken = 0
    for name, values in edges.items():
        for value in values:
            message = written(schema, bar, [(name, value)])
            if message is None:
                continue
            exact, fast = both_paths(message)
            assert (exact is None) == (fast is None), (name, value)  # none left to it here
            if fast is not None:
                fast_taken += 1
                assert stored(fast) == stored(exact), (name, value)
    assert fast_taken > 50


def test_a_cut_or_padded_payload_takes_the_exact_path() -> None:
    schema = writer_schema()
    bar = next(e for e in demo_events() if isinstance(e, Bar))
    payload = framed(schema, record_of(bar, schema)).payload
    reader = avro_text_reader(schema, Bar)
    assert reader is not None and reader.read(payload) is not None
    for cut in (payload[:-1], payload[:9], payload + b"\x00", b"", b"\xff" * 30):
        assert reader.read(cut) is None, cut


def test_a_null_where_the_contract_needs_a_decimal_takes_the_exact_path() -> None:
    schema = writer_schema()
    for field in schema["fields"]:
        if field["name"] == "close":
            field["type"] = ["null", field["type"]]
    bar = next(e for e in demo_events() if isinstance(e, Bar))
    exact, fast = both_paths(framed(schema, {**record_of(bar, schema), "close": None}))
    assert exact is None and fast is None


def test_schemas_a_reader_does_not_read_get_none() -> None:
    nested = writer_schema()
    nested["fields"].append({"name": "book", "type": {
        "type": "record", "name": "Book", "fields": [{"name": "bid", "type": "double"}]}})
    finer = writer_schema(price_scale=10)  # more places than the column keeps
    required_missing = writer_schema(without=("close",))
    fixed = writer_schema()
    fixed["fields"][2]["type"] = {"type": "fixed", "name": "OpenFixed", "size": 8,
                                  "logicalType": "decimal", "precision": 18, "scale": 8}
    odd_scale = writer_schema()
    odd_scale["fields"][2]["type"] = {**odd_scale["fields"][2]["type"], "scale": "eight"}
    for schema in (nested, finer, required_missing, fixed, odd_scale, {"type": "string"},
                   {"type": "record", "name": "R", "fields": [{"type": "long"}]}):
        assert avro_text_reader(schema, Bar) is None


def test_the_line_writes_decimals_in_exponent_notation_that_postgres_reads_exactly() -> None:
    schema = writer_schema()
    bar = msgspec.structs.replace(
        next(e for e in demo_events() if isinstance(e, Bar)), open=Decimal("0.00000001"),
        macd_line=Decimal("-2.5"), vix=None)
    fast = both_paths(framed(schema, record_of(bar, schema)))[1]
    assert fast is not None
    columns = dict(zip(PIPELINE.columns, fast.rstrip("\n").split("\t"), strict=True))
    assert (columns["open"], columns["macd_line"], columns["vix"]) == ("1e-8", "-250000000e-8",
                                                                       "\\N")
    assert columns["timestamp"] == bar.timestamp.isoformat().replace("+00:00", "Z")


def test_times_past_what_a_datetime_holds_take_the_exact_path() -> None:
    schema = writer_schema()
    bar = next(e for e in demo_events() if isinstance(e, Bar))
    record = record_of(bar, schema)
    message = framed(schema, record)
    reader = avro_text_reader(schema, Bar)
    assert reader is not None
    far = fastavro.parse_schema({"type": "long"})
    out = io.BytesIO()
    fastavro.schemaless_writer(out, far, 2**62)  # year ~146,000
    symbol_end = 1 + len(bar.symbol)
    start = message.payload[symbol_end:]
    old = io.BytesIO()
    micros = (bar.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    fastavro.schemaless_writer(old, far, micros)
    assert start.startswith(old.getvalue())
    payload = message.payload[:symbol_end] + out.getvalue() + start[len(old.getvalue()):]
    assert reader.read(payload) is None
