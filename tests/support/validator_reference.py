"""A plain-Python statement of the validator's rules, to check the SQL against.

Written from docs/analytics.md ("Validation"), not from the SQL: bars are (timestamp, close) or
(timestamp, high, low) per symbol.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

RETURN_UNIT = Decimal("0.00000001")
MONEY_UNIT = Decimal("0.0001")


def outcome(
    closes: dict[datetime, Decimal], predicted_at: datetime, horizon_minutes: int,
    predicted_direction: str | None, gap: timedelta, band: Decimal,
) -> tuple[Decimal, str, bool | None] | None:
    """(actual_return, actual_direction, prediction_accuracy), or None while not validatable."""
    horizon_end = predicted_at + timedelta(minutes=horizon_minutes)
    if not any(ts >= horizon_end for ts in closes):
        return None  # the data has not moved past the horizon yet
    start = max((ts for ts in closes if ts <= predicted_at), default=None)
    end = max((ts for ts in closes if ts <= horizon_end), default=None)
    if start is None or end is None or predicted_at - start > gap or horizon_end - end > gap:
        return None
    with localcontext() as context:
        context.prec = 60
        exact = (closes[end] - closes[start]) / closes[start]
    actual = exact.quantize(RETURN_UNIT, rounding=ROUND_HALF_UP)
    direction = "LONG" if actual > band else "SHORT" if actual < -band else "NEUTRAL"
    accuracy = None if predicted_direction is None else predicted_direction == direction
    return actual, direction, accuracy


def start_regime(regimes: dict[datetime, str | None], predicted_at: datetime,
                 gap: timedelta) -> str | None:
    """The regime of the start bar (the last at or before predicted_at, at most ``gap`` old):
    'none' if it has none; None without such a bar."""
    start = max((ts for ts in regimes if ts <= predicted_at), default=None)
    if start is None or predicted_at - start > gap:
        return None
    return regimes[start] or "none"


def excursions(
    bars: dict[datetime, tuple[Decimal, Decimal]], direction: str, entry_time: datetime,
    exit_time: datetime | None, entry_price: Decimal, quantity: int,
) -> tuple[Decimal, Decimal] | None:
    """(max favourable, max adverse) excursion in money, both >= 0; None without bars."""
    inside = [hl for ts, hl in bars.items()
              if ts >= entry_time and (exit_time is None or ts <= exit_time)]
    if not inside:
        return None
    highest = max(high for high, _ in inside)
    lowest = min(low for _, low in inside)
    up, down = highest - entry_price, entry_price - lowest
    favourable, adverse = (up, down) if direction == "LONG" else (down, up)
    return (
        (max(Decimal(0), favourable) * quantity).quantize(MONEY_UNIT, rounding=ROUND_HALF_UP),
        (max(Decimal(0), adverse) * quantity).quantize(MONEY_UNIT, rounding=ROUND_HALF_UP),
    )
