"""The bars topic's message: one bar of market data with its indicators."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal

import msgspec

from consumers.contracts.base import POSITIVE, Bound, Contract, Symbol, UtcTime, between

Regime = Literal["trending_up", "trending_down", "ranging", "volatile"]
Volume = Annotated[int, msgspec.Meta(ge=0, le=9_223_372_036_854_775_807)]
PRICE = (18, 8)


class Bar(Contract, frozen=True, kw_only=True):
    """One bar of market data with its indicators (the market_conditions columns)."""

    symbol: Symbol
    timestamp: UtcTime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Volume
    atr_14: Decimal | None = None
    rsi_14: Decimal | None = None
    ema_20: Decimal | None = None
    ema_50: Decimal | None = None
    bb_upper: Decimal | None = None
    bb_lower: Decimal | None = None
    macd_line: Decimal | None = None
    macd_signal: Decimal | None = None
    volatility_20d: Decimal | None = None
    vix: Decimal | None = None
    detected_regime: Regime | None = None
    regime_confidence: Decimal | None = None
    spy_correlation: Decimal | None = None
    sector_correlation: Decimal | None = None

    decimals: ClassVar[dict[str, tuple[int, int]]] = {
        "open": PRICE, "high": PRICE, "low": PRICE, "close": PRICE, "atr_14": PRICE,
        "rsi_14": (5, 2), "ema_20": PRICE, "ema_50": PRICE, "bb_upper": PRICE,
        "bb_lower": PRICE, "macd_line": PRICE, "macd_signal": PRICE,
        "volatility_20d": (10, 6), "vix": (8, 4), "regime_confidence": (5, 4),
        "spy_correlation": (4, 3), "sector_correlation": (4, 3),
    }
    bounds: ClassVar[dict[str, Bound]] = {
        "open": POSITIVE, "high": POSITIVE, "low": POSITIVE, "close": POSITIVE,
        "rsi_14": between(0, 100), "regime_confidence": between(0, 1),
        "spy_correlation": between(-1, 1), "sector_correlation": between(-1, 1),
    }
    rules: ClassVar[tuple[str, ...]] = (
        "high below low, or open or close outside [low, high] (the database refuses the bar)",
        "timestamp more than CIE_FUTURE_TOLERANCE_SECONDS ahead of the consumer's clock",
    )
