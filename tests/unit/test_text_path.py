"""The text fast path (ingest/pipelines/text.py) never accepts what the contract refuses, and
what it accepts is stored as the exact path would store it."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.contracts.bars import Bar
from consumers.contracts.base import NON_NEGATIVE, POSITIVE, Bound, between, decimal_pattern
from consumers.contracts.encoding import Encoding
from consumers.contracts.fills import Fill
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.text import TextDecoder, row_text, text_columns
from consumers.ingest.trades import TradeOutcome
from consumers.platform.db import copy_line

FAST = TextDecoder(Bar)
PIPELINE = BarsPipeline()
NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)

# Decimal texts near every edge the contract checks: places, integer digits, sign, zero,
# bounds, notation, and things that are not numbers at all.
NUMBER_TEXT = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**11,
                max_value=10**11).map(str),
    st.sampled_from([
        "0", "-0", "0.0", "00.5", "1.", ".5", "-.5", "1e2", "1E-3", "100.123456789",
        "100.12345678", "100.123456780", "9999999999.99999999", "10000000000", "-1", "1.0000",
        "100", "100.00", "101", "-1.001", "0.0001", "0.00001", "99999.9999", "NaN", "Infinity",
        "+1", " 1", "1 ", "1_0", "٣", "0x10", "", "-", ".", "1..2", "1e", "--1",
    ]),
)


def _json_number(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return text.strip() == text and text[:1] in "-0123456789"


JSON_VALUE = st.one_of(
    NUMBER_TEXT.map(json.dumps),  # a decimal string
    NUMBER_TEXT.filter(_json_number),  # a JSON number
    st.sampled_from(["null", '"null"', '""', "true", "[]", "{}", '["1"]', '"\\u0031"',
                     '"1\\n"']),
)


def message(values: dict[str, str | None]) -> bytes:
    """A bar whose decimal fields are the given JSON texts (None: the field is left out)."""
    fields = {"symbol": '"AAPL"', "timestamp": '"2026-01-05T14:30:00Z"', "volume": "1200",
              "open": '"100"', "high": '"102"', "low": '"99"', "close": '"101"'}
    fields.update({name: text for name, text in values.items() if text is not None})
    for name, text in values.items():
        if text is None:
            fields.pop(name, None)
    return ("{" + ",".join(f'"{name}":{text}' for name, text in fields.items()) + "}").encode()


def exact_line(value: bytes) -> str | None:
    try:
        bar = msgspec.json.decode(value, type=Bar)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return copy_line(PIPELINE.to_row(bar))


def stored(line: str) -> list[Any]:
    """A COPY line as the values PostgreSQL stores: decimals compared as numbers."""
    out: list[Any] = []
    for column, text in zip(FAST.columns, line[:-1].split("\t"), strict=True):
        if text == "\\N":
            out.append(None)
        elif column in Bar.decimals:
            out.append(Decimal(text))
        elif column == "timestamp":
            out.append(datetime.fromisoformat(text))
        else:
            out.append(text)
    return out


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(Bar.decimals)),
                       st.one_of(st.none(), JSON_VALUE), max_size=8))
def test_the_fast_path_accepts_only_what_the_contract_accepts_and_stores_the_same(
        values: dict[str, str | None]) -> None:
    value = message(values)
    exact = exact_line(value)
    fast = FAST.decode(value)
    if exact is None:
        assert fast is None, value
    elif fast is not None:
        assert stored(fast[1]) == stored(exact), value


OFFSET = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
TIME = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.one_of(st.just(UTC), OFFSET))


@settings(max_examples=300)
@given(symbol=st.from_regex(r"[A-Z0-9.\-/]{1,10}", fullmatch=True), timestamp=TIME,
       volume=st.integers(0, 2**63 - 1),
       regime=st.sampled_from([None, "trending_up", "trending_down", "ranging", "volatile"]))
def test_a_bars_other_fields_are_written_as_the_exact_path_writes_them(
        symbol: str, timestamp: datetime, volume: int, regime: str | None) -> None:
    plain = {"symbol": json.dumps(symbol), "timestamp": json.dumps(timestamp.isoformat()),
             "volume": str(volume), "detected_regime": json.dumps(regime)}
    value = message(plain)  # type: ignore[arg-type]
    fast = FAST.decode(value)
    assert fast is not None
    assert fast[1] == exact_line(value), value


PRICE = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("9999999999.99999999"),
                    places=8)


@settings(max_examples=300)
@given(strategy=st.text(min_size=1, max_size=50), time=TIME,
       submitted=st.one_of(st.none(), TIME), quantity=st.integers(1, 10**9), price=PRICE,
       intended=st.one_of(st.none(), PRICE))
def test_row_text_writes_any_structs_fields_as_copy_line_does(
        strategy: str, time: datetime, submitted: datetime | None, quantity: int,
        price: Decimal, intended: Decimal | None) -> None:
    # strings that COPY escapes, UUIDs, decimals, a Literal, null times: what a bar has none of
    fill = Fill(fill_id=uuid.uuid4(), trade_id=uuid.uuid4(), strategy_id=strategy,
                model_version="v\\1\t", symbol="AAPL", side="SELL", quantity=quantity,
                price=price, intended_price=intended, filled_at=time,
                order_submitted_at=submitted)
    plain = text_columns(Fill)[:-len(Fill.decimals)]
    assert row_text(Fill, plain)(fill) == copy_line([getattr(fill, c) for c in plain])[:-1]
    every = Fill.__struct_fields__
    assert row_text(Fill, every)(fill) == copy_line(msgspec.structs.astuple(fill))[:-1]
    outcome = TradeOutcome(
        trade_id=fill.trade_id, strategy_id=strategy, model_version="v1", symbol="AAPL",
        direction="LONG", entry_time=time, exit_time=submitted, entry_price=price,
        exit_price=intended, quantity=quantity, gross_pnl=None, net_pnl=-price,
        commission=Decimal("0E-8"), slippage=intended, duration_seconds=None,
        outcome_type="OPEN", fill_latency_us_sum=quantity, fill_latency_count=0)
    assert row_text(TradeOutcome, TradeOutcome.__struct_fields__)(outcome) == \
        copy_line(msgspec.structs.astuple(outcome))[:-1]


@pytest.mark.parametrize("values", [
    {},
    {"rsi_14": "55.5", "vix": '"18.25"', "atr_14": "null", "spy_correlation": "-1"},
    {"open": '"0100.50"', "close": "100.5000000000", "regime_confidence": "1.0"},
])
def test_plain_notation_takes_the_fast_path(values: dict[str, str]) -> None:
    value = message(values)
    fast = FAST.decode(value)
    assert fast is not None
    assert stored(fast[1]) == stored(exact_line(value) or "")
    assert PIPELINE.accept(value, NOW).line == fast[1]


@pytest.mark.parametrize("text", ["1e2", '"1E2"', '"\\u0031"', '"+1"', '" 1"'])
def test_other_notations_take_the_exact_path_and_still_land(text: str) -> None:
    value = message({"rsi_14": text})
    assert FAST.decode(value) is None
    line = PIPELINE.accept(value, NOW).line
    assert stored(line)[FAST.columns.index("rsi_14")] == Decimal(json.loads(text))


@pytest.mark.parametrize("text", ["0", "-1", "100.123456789", "10000000000", '"NaN"', '"x"',
                                  "true"])
def test_a_refused_decimal_is_refused_with_the_contracts_reason(text: str) -> None:
    value = message({"open": text})
    assert FAST.decode(value) is None
    with pytest.raises(msgspec.ValidationError, match=r"open"):
        PIPELINE.accept(value, NOW)


def test_the_string_null_is_not_taken_for_a_null() -> None:
    value = message({"atr_14": '"null"'})  # atr_14 may be null, but not the string "null"
    assert FAST.decode(value) is None
    with pytest.raises(msgspec.ValidationError, match=r"atr_14"):
        PIPELINE.accept(value, NOW)


def test_a_contract_with_checks_of_its_own_cannot_take_the_text_path() -> None:
    class Checked(Fill, frozen=True, kw_only=True):
        def __post_init__(self) -> None:
            super().__post_init__()

    with pytest.raises(TypeError, match="checks more"):
        TextDecoder(Checked)


# Every string of up to 7 characters from these: signs, points, zero and nonzero digits.
SHORT_TEXTS = ["".join(chars) for length in range(8)
               for chars in itertools.product("-019.", repeat=length)]


def _plain_decimal_within(text: str, integer_digits: int, scale: int, bound: Bound) -> bool:
    """What ``decimal_pattern`` must accept, said with Decimal: plain notation with a digit,
    a sign only where the bound allows negatives, at most ``scale`` places that are not
    trailing zeros, a value below 10^``integer_digits`` (leading zeros aside, at most that many
    digits before the point), within ``bound``."""
    if re.fullmatch(r"-?[0-9]*\.?[0-9]*", text) is None or not any(c.isdigit() for c in text):
        return False
    if text.startswith("-") and bound.low is not None and bound.low >= 0:
        return False
    value = Decimal(text)
    if value != value.quantize(Decimal(1).scaleb(-scale)):
        return False
    if bound.high is None and abs(value) >= 10 ** integer_digits:
        return False
    return bound.refuses(value) is None


CASES = [(digits, scale, bound) for digits, scale in [(1, 0), (1, 1), (2, 2), (3, 1), (0, 2)]
         for bound in [Bound(), POSITIVE, NON_NEGATIVE, between(0, 1), between(-1, 1),
                       between(0, 10), between(-10, 10)]
         if bound.high is None or len(str(int(bound.high))) - 1 <= digits]  # as contracts have


@pytest.mark.parametrize(("integer_digits", "scale", "bound"), CASES)
def test_the_decimal_pattern_accepts_exactly_the_plain_decimals_within_bounds(
        integer_digits: int, scale: int, bound: Bound) -> None:
    pattern = re.compile(decimal_pattern(integer_digits, scale, bound))
    wrong = [text for text in SHORT_TEXTS if bool(pattern.fullmatch(text))
             != _plain_decimal_within(text, integer_digits, scale, bound)]
    assert wrong == [], wrong[:10]


# MessagePack: the same path when the decimals are strings (decode_packed)
PACKED_VALUE = st.one_of(
    NUMBER_TEXT,  # a decimal string
    st.floats(allow_nan=True, allow_infinity=True),  # a float64: always the exact path
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([None, "null", "", True, [], {}, ["1"], "1\t2", "1\n", b"1"]),
)
MISSING = object()


def packed_message(values: dict[str, Any]) -> bytes:
    """A bar whose decimal fields are the given MessagePack values (MISSING: left out)."""
    fields: dict[str, Any] = {"symbol": "AAPL", "timestamp": "2026-01-05T14:30:00Z",
                              "volume": 1200, "open": "100", "high": "102", "low": "99",
                              "close": "101"}
    fields.update(values)
    return msgspec.msgpack.encode({k: v for k, v in fields.items() if v is not MISSING})


def exact_packed_line(value: bytes) -> str | None:
    try:
        bar = msgspec.msgpack.decode(value, type=Bar)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return copy_line(PIPELINE.to_row(bar))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(Bar.decimals)),
                       st.one_of(st.just(MISSING), PACKED_VALUE), max_size=8))
def test_the_messagepack_fast_path_accepts_only_what_the_contract_accepts(
        values: dict[str, Any]) -> None:
    value = packed_message(values)
    exact = exact_packed_line(value)
    fast = FAST.decode_packed(value)
    if exact is None:
        assert fast is None, value
    elif fast is not None:
        assert stored(fast[1]) == stored(exact), value


def test_messagepack_decimal_strings_take_the_fast_path_and_floats_the_exact_one() -> None:
    strings = packed_message({"rsi_14": "55.5", "vix": "18.25", "atr_14": None})
    fast = FAST.decode_packed(strings)
    assert fast is not None and stored(fast[1]) == stored(exact_packed_line(strings) or "")
    assert PIPELINE.accept(strings, NOW, Encoding.MSGPACK).line == fast[1]
    floats = packed_message({"rsi_14": 55.5})
    assert FAST.decode_packed(floats) is None
    assert stored(PIPELINE.accept(floats, NOW, Encoding.MSGPACK).line)[
        FAST.columns.index("rsi_14")] == Decimal("55.5")
    assert FAST.decode_packed(packed_message({"atr_14": "null"})) is None
