"""Canonical rows to table rows (tuples in schema column order) and row lists to store columns (pure)."""
from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from recorder.rows import BookEvent, Candle, Level, Trade
from schemas import TABLES

#: Column order each row builder below produces; checked against schemas/ at import.
ORDER = {
    "raw": ("ts_recv", "seq", "session", "stream", "request", "status", "reason", "payload"),
    "book_events": ("ts_event", "ts_recv", "seq", "session", "msg_seq", "action", "side", "order_id", "price",
                    "amount", "trade_id", "taker_order_id"),
    "book_levels": ("ts_event", "ts_recv", "seq", "session", "snapshot_id", "side", "level", "price", "amount",
                    "count", "source"),
    "trades": ("ts_event", "ts_recv", "seq", "session", "trade_id", "price", "amount", "taker_side",
               "maker_order_id", "taker_order_id", "source"),
    "candles": ("resolution", "ts_open", "open", "high", "low", "close", "volume", "ts_recv", "seq", "session"),
    "sessions": ("ts", "seq", "session", "stream", "kind", "detail"),
}
for _name, _cols in ORDER.items():
    if tuple(TABLES[_name].columns) != _cols:
        raise ImportError(f"recorder.feeds.columns is out of date with schemas/: table {_name}")


def raw_row(ts_recv: int, seq: int, session: int, stream: str, payload: bytes, status: str = "ok",
            reason: str | None = None, request: str | None = None) -> tuple:
    """One `raw` row."""
    return (ts_recv, seq, session, stream, request, status, reason, payload)


def event_row(ev: BookEvent, ts_recv: int, seq: int, session: int, msg_seq: int | None) -> tuple:
    """One `book_events` row."""
    return (ev.ts_event, ts_recv, seq, session, msg_seq, ev.action, ev.side, ev.order_id, ev.price, ev.amount,
            ev.trade_id, ev.taker_order_id)


def level_row(lv: Level, ts_event: int | None, ts_recv: int, seq: int, session: int, snapshot_id: int,
              source: str) -> tuple:
    """One `book_levels` row."""
    return (ts_event, ts_recv, seq, session, snapshot_id, lv.side, lv.level, lv.price, lv.amount, lv.count, source)


def trade_row(t: Trade, ts_recv: int, seq: int, session: int, source: str) -> tuple:
    """One `trades` row."""
    return (t.ts_event, ts_recv, seq, session, t.trade_id, t.price, t.amount, t.taker_side, t.maker_order_id,
            t.taker_order_id, source)


def candle_row(c: Candle, ts_recv: int, seq: int, session: int) -> tuple:
    """One `candles` row."""
    return (c.resolution, c.ts_open, c.open, c.high, c.low, c.close, c.volume, ts_recv, seq, session)


def session_row(ts: int, seq: int, session: int, stream: str, kind: str, detail: str | None) -> tuple:
    """One `sessions` row."""
    return (ts, seq, session, stream, kind, detail)


def _builder(t: pa.DataType) -> tuple[pa.DataType, pa.DataType | None]:
    """(type to build the column as, type to view it as afterwards). Decimals are built as text:
    the store casts and range-checks them."""
    if pa.types.is_timestamp(t):
        return pa.int64(), t
    if pa.types.is_decimal(t):
        return pa.string(), None
    return t, None


#: Per table, (name, build type, view type) of each column.
_BUILD = {name: tuple((f.name, *_builder(f.type)) for f in TABLES[name].schema) for name in ORDER}


def to_columns(table: str, rows: Sequence[tuple]) -> dict[str, pa.Array | Sequence]:
    """Row tuples of one table to the column mapping Store.append takes.

    Columns are built with their schema's types: the row builders above take their values from the
    venue parsers, which return ints for every int and ns column and exact text for decimals, so
    no type inference is needed (it was half the cost of storing a row). Arrow's typed build would
    truncate a float into an int column; nothing here produces one (tests/test_feeds_logic.py).
    Rows it cannot build are handed over as plain values for the store's strict validation to name.
    """
    spec = _BUILD[table]
    if not rows:
        return {n: [] for n, _, _ in spec}
    out: dict[str, pa.Array | Sequence] = {}
    for (name, build, view), values in zip(spec, zip(*rows)):
        try:
            arr = pa.array(values, build)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            out[name] = values
            continue
        out[name] = arr if view is None else arr.view(view)
    return out


def typed(table: str, cols: dict[str, object]) -> dict[str, pa.Array]:
    """Columns given as numpy arrays or Arrow arrays (a fast path's) to the types `to_columns` builds."""
    out: dict[str, pa.Array] = {}
    for (name, build, view), field in zip(_BUILD[table], TABLES[table].schema):
        v = cols[name]
        arr = v if isinstance(v, pa.Array) else pa.array(v, build)
        if arr.type == field.type:  # already final (exact decimals)
            out[name] = arr
            continue
        if arr.type != build:
            arr = arr.cast(build)
        out[name] = arr if view is None else arr.view(view)
    return out

