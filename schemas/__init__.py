"""The one definition of every booktape table: columns, types, units and meaning.

Writer, replay, DuckDB views, docs and tests all read these objects; no other
module spells out a column list. Partition columns (`exchange`, `pair`, `date`)
live in the directory path, not in the files, and are described in PARTITIONS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

#: Every timestamp: integer nanoseconds since the epoch, UTC.
TS = pa.timestamp("ns", tz="UTC")
#: Every price and amount: exact decimal; 20 integer and 18 fractional digits.
DEC = pa.decimal128(38, 18)

PARTITIONS = ("exchange", "pair", "date")
PARTITION_DOCS = {
    "exchange": "venue name: btcalpha, bitexbit, bitopro or bitbay",
    "pair": "canonical pair BASE_QUOTE in upper case (BTC_USD); ALL for venue-wide rows",
    "date": "UTC date (YYYY-MM-DD) of the table's time column",
}
EXCHANGE_RE = re.compile(r"^[a-z][a-z0-9]{1,31}\Z")
PAIR_RE = re.compile(r"^[A-Z0-9]{1,16}(_[A-Z0-9]{1,16})?\Z")


def is_pair(pair: str) -> bool:
    """A canonical BASE_QUOTE pair name, as the recorder's config accepts it."""
    return isinstance(pair, str) and bool(PAIR_RE.match(pair)) and "_" in pair


#: Pair value for rows that belong to a venue rather than one pair.
ALL_PAIRS = "ALL"


def col(name: str, type_: pa.DataType, doc: str, unit: str = "", nullable: bool = True) -> pa.Field:
    """A field whose meaning and unit travel with it as Parquet field metadata."""
    meta = {"doc": doc}
    if unit:
        meta["unit"] = unit
    return pa.field(name, type_, nullable=nullable, metadata=meta)


@dataclass(frozen=True)
class Table:
    """A table: its schema, the column that decides its date/hour, and its capture order."""

    name: str
    doc: str
    schema: pa.Schema
    time_column: str
    order_by: tuple[str, ...]
    #: Columns that identify one logical row: the recorder de-duplicates trades on them,
    #: and for candles (several versions per row) the catalog view keeps the newest.
    latest_by: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return self.schema.names


_ts_recv = col("ts_recv", TS, "our receive time, taken when the frame or body arrived", "ns UTC", nullable=False)
_ts_event = col("ts_event", TS, "venue's time for the event, normalised from whatever unit the venue used", "ns UTC")
_seq = col("seq", pa.int64(), "capture order; unique in the dataset root, never repeats or goes back", nullable=False)
_session = col("session", pa.int64(), "connection or polling session id (allocated from seq)", nullable=False)
_msg_seq = col("msg_seq", pa.int64(), "seq of the raw message this row was parsed from")
_side = col("side", pa.string(), "book side: bid or ask")
_price = col("price", DEC, "price, exact as the venue sent it", "quote currency per base unit")
_amount = col("amount", DEC, "amount, exact as the venue sent it", "base currency")
_gap = col("gap", pa.bool_(), "true when the book behind this row is not known exact (between a gap and the next snapshot)", nullable=False)

RAW = Table(
    "raw",
    "Every message received (socket frame or REST body), verbatim, with its parse status.",
    pa.schema([
        _ts_recv,
        _seq,
        _session,
        col("stream", pa.string(), "logical stream, e.g. ws:book_BTC_USD or rest:exchanges", nullable=False),
        col("request", pa.string(), "for REST: method and URL with query (never credentials)"),
        col("status", pa.string(), "ok, or rejected when the message could not be parsed", nullable=False),
        col("reason", pa.string(), "why the message was rejected; null when ok"),
        col("payload", pa.binary(), "the message bytes exactly as received", nullable=False),
    ]),
    time_column="ts_recv",
    order_by=("seq",),
)

BOOK_EVENTS = Table(
    "book_events",
    "Order-level (L3) book actions: A add, F fill, C cancel, P partial cancel, R clear, S snapshot order.",
    pa.schema([
        _ts_event,
        _ts_recv,
        _seq,
        _session,
        _msg_seq,
        col("action", pa.string(), "A rests, F fill reduces a resting order, C cancel removes it, "
            "P reduces it by amount, R clears the book, S resting order from a snapshot", nullable=False),
        _side,
        col("order_id", pa.int64(), "resting order id (the maker for F)"),
        _price,
        col("amount", DEC, "A/S: resting amount; F: filled amount; P: amount removed; C: amount the venue reported", "base currency"),
        col("trade_id", pa.int64(), "venue trade id (F only)"),
        col("taker_order_id", pa.int64(), "the incoming order that caused the fill (F only)"),
    ]),
    time_column="ts_recv",
    order_by=("seq",),
)

