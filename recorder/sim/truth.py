"""Ground truth as Parquet: engine events, every message sent to each client, and exact book checkpoints."""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recorder.sim.engine import Cancel, Event, Market, to_dec

DEC = pa.decimal128(38, 18)
TS = pa.timestamp("ns", tz="UTC")

EVENTS = pa.schema([
    ("venue", pa.string()), ("pair", pa.string()),
    ("seq", pa.int64()),  # engine event number within venue+pair, from 1
    ("ts", TS),  # logical event time
    ("action", pa.string()),  # N order arrives, F fill of a resting order, A remainder rests, C cancel
    ("order_id", pa.int64()),  # N/A: the new order; F/C: the resting order
    ("side", pa.string()),  # side of order_id
    ("price", DEC), ("amount", DEC),  # N: original amount; F: filled; A: resting; C: amount cancelled
    ("trade_id", pa.int64()), ("taker_order_id", pa.int64()), ("cancel_id", pa.int64()),
])
MESSAGES = pa.schema([
    ("venue", pa.string()),
    ("conn", pa.string()),  # ws:<n> per socket connection, rest for REST bodies
    ("seq", pa.int64()),  # order within (venue, conn)
    ("ts_wall", TS),  # wall time the message was handed to the transport
    ("request", pa.string()),  # REST: method, path and query; null for sockets
    ("status", pa.int32()),  # REST HTTP status; null for sockets
    ("payload", pa.string()),  # the message text verbatim
])
BOOK = pa.schema([
    ("venue", pa.string()), ("pair", pa.string()),
    ("checkpoint_seq", pa.int64()),  # the book after engine event `seq`
    ("ts", TS),  # logical time of that event
    ("order_id", pa.int64()), ("side", pa.string()), ("price", DEC), ("amount", DEC),
    ("order_ts", TS),  # when the order started resting
])
TABLES = {"events": EVENTS, "messages": MESSAGES, "book": BOOK}


class TruthWriter:
    """Buffers rows per table and writes numbered Parquet part files under `root/<table>/`."""

    def __init__(self, root: str | Path, flush_rows: int = 50_000) -> None:
        self.root = Path(root)
        self.flush_rows = flush_rows
        self._rows: dict[str, list[dict]] = {t: [] for t in TABLES}
        self._parts = {t: 0 for t in TABLES}
        self._msg_seq: dict[tuple[str, str], int] = {}
        for t in TABLES:
            (self.root / t).mkdir(parents=True, exist_ok=True)

    def _add(self, table: str, row: dict) -> None:
        rows = self._rows[table]
        rows.append(row)
        if len(rows) >= self.flush_rows:
            self._flush(table)

    def events(self, venue: str, market: Market, events: list[Event]) -> None:
        pair, pdp, adp = market.spec.name, market.spec.price_dp, market.spec.amount_dp
        for e in events:
            base = {"venue": venue, "pair": pair, "seq": e.seq, "ts": e.ts}
            if isinstance(e, Cancel):
                self._add("events", {**base, "action": "C", "order_id": e.oid, "side": e.side, "price": to_dec(e.price, pdp),
                                     "amount": to_dec(e.lots, adp), "cancel_id": e.cancel_id})
                continue
            self._add("events", {**base, "action": "N", "order_id": e.oid, "side": e.side, "price": to_dec(e.price, pdp),
                                 "amount": to_dec(e.lots, adp)})
            for f in e.fills:
                self._add("events", {**base, "action": "F", "order_id": f.maker_oid, "side": f.maker_side,
                                     "price": to_dec(f.price, pdp), "amount": to_dec(f.lots, adp),
                                     "trade_id": f.tid, "taker_order_id": e.oid})
            if e.remaining:
                self._add("events", {**base, "action": "A", "order_id": e.oid, "side": e.side,
                                     "price": to_dec(e.price, pdp), "amount": to_dec(e.remaining, adp)})

    def message(self, venue: str, conn: str, payload: str, request: str | None = None, status: int | None = None) -> None:
        key = (venue, conn)
        seq = self._msg_seq.get(key, 0) + 1
        self._msg_seq[key] = seq
        self._add("messages", {"venue": venue, "conn": conn, "seq": seq, "ts_wall": time.time_ns(),
                               "request": request, "status": status, "payload": payload})

    def checkpoint(self, venue: str, market: Market) -> None:
        spec = market.spec
        base = {"venue": venue, "pair": spec.name, "checkpoint_seq": market.seq, "ts": market.last_ts}
        for side in ("buy", "sell"):
            for o in market.book.depth_orders(side):
                self._add("book", {**base, "order_id": o.oid, "side": side, "price": to_dec(o.price, spec.price_dp),
                                   "amount": to_dec(o.lots, spec.amount_dp), "order_ts": o.ts})

    def _flush(self, table: str) -> None:
        rows = self._rows[table]
        if not rows:
            return
        tbl = pa.Table.from_pylist(rows, schema=TABLES[table])
        path = self.root / table / f"part-{self._parts[table]:05d}.parquet"
        pq.write_table(tbl, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        self._parts[table] += 1
        self._rows[table] = []

    def close(self) -> None:
        for t in TABLES:
            self._flush(t)
