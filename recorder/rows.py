"""Canonical rows: what venue parsers produce and feeds hand to the store.

Parsers fill only what the venue said; feeds add our clock, seq and session.
Prices and amounts are exact decimal strings (the store casts them to DECIMAL
and refuses anything that would lose digits); timestamps are int ns UTC.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class ParseError(ValueError):
    """A message the parser cannot turn into rows; the reason goes to raw.reason."""


@dataclass(slots=True)
class BookEvent:
    """One primitive order-level action (book_events row without capture columns)."""

    ts_event: int | None
    action: str  # A F C P R S
    side: str | None = None  # bid / ask
    order_id: int | None = None
    price: str | None = None
    amount: str | None = None
    trade_id: int | None = None
    taker_order_id: int | None = None


@dataclass(slots=True)
class Level:
    """One price level of an L2 snapshot."""

    side: str  # bid / ask
    level: int  # 0 = best
    price: str
    amount: str
    count: int | None = None


@dataclass(slots=True)
class Trade:
    """One trade as the venue reported it."""

    ts_event: int | None
    trade_id: str | None
    price: str
    amount: str
    taker_side: str | None = None  # buy / sell
    maker_order_id: int | None = None
    taker_order_id: int | None = None


@dataclass(slots=True)
class Candle:
    """One version of one candle."""

    resolution: str
    ts_open: int
    open: str
    high: str
    low: str
    close: str
    volume: str


@dataclass(slots=True)
class Parsed:
    """Everything one message yielded, for one pair (None when venue-wide)."""

    pair: str | None = None
    ts_event: int | None = None
    events: list[BookEvent] = field(default_factory=list)
    levels: list[Level] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)