BOOK_LEVELS = Table(
    "book_levels",
    "Price levels of L2 snapshots (venue pushes, REST books, grouped L3 books for validation).",
    pa.schema([
        _ts_event,
        _ts_recv,
        _seq,
        _session,
        col("snapshot_id", pa.int64(), "seq of the message the snapshot came from; one snapshot = one id", nullable=False),
        _side,
        col("level", pa.int32(), "0 is the best price on its side", nullable=False),
        _price,
        col("amount", DEC, "total amount resting at this price", "base currency"),
        col("count", pa.int32(), "number of orders at this price, when the venue says"),
        col("source", pa.string(), "ws (exact), ws_rounded (amounts rounded by the venue: BitoPro after its first "
            "frame), rest or rest_grouped", nullable=False),
    ]),
    time_column="ts_recv",
    order_by=("seq", "side", "level"),
)

TRADES = Table(
    "trades",
    "Trades from sockets and REST polling, de-duplicated by trade id where the venue has one.",
    pa.schema([
        _ts_event,
        _ts_recv,
        _seq,
        _session,
        col("trade_id", pa.string(), "venue trade id verbatim; for venues without ids a stable hash of the trade"),
        _price,
        _amount,
        col("taker_side", pa.string(), "buy or sell: the side of the aggressor, when known"),
        col("maker_order_id", pa.int64(), "resting order id, when known"),
        col("taker_order_id", pa.int64(), "incoming order id, when known"),
        col("source", pa.string(), "socket, rest, backfill, or import (replay import-mbo)", nullable=False),
    ]),
    time_column="ts_recv",
    order_by=("seq",),
    latest_by=("trade_id",),
)

CANDLES = Table(
    "candles",
    "Every version of every candle seen; the catalog view keeps the latest version of each.",
    pa.schema([
        col("resolution", pa.string(), "candle length: 1m 5m 15m 30m 1h 3h 4h 6h 12h 1d 1w 1M", nullable=False),
        col("ts_open", TS, "candle open time", "ns UTC", nullable=False),
        col("open", DEC, "first price"),
        col("high", DEC, "highest price"),
        col("low", DEC, "lowest price"),
        col("close", DEC, "last price"),
        col("volume", DEC, "traded amount", "base currency"),
        _ts_recv,
        _seq,
        _session,
    ]),
    time_column="ts_recv",
    order_by=("seq",),
    latest_by=("resolution", "ts_open"),
)

SESSIONS = Table(
    "sessions",
    "Operational events: connect, disconnect, snapshot, gap, resync, reject, rate_limited, error, start, stop.",
    pa.schema([
        col("ts", TS, "when it happened, our clock", "ns UTC", nullable=False),
        _seq,
        _session,
        col("stream", pa.string(), "stream the event belongs to", nullable=False),
        col("kind", pa.string(), "connect, disconnect, snapshot, gap, resync, reject, rate_limited, error, start or stop",
            nullable=False),
        col("detail", pa.string(), "human-readable detail (never credentials)"),
    ]),
    time_column="ts",
    order_by=("seq",),
)

BBO = Table(
    "bbo",
    "Replay output: best bid and offer after every change of either.",
    pa.schema([
        _ts_event,
        _ts_recv,
        col("seq", pa.int64(), "seq of the book event that caused the change", nullable=False),
        col("bid_price", DEC, "best bid; null when the bid side is empty"),
        col("bid_amount", DEC, "amount at the best bid", "base currency"),
        col("ask_price", DEC, "best ask; null when the ask side is empty"),
        col("ask_amount", DEC, "amount at the best ask", "base currency"),
        _gap,
    ]),
    time_column="ts_recv",
    order_by=("seq",),
)

DEPTH = Table(
    "depth",
    "Replay output: top-N levels per side at each interval (or after each event).",
    pa.schema([
        col("ts", TS, "sample time: the interval boundary, or the event's ts_recv with --every event", "ns UTC", nullable=False),
        col("seq", pa.int64(), "seq of the last book event applied before the sample", nullable=False),
        col("side", pa.string(), "bid or ask", nullable=False),
        col("level", pa.int32(), "0 is the best price on its side", nullable=False),
        _price,
        col("amount", DEC, "total amount at this price", "base currency"),
        col("count", pa.int32(), "orders at this price (L3 books only)"),
        _gap,
    ]),
    time_column="ts",
    order_by=("seq", "side", "level"),
)

TABLES: dict[str, Table] = {t.name: t for t in (RAW, BOOK_EVENTS, BOOK_LEVELS, TRADES, CANDLES, SESSIONS, BBO, DEPTH)}


def table(name: str) -> Table:
    """Look a table up by name, with a clear error for unknown names."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; tables are: {', '.join(TABLES)}") from None
