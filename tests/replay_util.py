"""Helpers for replay tests and bench: synthetic L3 streams, a pure-Python reference book, dataset writing."""
from __future__ import annotations

import bisect
import random
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from replay import kernels as K
from replay.book import to_dec
from replay.source import HOUR_NS, date_of, partition_dir
from schemas import DEC, TABLES, TS

T0 = 1_795_269_600_000_000_000  # 2026-11-21T14:00:00Z
PRICE_SCALE, AMOUNT_SCALE = 2, 4


def synth_l3(n: int, seed: int = 0, hours: int = 1, t0: int = T0, start_orders: int = 200) -> dict[str, np.ndarray]:
    """A consistent L3 stream of about n events over `hours` hours, each starting with R + S rows: adds near
    the touch, cancels of random live orders, sweeps of the best levels, ids sparse in 1e9..1e12."""
    rng = random.Random(seed)
    out = {k: [] for k in ("act", "side", "oid", "price", "amount")}
    ts: list[int] = []
    orders: dict[int, list] = {}  # id -> [side, price, amount, level list]
    live: list[int] = []
    where: dict[int, int] = {}
    levels = [dict(), dict()]  # price -> list of ids (FIFO)
    prices = [[], []]  # ascending
    mid = 6_000_000

    def emit(a, s, o, p, q, t):
        out["act"].append(a), out["side"].append(s), out["oid"].append(o)
        out["price"].append(p), out["amount"].append(q), ts.append(t)

    def add(s, p, q):
        o = rng.randrange(10**9, 10**12)
        while o in orders:
            o = rng.randrange(10**9, 10**12)
        orders[o] = [s, p, q]
        where[o] = len(live)
        live.append(o)
        lv = levels[s].get(p)
        if lv is None:
            lv = levels[s][p] = []
            bisect.insort(prices[s], p)
        lv.append(o)
        return o

    def drop(o):
        s, p, _ = orders.pop(o)
        i = where.pop(o)
        last = live.pop()
        if last != o:
            live[i] = last
            where[last] = i
        lv = levels[s][p]
        lv.remove(o)
        if not lv:
            del levels[s][p]
            prices[s].pop(bisect.bisect_left(prices[s], p))

    def price_for(s):
        if s == 0:
            ref = prices[1][0] if prices[1] else (prices[0][-1] + 1 if prices[0] else mid)
            return ref - 1 - int(rng.expovariate(0.2))
        ref = prices[0][-1] if prices[0] else (prices[1][0] - 1 if prices[1] else mid)
        return ref + 1 + int(rng.expovariate(0.2))

    for _ in range(start_orders):
        s = rng.randrange(2)
        add(s, price_for(s), rng.randrange(1, 10_000))
    per_hour = max(1, n // hours)
    for h in range(hours):
        hs = t0 + h * HOUR_NS
        emit(K.R, -1, 0, -1, 0, hs)
        for s in (0, 1):
            for p in prices[s]:
                for o in levels[s][p]:
                    emit(K.S, s, o, p, orders[o][2], hs)
        step = HOUR_NS // (per_hour + 1)
        for i in range(per_hour):
            t = hs + (i + 1) * step
            r = rng.random()
            pa_ = 0.5 if len(live) < 1000 else 0.4
            if r < pa_ or len(live) < 50:
                s = rng.randrange(2)
                q = rng.randrange(1, 10_000)
                p = price_for(s)
                emit(K.A, s, add(s, p, q), p, q, t)
            elif r < pa_ + 0.3:
                o = live[rng.randrange(len(live))]
                s, p, q = orders[o]
                emit(K.C, s, o, p, q, t)
                drop(o)
            elif r < pa_ + 0.45:
                s = rng.randrange(2)
                want = int(rng.expovariate(1 / 6000)) + 1
                while want > 0 and prices[s]:
                    p = prices[s][-1] if s == 0 else prices[s][0]
                    o = levels[s][p][0]
                    q = min(want, orders[o][2])
                    emit(K.F, s, o, p, q, t)
                    want -= q
                    orders[o][2] -= q
                    if orders[o][2] == 0:
                        drop(o)
            else:
                o = live[rng.randrange(len(live))]
                s, p, q = orders[o]
                if q < 2:
                    continue
                d = rng.randrange(1, q)
                emit(K.P, s, o, p, d, t)
                orders[o][2] -= d
    arr = {k: np.array(v, np.int64) for k, v in out.items()}
    arr["act"] = arr["act"].astype(np.int8)
    arr["side"] = arr["side"].astype(np.int8)
    arr["ts"] = np.array(ts, np.int64)
    arr["seq"] = np.arange(1, len(ts) + 1, dtype=np.int64) * 3  # sparse, increasing capture order
    return arr


def events_table(ev: dict[str, np.ndarray]) -> pa.Table:
    """book_events rows (schema of TABLES['book_events']) from a synthetic stream."""
    n = len(ev["seq"])
    act = pa.DictionaryArray.from_arrays(pa.array(ev["act"].astype(np.int32)), pa.array(K.ACTIONS)).cast(pa.string())
    sv = ev["side"] >= 0
    side = pa.DictionaryArray.from_arrays(pa.array(np.where(sv, ev["side"], 0).astype(np.int32), mask=~sv),
                                          pa.array(["bid", "ask"])).cast(pa.string())
    isr = ev["act"] == K.R
    isf = ev["act"] == K.F
    ts = pa.array(ev["ts"]).cast(TS)
    cols = {
        "ts_event": ts, "ts_recv": ts, "seq": pa.array(ev["seq"]), "session": pa.array(np.full(n, 1, np.int64)),
        "msg_seq": pa.array(ev["seq"]), "action": act, "side": side,
        "order_id": pa.array(ev["oid"], mask=isr), "price": to_dec(ev["price"], PRICE_SCALE, ~isr),
        "amount": to_dec(ev["amount"], AMOUNT_SCALE, ~isr),
        "trade_id": pa.array(np.where(isf, ev["seq"], 0), mask=~isf),
        "taker_order_id": pa.array(np.where(isf, ev["seq"] + 7, 0), mask=~isf),
    }
    schema = TABLES["book_events"].schema
    return pa.Table.from_arrays([cols[c] for c in schema.names], schema=schema)


def rows_table(table: str, rows: list[dict]) -> pa.Table:
    """A table from row dicts (missing columns null; decimals from strings; timestamps as int ns)."""
    schema = TABLES[table].schema
    cols = []
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        if pa.types.is_decimal(f.type):
            vals = [None if v is None else Decimal(v) for v in vals]
            cols.append(pa.array(vals, DEC))
        elif pa.types.is_timestamp(f.type):
            cols.append(pa.array(vals, pa.int64()).cast(TS))
        else:
            cols.append(pa.array(vals, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def ev_rows(spec: list[tuple], t0: int = T0, seq0: int = 1, dt: int = 1_000_000) -> pa.Table:
    """book_events from (action, side, order_id, price, amount) tuples, seq and ts increasing."""
    rows = [dict(ts_event=t0 + i * dt, ts_recv=t0 + i * dt, seq=seq0 + i, session=1, action=a, side=s,
                 order_id=o, price=p, amount=q) for i, (a, s, o, p, q) in enumerate(spec)]
    return rows_table("book_events", rows)


def write_part(root: str | Path, table: str, exchange: str, pair: str, tab: pa.Table, name: str = "part-0") -> Path:
    """Write rows of one date into `<root>/<table>/exchange=/pair=/date=/<name>.parquet`."""
    t = TABLES[table]
    ts = tab.column(t.time_column).cast(pa.int64()).to_numpy()
    dates = {date_of(int(x)) for x in ts}
    assert len(dates) == 1, dates
    d = partition_dir(root, table, exchange, pair, dates.pop())
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.parquet"
    pq.write_table(tab.cast(t.schema), path)
    return path


class RefBook:
    """Straightforward pure-Python L3 book (dict of orders, dict of levels, sorted level prices) with the
    engine's anomaly semantics: see the `replay.book` module docstring."""

    def __init__(self):
        self.orders: dict[int, list] = {}
        self.levels = [{}, {}]
        self.prices = [[], []]
        self.counts = dict.fromkeys(K.KINDS, 0)
        self.crossed = False

    def _take(self, o: int, q: int) -> None:
        s, p, a = self.orders[o]
        lv = self.levels[s][p]
        lv[0] -= q
        if q == a:
            del self.orders[o]
            lv[1] -= 1
            if lv[1] == 0:
                del self.levels[s][p]
                self.prices[s].pop(bisect.bisect_left(self.prices[s], p))
        else:
            self.orders[o][2] = a - q

    def apply(self, a: int, s: int, o: int, p: int, q: int, observe: bool = True) -> None:
        """Apply one event (codes as in replay.kernels)."""
        if a in (K.A, K.S):
            if o in self.orders:
                self.counts["dup_add"] += 1
            else:
                self.orders[o] = [s, p, q]
                lv = self.levels[s].get(p)
                if lv is None:
                    self.levels[s][p] = [q, 1]
                    bisect.insort(self.prices[s], p)
                else:
                    lv[0] += q
                    lv[1] += 1
        elif a == K.R:
            self.orders.clear()
            self.levels = [{}, {}]
            self.prices = [[], []]
        elif o not in self.orders:
            self.counts["fill_unknown" if a == K.F else "cancel_unknown"] += 1
        else:
            rest = self.orders[o][2]
            if a == K.C:
                q = rest
            if a == K.F and p >= 0 and p != self.orders[o][1]:
                self.counts["fill_price"] += 1
            if q > rest:
                self.counts["overfill" if a == K.F else "overcancel"] += 1
                q = rest
            self._take(o, q)
        if observe:
            b, k = self.bbo()[0], self.bbo()[2]
            x = b >= 0 and k >= 0 and b >= k
            if x and not self.crossed:
                self.counts["crossed"] += 1
            self.crossed = x

    def bbo(self) -> tuple[int, int, int, int]:
        """(bid price, bid amount, ask price, ask amount); -1 / 0 for an empty side."""
        bp = self.prices[0][-1] if self.prices[0] else -1
        ap = self.prices[1][0] if self.prices[1] else -1
        return (bp, self.levels[0][bp][0] if bp >= 0 else 0, ap, self.levels[1][ap][0] if ap >= 0 else 0)


def observe_mask(act: np.ndarray) -> np.ndarray:
    """Events after which the book is a real state (not in the middle of a snapshot)."""
    nxt = np.zeros(len(act), bool)
    nxt[:-1] = act[1:] == K.S
    return ~(((act == K.R) | (act == K.S)) & nxt)


#: sessions kinds that start a new connection's (or a resync's) snapshot
_NEW_BOOK = frozenset({"start", "connect", "disconnect", "gap", "resync", "stop"})


def hour_openings(events: list[tuple[int, str, int]], sessions: list[tuple[int, str]]) -> set[int]:
    """The seqs of the R rows that only open a wall-clock hour with the tracked book (DESIGN: self-contained
    hours), not a connection's or resync's snapshot. events: (seq, action, ts_recv ns) of one pair in seq
    order; sessions: (ts ns, kind) of that pair and of ALL. Such an R is the first row of its hour, and no
    connection or resync event lies between the row before it and it."""
    marks = sorted(ts for ts, kind in sessions if kind in _NEW_BOOK)
    out = set()
    for (_, _, t0), (seq, act, t1) in zip(events, events[1:]):
        if act == "R" and t1 // HOUR_NS != t0 // HOUR_NS:
            i = bisect.bisect_left(marks, t0)
            if i == len(marks) or marks[i] > t1:
                out.add(seq)
    return out
