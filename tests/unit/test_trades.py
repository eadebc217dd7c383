"""Trade outcomes from fills, against hand-computed figures."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from decimal import Decimal
from functools import partial

import msgspec
import pytest

from consumers.errors import LedgerError
from consumers.ingest.trades import derive
from tests.support.builders import fill as build_fill
from tests.support.clock import T0

TRADE = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
fill = partial(build_fill, TRADE, strategy="momentum")


# LONG: buy 100 @ 10.00 and 50 @ 10.30, sell 150 @ 10.50 in two fills
LONG_FILLS = [
    fill("BUY", 100, "10.00", 0, commission="1.00", intended="9.99"),
    fill("BUY", 50, "10.30", 1, commission="0.50", intended="10.30"),
    fill("SELL", 60, "10.50", 10, commission="0.60", intended="10.52"),
    fill("SELL", 90, "10.50", 12, commission="0.90"),
]


def test_long_trade_from_partial_fills() -> None:
    outcome = derive(LONG_FILLS)
    # entry = (100*10 + 50*10.30) / 150 = 1515 / 150 = 10.1
    assert outcome.direction == "LONG"
    assert outcome.entry_price == Decimal("10.10000000")
    assert outcome.exit_price == Decimal("10.50000000")
    assert outcome.quantity == 150
    # gross = 150*10.50 - 1515 = 1575 - 1515 = 60; commission 3.00; net 57
    assert outcome.gross_pnl == Decimal("60.0000")
    assert outcome.commission == Decimal("3.00")
    assert outcome.net_pnl == Decimal("57.0000")
    # slippage per unit over fills with intended: (100*0.01 + 50*0 + 60*0.02) / 210
    assert outcome.slippage == (Decimal("2.2") / 210).quantize(Decimal("0.00000001"))
    assert outcome.entry_time == T0
    assert outcome.exit_time == T0 + timedelta(minutes=12)
    assert outcome.duration_seconds == 720
    assert outcome.outcome_type == "WIN"


def test_fill_latencies_are_summed_exactly_over_timed_fills() -> None:
    submitted = [T0 - timedelta(milliseconds=250, microseconds=7), None,
                 T0 + timedelta(minutes=10, milliseconds=-1500)]
    fills = [msgspec.structs.replace(f, order_submitted_at=s)
             for f, s in zip(LONG_FILLS, [*submitted, None], strict=True)]
    outcome = derive(fills)
    assert outcome.fill_latency_count == 2  # two fills say when their order was submitted
    assert outcome.fill_latency_us_sum == 250_007 + 1_500_000
    assert derive(LONG_FILLS).fill_latency_count == 0


def test_any_arrival_order_gives_the_same_outcome() -> None:
    expected = derive(LONG_FILLS)
    for order in itertools.permutations(LONG_FILLS):
        assert derive(list(order)) == expected


def test_short_trade_loses_when_price_rises() -> None:
    outcome = derive([
        fill("SELL", 40, "50.25", 0, commission="0.40"),
        fill("BUY", 40, "50.75", 5, commission="0.40"),
    ])
    # gross = -(40*50.75 - 40*50.25) = -20; net = -20.80
    assert (outcome.direction, outcome.gross_pnl, outcome.net_pnl, outcome.outcome_type) == (
        "SHORT", Decimal("-20.0000"), Decimal("-20.8000"), "LOSS")


def test_breakeven_and_open_trades() -> None:
    flat = derive([fill("BUY", 10, "5", 0), fill("SELL", 10, "5", 1)])
    assert (flat.net_pnl, flat.outcome_type) == (Decimal("0.0000"), "BREAKEVEN")
    still_open = derive([fill("BUY", 10, "5", 0), fill("SELL", 4, "6", 1)])
    assert still_open.outcome_type == "OPEN"
    assert (still_open.exit_time, still_open.gross_pnl, still_open.net_pnl) == (None, None, None)
    assert still_open.exit_price == Decimal("6.00000000")  # average of closing fills so far
    assert still_open.duration_seconds is None


def test_a_flipping_fill_is_refused() -> None:
    with pytest.raises(LedgerError, match="would flip"):
        derive([fill("BUY", 10, "5", 0), fill("SELL", 15, "6", 1)])


def test_a_fill_after_the_close_is_refused() -> None:
    with pytest.raises(LedgerError, match="comes after the close"):
        derive([fill("BUY", 10, "5", 0), fill("SELL", 10, "6", 1), fill("BUY", 5, "6", 2)])


def test_fills_of_one_trade_must_agree_on_the_symbol() -> None:
    with pytest.raises(LedgerError, match="symbol='MSFT'"):
        derive([fill("BUY", 10, "5", 0), fill("SELL", 10, "6", 1, symbol="MSFT")])


def test_averages_round_half_even_once() -> None:
    outcome = derive([fill("BUY", 1, "10", 0), fill("BUY", 2, "10.00000001", 1)])
    # (10 + 20.00000002) / 3 = 10.00000000666... -> 10.00000001
    assert outcome.entry_price == Decimal("10.00000001")
