"""The numpy book engine: L3 books from book_events and L2 books from book_levels, one hour at a time.

Prices and amounts become int64 ticks/lots at the smallest power of ten that makes every value of the
hour integral (exact, checked to fit int64). Everything is vectorised except the L3 event loop, which
is `replay.kernels.l3_run` (each event depends on the book the previous one left).

What the L3 book does with each conservation problem (counted per hour in HourResult.anomalies, with
the seq of the first occurrence in HourResult.first; never silently absorbed):
- fill_unknown: F for an order id not resting -> counted, ignored.
- overfill: F larger than the order's rest -> counted, the order is removed (no negative amounts).
- fill_price: F price differs from the resting price -> counted, the fill still reduces the order.
- cancel_unknown: C or P for an order id not resting (e.g. a second cancel) -> counted, ignored.
- overcancel: P larger than the order's rest -> counted, the order is removed.
- dup_add: A or S for an order id already resting -> counted, ignored (the resting order is kept).
- crossed: the book becomes crossed (best bid >= best ask) after an observed event -> counted once per
  entry into the crossed state; the orders stay as the venue reported them.
- invalid: a row missing what its action needs (side, price, positive amount, order id) or an unknown
  action -> counted, ignored.
The book is "observed" after every event except inside a snapshot (an R or S followed by S): outputs are
taken only at observed events. It is not known exact (gap = true) from the hour's start, every R and
every gap-kind sessions row (disconnect, gap, resync, reject) until the next snapshot completes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from replay import kernels as K
from replay import source
from replay.times import iso
from schemas import BBO, DEC, DEPTH, TS
from schemas.grouped import first_difference

#: Largest price range (in ticks) mapped directly to level slots; wider hours use sorted unique prices.
DIRECT_MAX = 1 << 20
#: Book samples recorded per kernel call: bounds sample arrays and depth parts whatever the hour's size.
SAMPLE_CHUNK = 1 << 16
SIDES = ("bid", "ask")


class ReplayError(ValueError):
    """The data cannot be replayed exactly (e.g. a value that does not fit int64 ticks)."""


# ---------------------------------------------------------------- exact decimals <-> int64


def _words(arr: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """A decimal128 column as (array, uint64 lo/hi words, validity)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], DEC)
    n = len(arr)
    w = np.frombuffer(arr.buffers()[1], np.uint64)[2 * arr.offset: 2 * (arr.offset + n)] if n else \
        np.empty(0, np.uint64)
    if arr.null_count:
        bits = np.unpackbits(np.frombuffer(arr.buffers()[0], np.uint8), bitorder="little")
        valid = bits[arr.offset: arr.offset + n].view(bool)
    else:
        valid = np.ones(n, bool)
    return arr, w, valid


def to_dec(x: np.ndarray, k: int, valid: np.ndarray | None = None) -> pa.Array:
    """decimal128(38,18) array of x / 10**k (null where not valid)."""
    x = np.ascontiguousarray(x, np.int64)
    w = np.empty(2 * len(x), np.uint64)
    K.int_to_dec(x, k, w)
    mask = None if valid is None or valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(DEC, len(x), [mask, pa.py_buffer(w)])


def text(v: int, k: int) -> str:
    """Exact canonical decimal text of v / 10**k (no exponent, no trailing zeros)."""
    s = str(abs(int(v))).rjust(k + 1, "0")
    i, f = (s[:-k], s[-k:].rstrip("0")) if k else (s, "")
    return ("-" if v < 0 else "") + i + ("." + f if f else "")


def exact_ints(column) -> tuple[np.ndarray, np.ndarray, int]:
    """(int64 values, validity, k) at the smallest scale 10**k making every value integral.

    The scale of the first 4096 values is tried on all; a second pass raises it only if some value needs it."""
    arr, w, valid = _words(column)
    k = K.dec_scale(w[:8192], valid[:4096])
    out = np.empty(len(valid), np.int64)
    if K.dec_to_int(w, valid, k, out) >= 0:
        k = K.dec_scale(w, valid)
        bad = K.dec_to_int(w, valid, k, out)
        if bad >= 0:
            raise ReplayError(f"{arr[bad].as_py()} is not an int64 multiple of 1e-{k}")
    return out, valid, k


def _codes(col: pa.ChunkedArray, values: tuple[str, ...]) -> np.ndarray:
    """int8 index of each value in values (-1 for null or other); dictionary chunks map their dictionary."""
    if not pa.types.is_dictionary(col.type):
        return pc.fill_null(pc.index_in(col, value_set=pa.array(values)), -1).to_numpy().astype(np.int8)
    out = []
    for ch in col.chunks:
        lut = np.append(pc.fill_null(pc.index_in(ch.dictionary, value_set=pa.array(values)), -1).to_numpy(), -1)
        idx = pc.fill_null(ch.indices, len(lut) - 1).to_numpy()
        out.append(lut[idx].astype(np.int8))
    return np.concatenate(out) if out else np.zeros(0, np.int8)


def _strings(codes: np.ndarray, values: tuple[str, ...]) -> pa.Array:
    """String array from small integer codes into values."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(values)).cast(pa.string())


def _table(schema: pa.Schema, cols: dict) -> pa.Table:
    """A table in the schema's column order."""
    return pa.Table.from_arrays([cols[n] for n in schema.names], schema=schema)


def _ts(x: np.ndarray) -> pa.Array:
    return pa.array(x.astype(np.int64), pa.int64()).cast(TS)


# ---------------------------------------------------------------- books


@dataclass
class Book:
    """A book at one instant: orders (L3) or levels (L2) as int64 ticks/lots with their scales."""

    l3: bool
    seq: int
    ts: int
    gap: bool
    side: np.ndarray
    price: np.ndarray
    amount: np.ndarray
    price_scale: int
    amount_scale: int
    order_id: np.ndarray | None = None
    count: np.ndarray | None = None

    @property
    def orders(self) -> list[tuple[str, Decimal, Decimal, int]]:
        """Resting orders (side, price, amount, order_id), best price first, then time priority (L3)."""
        return [(SIDES[s], Decimal(text(p, self.price_scale)), Decimal(text(a, self.amount_scale)), int(o))
                for s, p, a, o in zip(self.side, self.price, self.amount, self.order_id)]

    def _levels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(side, price, amount, count) per level, each side best first (orders are kept in that order)."""
        if not self.l3:
            return self.side, self.price, self.amount, self.count
        if not len(self.side):
            return self.side, self.price, self.amount, self.amount
        st = np.nonzero(_changed(self.side, self.price))[0]
        return (self.side[st], self.price[st], np.add.reduceat(self.amount, st),
                np.diff(np.append(st, len(self.side))))

    def levels(self, n: int | None = None) -> dict[str, list[tuple[Decimal, Decimal, int | None]]]:
        """Top n levels per side as exact (price, amount, count), best first."""
        side, price, amount, count = self._levels()
        out = {}
        for s, name in enumerate(SIDES):
            m = np.nonzero(side == s)[0][:n]
            out[name] = [(Decimal(text(price[i], self.price_scale)), Decimal(text(amount[i], self.amount_scale)),
                          None if count is None or count[i] < 0 else int(count[i])) for i in m]
        return out

    def digest(self) -> str:
        """sha256 of the canonical book: sorted lines `side price amount[ order_id]` as exact decimal text."""
        if self.l3:
            idx = np.lexsort((self.order_id, self.amount, self.price, -self.side))
            lines = [f"{SIDES[self.side[i]]} {text(self.price[i], self.price_scale)} "
                     f"{text(self.amount[i], self.amount_scale)} {self.order_id[i]}\n" for i in idx]
        else:
            idx = np.lexsort((self.amount, self.price, -self.side))
            lines = [f"{SIDES[self.side[i]]} {text(self.price[i], self.price_scale)} "
                     f"{text(self.amount[i], self.amount_scale)}\n" for i in idx]
        return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass
class HourResult:
    """Everything one replayed hour produced."""

    hour: int
    kind: str
    rows: int = 0
    duplicates: int = 0
    anomalies: dict[str, int] = field(default_factory=dict)
    #: seq of the first occurrence of each anomaly kind.
    first: dict[str, int] = field(default_factory=dict)
    digest: str = ""
    book: Book | None = None
    bbo: pa.Table | None = None
    depth: pa.Table | None = None
    mismatches: list[str] = field(default_factory=list)
    checked: int = 0
    #: recorded snapshots not checked because the replayed book was not known exact when they were taken.
    skipped: int = 0
    #: L2: level changes derived between consecutive snapshots of the hour.
    changes: int = 0


@dataclass(frozen=True)
class Depth:
    """What to sample: top `levels` per side every `every` ns, or after every event when every is None.

    Interval samples lie on the `every` grid inside [start, end) and inside the data: from an hour's first
    event, and in the `final` hour of a run up to its last event, never later (no invented future)."""

    levels: int = 10
    every: int | None = 1_000_000_000
    start: int | None = None
    end: int | None = None
    final: bool = False


def _samples(ts_recv: np.ndarray, hour: int, depth: Depth) -> tuple[np.ndarray, np.ndarray]:
    """(sample times, index of the last row with running-max ts_recv <= t) for interval sampling."""
    every = depth.every
    first = int(ts_recv[0]) if depth.start is None else max(int(ts_recv[0]), depth.start)
    stop = hour + source.HOUR_NS
    if depth.end is not None:
        stop = min(stop, depth.end)
    if depth.final:
        stop = min(stop, int(ts_recv.max()) + 1)
    t0 = -(-first // every) * every
    times = np.arange(t0, max(t0, stop), every, dtype=np.int64)
    pos = np.searchsorted(np.maximum.accumulate(ts_recv), times, "right") - 1
    return times, pos


def _late_gap(sess_ts: np.ndarray, sess_seq: np.ndarray, times: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Per sample: a gap-kind sessions row (sorted by ts) at or before its time comes after (by seq) the
    row the sample shows, so the book at that time is not known exact."""
    if not len(sess_ts):
        return np.zeros(len(times), bool)
    latest = np.maximum.accumulate(sess_seq)
    k = np.searchsorted(sess_ts, times, "right") - 1
    return (k >= 0) & (latest[np.maximum(k, 0)] > seqs)


def _changed(*cols: np.ndarray) -> np.ndarray:
    """Rows whose values differ from the previous row in any column (the first row always)."""
    n = len(cols[0])
    ch = np.zeros(n, bool)
    ch[:1] = True
    for c in cols:
        ch[1:] |= c[1:] != c[:-1]
    return ch


def _bbo_table(ts_event, ts_recv, seq, bp, ba, ap, aa, gap, pk: int, ak: int) -> pa.Table:
    """bbo rows (ticks/lots in, exact decimals out); a price of -1 means the side is empty."""
    bv, av = bp >= 0, ap >= 0
    return _table(BBO.schema, {
        "ts_event": _ts(ts_event), "ts_recv": _ts(ts_recv), "seq": pa.array(seq, pa.int64()),
        "bid_price": to_dec(bp, pk, bv), "bid_amount": to_dec(ba, ak, bv),
        "ask_price": to_dec(ap, pk, av), "ask_amount": to_dec(aa, ak, av), "gap": pa.array(gap, pa.bool_())})


def _depth_table(ts, seq, gap, price, amount, count, pk: int, ak: int) -> pa.Table:
    """depth rows from (samples, 2 sides, levels) arrays; price -1 marks no level, count -1 unknown; asks first."""
    ns, _, nlev = price.shape
    price, amount = price[:, ::-1], amount[:, ::-1]
    have = price >= 0
    lv = np.broadcast_to(np.arange(nlev, dtype=np.int32), price.shape)[have]
    sd = np.broadcast_to(np.array([1, 0], np.int8)[None, :, None], price.shape)[have]
    rep = have.reshape(ns, -1).sum(1)
    cnt = count[:, ::-1][have]
    cnt = pa.array(cnt.astype(np.int32), mask=cnt < 0)
    return _table(DEPTH.schema, {
        "ts": _ts(np.repeat(ts, rep)), "seq": pa.array(np.repeat(seq, rep), pa.int64()),
        "side": _strings(sd, SIDES), "level": pa.array(lv, pa.int32()),
        "price": to_dec(price[have], pk), "amount": to_dec(amount[have], ak), "count": cnt,
        "gap": pa.array(np.repeat(gap, rep), pa.bool_())})


# ---------------------------------------------------------------- L3


@dataclass
class Events:
    """One hour of book_events as int64 columns ready for the kernel."""

    seq: np.ndarray
    ts_event: np.ndarray
    ts_recv: np.ndarray
    act: np.ndarray
    side: np.ndarray
    oid: np.ndarray
    #: price level of row i is pidx[i] - lo (pidx < 0: no price); ticks[level] is its price in ticks.
    pidx: np.ndarray
    lo: int
    ticks: np.ndarray
    amt: np.ndarray
    price_scale: int
    amount_scale: int
    #: gap-kind sessions rows (ts, seq) sorted by ts, and the event position each one precedes.
    sess_ts: np.ndarray
    sess_seq: np.ndarray
    gpos: np.ndarray

    @classmethod
    def from_table(cls, tab: pa.Table, sessions: pa.Table | None = None) -> "Events":
        """Vectorised conversion of seq-ordered book_events rows (exact decimals checked to fit int64)."""
        act, side = _codes(tab.column("action"), K.ACTIONS), _codes(tab.column("side"), SIDES)
        px, pv, pk = exact_ints(tab.column("price"))
        amt, _, ak = exact_ints(tab.column("amount"))
        if not pv.all():
            px[~pv] = -1
        oidc = tab.column("order_id")
        oid = pc.fill_null(oidc, 0).to_numpy()
        if oidc.null_count:
            act[~oidc.is_valid().to_numpy() & (act != K.R)] = -1
        return cls.from_arrays(tab.column("seq").to_numpy(),
                               pc.fill_null(tab.column("ts_event").cast(pa.int64()), 0).to_numpy(),
                               tab.column("ts_recv").cast(pa.int64()).to_numpy(), act, side, oid, px, amt, pk, ak,
                               None if sessions is None else (sessions.column("ts").cast(pa.int64()).to_numpy(),
                                                              sessions.column("seq").to_numpy()))

    @classmethod
    def from_arrays(cls, seq, ts_event, ts_recv, act, side, oid, px, amt, pk: int, ak: int,
                    sessions: tuple[np.ndarray, np.ndarray] | None = None) -> "Events":
        """Events from int64 columns: price ticks (-1 = none) and amount lots at scales pk, ak."""
        lo, hi = (int(v) for v in K.minmax(px))
        if hi - lo < DIRECT_MAX:
            pidx, ticks = px, np.arange(lo, hi + 1, dtype=np.int64)
        else:
            ticks, inv = np.unique(px, return_inverse=True)
            pidx, lo = inv.astype(np.int64) - int(ticks[0] < 0), 0
            ticks = ticks[ticks >= 0]
        sts, sseq = (np.zeros(0, np.int64),) * 2 if sessions is None else sessions
        gpos = np.sort(np.searchsorted(seq, sseq, "right"))
        o = np.argsort(sts, kind="stable")
        return cls(seq, ts_event, ts_recv, act, side, oid, pidx, lo, ticks, amt, pk, ak, sts[o], sseq[o],
                   gpos[gpos < len(seq)])

    def __len__(self) -> int:
        return len(self.seq)


def _observed(act: np.ndarray) -> np.ndarray:
    """Events after which the book is a real state: not an R or S followed by another S."""
    nxt = np.zeros(len(act), bool)
    nxt[:-1] = act[1:] == K.S
    return ~(((act == K.R) | (act == K.S)) & nxt)


class L3Replay:
    """The order-level book over one hour's Events, advanced in place by the kernel."""

    def __init__(self, ev: Events, bbo: bool = False):
        self.ht = np.full((1 << 12, 4), -1, np.int64)
        self.shift = np.uint64(64 - 12)
        self.lv = np.zeros((2, len(ev.ticks), 2), np.int64)  # per side and level: amount, order count
        self.st = K.initial_state()
        self.counts = np.zeros(len(K.KINDS), np.int64)
        self.first = np.full(len(K.KINDS), -1, np.int64)
        self.ev: Events | None = None
        self.load(ev, bbo)

    def load(self, ev: Events, bbo: bool = False) -> None:
        """Point the book at the next batch of events (replay.stream): the book, counts and state carry
        over; event indices (status, bbo rows, gap marks) start again from 0, and `first` keeps each kind's
        index into the batch where it was first set. Resting orders keep their time priority (the index of
        their add, made relative to the new batch: negative)."""
        if self.ev is not None:
            self.ht[self.ht[:, 1] != -1, 3] -= len(self.ev)
        self.ev, n = ev, len(ev)
        self.status = np.zeros(n, np.uint8)
        self.bbo = np.empty((5, n // 2 + 16 if bbo else 0), np.int64)
        self.pos = 0
        gap = self.st[K.ST_GAP] > self.st[K.ST_SNAP]
        self.st[K.ST_GAP], self.st[K.ST_SNAP] = (-1, -2) if gap else (-2, -1)
        self.st[K.ST_NBBO] = self.st[K.ST_GPTR] = 0

    def run(self, stop: int, samples: np.ndarray | None = None, nlev: int = 0) -> tuple[np.ndarray, ...]:
        """Apply events up to index stop, recording the top nlev levels after each sorted sample position."""
        e = self.ev
        samples = np.zeros(0, np.int64) if samples is None else samples.astype(np.int64)
        dp = np.empty((len(samples), 2, nlev), np.int64)
        da, dc = np.empty_like(dp), np.empty_like(dp)
        self.st[K.ST_SPTR] = 0
        while True:
            self.pos = K.l3_run(e.act, e.side, e.oid, e.pidx, e.lo, e.amt, e.gpos, self.pos, stop, self.ht,
                                self.shift, self.lv, self.st, self.counts, self.first, self.status,
                                self.bbo, samples, dp, da, dc)
            if self.pos >= stop:
                return dp, da, dc
            if self.bbo.shape[1] and self.st[K.ST_NBBO] >= self.bbo.shape[1]:
                self.bbo = np.concatenate([self.bbo, np.empty_like(self.bbo)], axis=1)
            else:
                self.ht, self.shift = K.grow(self.ht, self.shift)

    @property
    def observed(self) -> np.ndarray:
        return (self.status & 2).astype(bool)

    @property
    def gap(self) -> np.ndarray:
        return (self.status & 1).astype(bool)

    def bbo_rows(self) -> np.ndarray:
        """(5, changes) rows: event index, bid level, bid amount, ask level, ask amount."""
        return self.bbo[:, :self.st[K.ST_NBBO]]

    def book(self) -> Book:
        """The current book: live orders, bids best first then asks best first, time priority within a price."""
        e = self.ev
        ht = self.ht[self.ht[:, 1] != -1]
        side, p = (ht[:, 1] & 1).astype(np.int8), ht[:, 1] >> 1
        ht, side, p = (x[np.lexsort((ht[:, 3], np.where(side == 0, -p, p), side))] for x in (ht, side, p))
        last = self.pos - 1
        return Book(True, int(e.seq[last]) if last >= 0 else -1, int(e.ts_recv[last]) if last >= 0 else 0,
                    bool(self.status[last] & 1) if last >= 0 else True, side, e.ticks[p], ht[:, 2].copy(),
                    e.price_scale, e.amount_scale, order_id=ht[:, 0].copy())

    def anomalies(self) -> tuple[dict[str, int], dict[str, int]]:
        """Counts per anomaly kind (every kind listed) and the seq of each kind's first occurrence."""
        counts = {k: int(c) for k, c in zip(K.KINDS, self.counts)}
        first = {k: int(self.ev.seq[f]) for k, f in zip(K.KINDS, self.first) if f >= 0}
        return counts, first


def replay_events(tab: pa.Table | Events, hour: int | None = None, *, sessions: pa.Table | None = None,
                  bbo: bool = False, depth: Depth | None = None, at: int | None = None,
                  grouped: pa.Table | None = None, window: int = 2 * 10**9,
                  depth_sink: Callable[[pa.Table], None] | None = None) -> HourResult:
    """Replay one hour of seq-ordered book_events rows or their Events (up to ts_recv <= at when given).

    grouped: rest_grouped rows to verify (see _Grouped); depth_sink receives depth in parts, not res.depth."""
    ev = tab if isinstance(tab, Events) else Events.from_table(tab, sessions)
    n = len(ev)
    hour = int(ev.ts_recv[0] - ev.ts_recv[0] % source.HOUR_NS) if hour is None and n else (hour or 0)
    res = HourResult(hour, "l3", rows=n)
    stop = n if at is None or not n else int(np.searchsorted(np.maximum.accumulate(ev.ts_recv), at, "right"))
    nlev = depth.levels if depth is not None else 0
    if stop == 0:
        if nlev and depth_sink is None:
            res.depth = DEPTH.schema.empty_table()
        return res
    rp = L3Replay(ev, bbo)
    samples, times = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if nlev:
        if depth.every is None:
            samples = np.nonzero(_observed(ev.act))[0]
            times = ev.ts_recv[samples]
        else:
            times, samples = _samples(ev.ts_recv, hour, depth)
    chk = None
    if grouped is not None and grouped.num_rows:
        chk = _Grouped(grouped, window)
        chk.count(ev.seq, np.maximum.accumulate(ev.ts_recv))
        chk.locate()
        owner, cpos = chk.candidates(0, n)
    nlev_v = max(nlev, chk.nlev if chk else 0)
    ns = len(samples)
    allpos = samples if chk is None else np.concatenate([samples, cpos])
    order = np.argsort(allpos, kind="stable")
    parts = []
    for c in range(0, len(order), SAMPLE_CHUNK):
        idx = order[c:c + SAMPLE_CHUNK]
        pos = allpos[idx]
        dp, da, dc = rp.run(min(stop, int(pos[-1]) + 1), pos, nlev_v)
        g = idx >= ns
        if g.any():
            c = idx[g] - ns
            chk.update(owner[c], cpos[c], dp[g], da[g], ev, rp.gap)
        k = ~g & (pos < stop)
        if k.any():
            part = _depth_part(ev, rp, times[idx[k]], pos[k], dp[k, :, :nlev], da[k, :, :nlev], dc[k, :, :nlev])
            parts.append(part) if depth_sink is None else depth_sink(part)
    rp.run(stop)
    if nlev and depth_sink is None:
        res.depth = pa.concat_tables(parts) if parts else DEPTH.schema.empty_table()
    res.anomalies, res.first = rp.anomalies()
    res.book = rp.book()
    res.digest = res.book.digest()
    if at is not None:
        res.book.gap |= bool(_late_gap(ev.sess_ts, ev.sess_seq, np.array([at]), np.array([res.book.seq]))[0])
    if bbo:
        tk = ev.ticks
        ch, bp, ba, ap, aa = rp.bbo_rows()
        res.bbo = _bbo_table(ev.ts_event[ch], ev.ts_recv[ch], ev.seq[ch], np.where(bp >= 0, tk[bp], -1), ba,
                             np.where(ap >= 0, tk[ap], -1), aa, rp.gap[ch], ev.price_scale, ev.amount_scale)
    if chk is not None:
        res.mismatches, res.checked, res.skipped = chk.report(ev.sess_ts, ev.sess_seq)
    return res


def _depth_part(ev: Events, rp: L3Replay, times, pos, dp, da, dc) -> pa.Table:
    """depth rows for samples at event positions pos (levels as indices into ev.ticks)."""
    g = rp.gap[pos] | _late_gap(ev.sess_ts, ev.sess_seq, times, ev.seq[pos])
    return _depth_table(times, ev.seq[pos], g, np.where(dp >= 0, ev.ticks[dp], -1), da, dc, ev.price_scale,
                        ev.amount_scale)


class _Grouped:
    """Grouped REST snapshots to verify. REST and socket race each other, so a snapshot passes when the
    replayed top levels equal it at some event position with ts_recv within `window` of its own.

    Positions are the hour's event indices, found from counts that add up batch by batch (`count` once over
    the whole hour, or over each streamed batch, then `locate`); `update` takes the book at candidate
    positions of whichever batch holds them, at that batch's scales."""

    #: Most positions tried on each side of a snapshot's capture position.
    REACH = 4096

    def __init__(self, grouped: pa.Table, window: int):
        sid = grouped.column("snapshot_id").to_numpy()
        side = grouped.column("side").to_pylist()
        lev = grouped.column("level").to_numpy()
        price, amount = grouped.column("price").to_pylist(), grouped.column("amount").to_pylist()
        t = grouped.column("ts_recv").cast(pa.int64()).to_numpy()
        snaps: dict[int, dict[str, list]] = {}
        when: dict[int, int] = {}
        for i in np.lexsort((lev, sid)):
            levels = snaps.setdefault(int(sid[i]), {"bid": [], "ask": []})
            when.setdefault(int(sid[i]), int(t[i]))
            if side[i] in levels:
                levels[side[i]].append((price[i], amount[i]))
        self.ids, self.window = sorted(snaps), window
        self.levels = [snaps[i] for i in self.ids]
        n = len(self.ids)
        self.nlev = max((len(v) for s in self.levels for v in s.values()), default=0)
        self.sids = np.array(self.ids, np.int64)
        self.when = np.array([when[i] for i in self.ids], np.int64)
        self.depth = np.array([[len(lv[name]) for name in SIDES] for lv in self.levels], np.int64).reshape(n, 2)
        # events so far with seq < id, with running-max ts_recv < when - window, and <= when + window
        self.below, self.early, self.late = (np.zeros(n, np.int64) for _ in range(3))
        self.wanted: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.matched = np.zeros(n, bool)
        # the replayed levels at each capture position, the scales they are at, and that position's gap and seq
        self.cp = np.full((n, 2, self.nlev), -1, np.int64)
        self.ca = np.zeros((n, 2, self.nlev), np.int64)
        self.cap_scale = np.zeros((n, 2), np.int64)
        self.cap_gap = np.zeros(n, bool)
        self.cap_seq = np.zeros(n, np.int64)

    def count(self, seq: np.ndarray, run: np.ndarray) -> None:
        """Add the next events (seq, running-max ts_recv of the hour so far) to the position counts."""
        self.below += np.searchsorted(seq, self.sids, "left")
        self.early += np.searchsorted(run, self.when - self.window, "left")
        self.late += np.searchsorted(run, self.when + self.window, "right")

    def locate(self) -> None:
        """Capture position (last event before the snapshot's seq) and first and last candidate positions of
        every snapshot, from the counts over the whole hour."""
        self.cap = cap = self.below - 1
        lo = np.minimum(np.maximum(self.early - 1, cap - self.REACH), cap)
        hi = np.maximum(np.minimum(self.late - 1, cap + self.REACH), cap)
        self.lo, self.hi = np.maximum(lo, 0), np.maximum(hi, 0)

    def candidates(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(snapshot index, position) of every candidate position in [start, stop), by snapshot then position."""
        lo, hi = np.maximum(self.lo, start), np.minimum(self.hi, stop - 1)
        j = np.nonzero(lo <= hi)[0]
        size = hi[j] - lo[j] + 1
        owner = np.repeat(j, size)
        return owner, np.repeat(lo[j] - np.cumsum(size) + size, size) + np.arange(len(owner))

    def _wanted(self, pk: int, ak: int) -> tuple[np.ndarray, np.ndarray]:
        """Wanted levels as ticks/lots at scales pk, ak (-2: not representable, never matches), per scale pair."""
        if (pk, ak) not in self.wanted:
            n = len(self.ids)
            wp, wa = np.full((n, 2, self.nlev), -1, np.int64), np.zeros((n, 2, self.nlev), np.int64)
            for j, levels in enumerate(self.levels):
                for s, name in enumerate(SIDES):
                    for k, (p, a) in enumerate(levels[name]):
                        wp[j, s, k], wa[j, s, k] = _units(p, pk), _units(a, ak)
            self.wanted[pk, ak] = wp, wa
        return self.wanted[pk, ak]

    def update(self, o: np.ndarray, pos: np.ndarray, dp: np.ndarray, da: np.ndarray, ev: Events, gap: np.ndarray,
               offset: int = 0) -> None:
        """Record replayed top levels at candidates (snapshot o, position pos) in ev, whose first event is the
        hour's event `offset` (gap: ev's gap marks), vectorised."""
        loc = pos - offset
        wp, wa = self._wanted(ev.price_scale, ev.amount_scale)
        dp, da = dp[:, :, :self.nlev], da[:, :, :self.nlev]
        ticks = np.where(dp >= 0, ev.ticks[dp], -1)
        used = np.arange(self.nlev)[None, None, :] < self.depth[o][:, :, None]
        same = ((ticks == wp[o]) & (da == wa[o])) | ~used
        np.logical_or.at(self.matched, o, same.all(axis=(1, 2)) & ~gap[loc])
        at = pos == self.cap[o]
        oa, la = o[at], loc[at]
        self.cp[oa], self.ca[oa] = ticks[at], da[at]
        self.cap_scale[oa] = (ev.price_scale, ev.amount_scale)
        self.cap_gap[oa], self.cap_seq[oa] = gap[la], ev.seq[la]

    def report(self, sess_ts: np.ndarray, sess_seq: np.ndarray) -> tuple[list[str], int, int]:
        """(mismatches, snapshots checked, snapshots skipped), given the gap-kind sessions rows (sorted by ts).
        Only a snapshot taken while the replayed book is known exact is checked: not one before the hour's
        first event or inside a gap, nor one with a gap-kind row (a restart, a disconnect) after its capture
        position and at most a window after it, since the stream it races may have lost what it shows."""
        late = _late_gap(sess_ts, sess_seq, self.when + self.window, self.cap_seq)
        unknown = (self.cap < 0) | self.cap_gap | late
        out, checked = [], 0
        for j, sid in enumerate(self.ids):
            if unknown[j]:
                continue
            checked += 1
            if self.matched[j]:
                continue
            pk, ak = (int(x) for x in self.cap_scale[j])
            wp, wa = self._wanted(pk, ak)
            for s, name in enumerate(SIDES):
                d = self.depth[j, s]
                k = first_difference(list(zip(wp[j, s, :d].tolist(), wa[j, s, :d].tolist())),
                                     list(zip(self.cp[j, s, :d].tolist(), self.ca[j, s, :d].tolist())))
                if k is not None:
                    w = self.levels[j][name][k]
                    got = "nothing" if self.cp[j, s, k] < 0 else \
                        f"{text(self.cp[j, s, k], pk)} x {text(self.ca[j, s, k], ak)}"
                    out.append(f"snapshot {sid} {name} level {k}: recorded {w[0]} x {w[1]}, replayed {got} "
                               "(and no match within the window)")
                    break
        return out, checked, int(unknown.sum())


def _units(v: Decimal, k: int) -> int:
    """v * 10**k when integral, else -2 (a value the replayed book cannot hold at this scale)."""
    x = v.scaleb(k)
    return int(x) if x == x.to_integral_value() else -2


# ---------------------------------------------------------------- L2


#: L2 sources in order of preference: venue pushes (exact or rounded by the venue), else REST books.
L2_SOURCES = (("ws", "ws_rounded"), ("rest",))


def l2_source(tab: pa.Table) -> pa.Table:
    """The L2 book rows of an hour: `ws`/`ws_rounded` pushes when there are any, else `rest` books."""
    src = tab.column("source")
    for group in L2_SOURCES:
        m = pc.is_in(src, value_set=pa.array(group))
        if pc.any(m).as_py():
            return tab.filter(m)
    return tab.schema.empty_table()


@dataclass
class Snapshots:
    """L2 snapshots of one hour: rows sorted by (snapshot, side, level) with per-snapshot offsets."""

    sid: np.ndarray
    ts_event: np.ndarray
    ts_recv: np.ndarray
    start: np.ndarray
    side: np.ndarray
    level: np.ndarray
    price: np.ndarray
    amount: np.ndarray
    count: np.ndarray
    price_scale: int
    amount_scale: int

    @classmethod
    def from_table(cls, tab: pa.Table) -> "Snapshots":
        """Group book_levels rows by snapshot_id (vectorised)."""
        sid = tab.column("snapshot_id").to_numpy()
        side = pc.fill_null(pc.index_in(tab.column("side"), value_set=pa.array(SIDES)), -1).to_numpy().astype(np.int8)
        lev = tab.column("level").to_numpy()
        o = np.lexsort((lev, side, sid))
        tab, sid, side, lev = tab.take(o), sid[o], side[o], lev[o]
        price, _, pk = exact_ints(tab.column("price"))
        amount, _, ak = exact_ints(tab.column("amount"))
        count = pc.fill_null(tab.column("count"), -1).to_numpy().astype(np.int64)
        start = np.nonzero(_changed(sid))[0]
        return cls(sid[start], pc.fill_null(tab.column("ts_event").cast(pa.int64()), 0).to_numpy()[start],
                   tab.column("ts_recv").cast(pa.int64()).to_numpy()[start], start, side, lev, price, amount,
                   count, pk, ak)

    def __len__(self) -> int:
        return len(self.sid)

    def row_snapshot(self) -> np.ndarray:
        """Snapshot index of every row."""
        return np.repeat(np.arange(len(self.sid)), np.diff(np.append(self.start, len(self.side))))

    def top(self, snaps: np.ndarray, nlev: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(price, amount, count) arrays (len(snaps), 2, nlev) of the given snapshots; price -1 = no level."""
        shape = (len(snaps), 2, nlev)
        p, a, c = np.full(shape, -1, np.int64), np.zeros(shape, np.int64), np.full(shape, -1, np.int64)
        size = np.diff(np.append(self.start, len(self.side)))[snaps]
        j = np.repeat(np.arange(len(snaps)), size)
        r = np.repeat(self.start[snaps] - np.cumsum(size) + size, size) + np.arange(len(j))
        m = (self.level[r] < nlev) & (self.level[r] >= 0) & (self.side[r] >= 0)
        j, r = j[m], r[m]
        p[j, self.side[r], self.level[r]] = self.price[r]
        a[j, self.side[r], self.level[r]] = self.amount[r]
        c[j, self.side[r], self.level[r]] = self.count[r]
        return p, a, c

    def book(self, j: int, gap: bool = False) -> Book:
        """The book of snapshot j (levels as recorded)."""
        lo, hi = self.start[j], self.start[j + 1] if j + 1 < len(self.start) else len(self.side)
        o = lo + np.lexsort((self.level[lo:hi], self.side[lo:hi]))
        return Book(False, int(self.sid[j]), int(self.ts_recv[j]), gap, self.side[o], self.price[o],
                    self.amount[o], self.price_scale, self.amount_scale, count=self.count[o])


def l2_changes(sn: Snapshots) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Level changes between consecutive snapshots: (snapshot index, side, price, old, new amount; 0 = absent)."""
    rs = sn.row_snapshot()
    prev = rs + 1 < len(sn)
    snap = np.concatenate([rs, rs[prev] + 1])
    side = np.concatenate([sn.side, sn.side[prev]])
    price = np.concatenate([sn.price, sn.price[prev]])
    amt = np.concatenate([sn.amount, sn.amount[prev]])
    cur = np.concatenate([np.ones(len(rs), bool), np.zeros(int(prev.sum()), bool)])
    keep = snap > 0
    snap, side, price, amt, cur = snap[keep], side[keep], price[keep], amt[keep], cur[keep]
    o = np.lexsort((cur, price, side, snap))
    snap, side, price, amt, cur = snap[o], side[o], price[o], amt[o], cur[o]
    pair = np.zeros(len(snap), bool)
    pair[:-1] = (snap[1:] == snap[:-1]) & (side[1:] == side[:-1]) & (price[1:] == price[:-1])
    old = np.where(cur, 0, amt)
    new = np.where(cur, amt, 0)
    new[:-1] = np.where(pair[:-1], amt[1:], new[:-1])
    lead = ~np.concatenate([[False], pair[:-1]])
    m = lead & (old != new)
    return snap[m], side[m], price[m], old[m], new[m]


def _l2_checks(sn: Snapshots) -> list[str]:
    """Consistency of each snapshot (contiguous levels, strictly ordered prices, positive amounts, not
    crossed) and of consecutive snapshots (venue time never goes back)."""
    out = []
    rs = sn.row_snapshot()
    grp = _changed(rs, sn.side)
    gstart = np.maximum.accumulate(np.where(grp, np.arange(len(rs)), 0))
    bad_level = sn.level != np.arange(len(rs)) - gstart
    step = np.zeros(len(rs), bool)
    step[1:] = ~grp[1:] & np.where(sn.side[1:] == 0, sn.price[1:] >= sn.price[:-1], sn.price[1:] <= sn.price[:-1])
    for name, bad in (("levels not contiguous from 0", bad_level), ("prices not strictly ordered", step),
                      ("amount not positive", sn.amount <= 0), ("side not bid/ask", sn.side < 0)):
        for j in np.unique(rs[bad]):
            out.append(f"snapshot {sn.sid[j]}: {name}")
    top = sn.top(np.arange(len(sn)), 1)[0][:, :, 0]
    for j in np.nonzero((top[:, 0] >= 0) & (top[:, 1] >= 0) & (top[:, 0] >= top[:, 1]))[0]:
        out.append(f"snapshot {sn.sid[j]}: crossed (bid {text(top[j, 0], sn.price_scale)} >= ask "
                   f"{text(top[j, 1], sn.price_scale)})")
    back = np.nonzero(sn.ts_event[1:] < sn.ts_event[:-1])[0] + 1
    out += [f"snapshot {sn.sid[j]}: ts_event goes back from snapshot {sn.sid[j - 1]}" for j in back]
    return out


def _decimals(amounts: list[Decimal]) -> int:
    """Most decimal places among amounts (the precision a rounded book was rounded to, at least)."""
    return max((-a.normalize().as_tuple().exponent for a in amounts if a), default=0)


def _agrees(got: dict, want: dict, rounded: bool) -> str | None:
    """None when a socket book agrees with a REST book on their common depth (prices exact; amounts exact, or
    for a rounded book within one unit of its precision), else where it first differs."""
    unit = Decimal(1).scaleb(-_decimals([a for side in got.values() for _, a, _ in side])) if rounded else Decimal(0)
    for side in SIDES:
        for i, ((gp, ga, _), (wp, wa, _)) in enumerate(zip(got[side], want[side])):
            if gp != wp or abs(ga - wa) > unit:
                return f"{side} level {i}: socket {ga} @ {gp} vs rest {wa} @ {wp}"
    return None


def _rest_checks(sn: Snapshots, rounded: np.ndarray, rest: Snapshots, window: int) -> tuple[list[str], int]:
    """Each exact REST book against the socket book it must have seen, where that is known: the last socket book
    before it and the first after it (both within `window`) agree, so the book was stable across it (the venue
    pushes on every change, and repeats an unchanged book). There the REST book must agree too (_agrees:
    rounding by the venue passes, a wrong level does not). Returns (mismatches, REST books checked).
    A loop over REST books: few per hour, each compared with two socket books."""
    out, checked = [], 0
    order = np.argsort(sn.ts_recv, kind="stable")
    ts = sn.ts_recv[order]
    for r in range(len(rest)):
        t = rest.ts_recv[r]
        k = int(np.searchsorted(ts, t, "right"))
        if k == 0 or k == len(ts) or t - ts[k - 1] > window or ts[k] - t > window:
            continue
        j0, j1 = int(order[k - 1]), int(order[k])
        before = sn.book(j0).levels()
        if _agrees(sn.book(j1).levels(), before, bool(rounded[j0] or rounded[j1])) is not None:
            continue  # the book changed around the REST book: which state it saw is unknown
        checked += 1
        diff = _agrees(before, rest.book(r).levels(), bool(rounded[j0]))
        if diff is not None:
            out.append(f"rest snapshot {rest.sid[r]}: disagrees with the socket book {sn.sid[j0]}, unchanged until "
                       f"{sn.sid[j1]} after it ({diff})")
    return out, checked


def replay_levels(tab: pa.Table, hour: int | None = None, *, gap_sessions: pa.Table | None = None,
                  bbo: bool = False, depth: Depth | None = None, at: int | None = None,
                  verify: bool = False, window: int = 2 * 10**9) -> HourResult:
    """Replay one hour of L2 snapshots (book_levels rows of one source) up to ts_recv <= at when given; verify
    checks each snapshot's consistency and, when the socket is replayed, the socket against the REST books."""
    rest_tab = tab.filter(pc.equal(tab.column("source"), "rest")) if verify else None
    tab = l2_source(tab)
    res = HourResult(hour or 0, "l2", rows=tab.num_rows)
    if tab.num_rows == 0:
        return res
    sn = Snapshots.from_table(tab)
    if hour is None:
        res.hour = hour = int(sn.ts_recv[0] - sn.ts_recv[0] % source.HOUR_NS)
    run_ts = np.maximum.accumulate(sn.ts_recv)
    last = len(sn) - 1 if at is None else int(np.searchsorted(run_ts, at, "right")) - 1
    if last < 0:
        return res
    sts, sseq = (np.zeros(0, np.int64),) * 2 if gap_sessions is None else \
        (gap_sessions.column("ts").cast(pa.int64()).to_numpy(), gap_sessions.column("seq").to_numpy())
    o = np.argsort(sts, kind="stable")
    sts, sseq = sts[o], sseq[o]
    res.book = sn.book(last)
    res.digest = res.book.digest()
    if at is not None:
        res.book.gap = bool(_late_gap(sts, sseq, np.array([at]), sn.sid[last:last + 1])[0])
    if verify:
        res.mismatches, res.checked = _l2_checks(sn), len(sn)
        res.changes = len(l2_changes(sn)[0])
        if rest_tab.num_rows and pc.any(pc.not_equal(tab.column("source"), "rest")).as_py():
            src = dict(zip(tab.column("snapshot_id").to_pylist(), tab.column("source").to_pylist()))
            rounded = np.array([src[int(i)] == "ws_rounded" for i in sn.sid], bool)
            bad, checked = _rest_checks(sn, rounded, Snapshots.from_table(rest_tab), window)
            res.mismatches += bad
            res.checked += checked
    n = last + 1
    if bbo:
        p, a, _ = sn.top(np.arange(n), 1)
        ch = np.nonzero(_changed(p[:, 0, 0], a[:, 0, 0], p[:, 1, 0], a[:, 1, 0]))[0]
        res.bbo = _bbo_table(sn.ts_event[ch], sn.ts_recv[ch], sn.sid[ch], p[ch, 0, 0], a[ch, 0, 0], p[ch, 1, 0],
                             a[ch, 1, 0], np.zeros(len(ch), bool), sn.price_scale, sn.amount_scale)
    if depth is not None and depth.levels > 0:
        if depth.every is None:
            snaps, times = np.arange(n), sn.ts_recv[:n]
        else:
            times, snaps = _samples(sn.ts_recv, hour, depth)
            keep = (snaps >= 0) & (snaps < n)
            times, snaps = times[keep], snaps[keep]
        gap = _late_gap(sts, sseq, times, sn.sid[snaps])
        p, a, c = sn.top(snaps, depth.levels)
        res.depth = _depth_table(times, sn.sid[snaps], gap, p, a, c, sn.price_scale, sn.amount_scale)
    return res


# ---------------------------------------------------------------- from the dataset


def kind(root, exchange: str, pair: str) -> str:
    """'l3' when the pair has book_events, else 'l2' (book_levels snapshots)."""
    return "l3" if source.dates(root, "book_events", exchange, pair) else "l2"


def grouped_rows(root, exchange: str, pair: str, hour: int) -> pa.Table:
    """The hour's recorded grouped REST snapshots (book_levels rows of source rest_grouped) that L3 verify checks."""
    lv = source.hour_levels(root, exchange, pair, hour).table
    return lv.filter(pc.equal(lv.column("source"), "rest_grouped"))


def replay_hour(root: str | os.PathLike, exchange: str, pair: str, hour: int, *, bbo: bool = False,
                depth: Depth | None = None, verify: bool = False, at: int | None = None,
                book_kind: str | None = None, window: int = 2 * 10**9,
                depth_sink: Callable[[pa.Table], None] | None = None) -> HourResult:
    """Read one hour from the dataset root and replay it alone (the unit of parallelism); window: see
    _Grouped; depth_sink, when given, receives the depth rows in parts (bounded memory), not res.depth."""
    book_kind = book_kind or kind(root, exchange, pair)
    end = hour + source.HOUR_NS
    if book_kind == "l3":
        rd = source.hour_events(root, exchange, pair, hour)
        sess = source.gap_sessions(root, exchange, pair, hour - 60 * 10**9, end) if rd.table.num_rows else None
        grouped = grouped_rows(root, exchange, pair, hour) if verify else None
        ev = Events.from_table(rd.table, sess)
        rd.table = None  # one copy of the hour at a time: the columns now live in ev
        pa.default_memory_pool().release_unused()
        res = replay_events(ev, hour, bbo=bbo, depth=depth, at=at, grouped=grouped, window=window,
                            depth_sink=depth_sink)
    else:
        rd = source.hour_levels(root, exchange, pair, hour)
        sess = source.gap_sessions(root, exchange, pair, hour - 60 * 10**9, end)
        res = replay_levels(rd.table, hour, gap_sessions=sess, bbo=bbo, depth=depth, at=at, verify=verify,
                            window=window)
        if depth_sink is not None and res.depth is not None:
            depth_sink(res.depth)
            res.depth = None
    res.hour, res.duplicates = hour, rd.duplicates
    return res


def book_at(root: str | os.PathLike, exchange: str, pair: str, ts: int) -> Book:
    """The book at instant ts (every event with ts_recv <= ts of its hour applied). Before an hour's first
    event (a quiet pair: its R + S comes with that event) it is the latest hour's final book within a day, a
    gap when a gap-kind sessions row came after that book's last event."""
    hour = ts - ts % source.HOUR_NS
    book_kind = kind(root, exchange, pair)
    book = _book_in_hour(root, exchange, pair, hour, ts, book_kind)
    if book is None:
        before = source.hours(root, "book_events" if book_kind == "l3" else "book_levels", exchange, pair,
                              hour - source.DAY_NS, hour)
        book = _book_in_hour(root, exchange, pair, before[-1], hour - 1, book_kind) if before else None
        if book is not None and source.gap_sessions(root, exchange, pair, book.ts + 1, ts + 1).num_rows:
            book.gap = True
    if book is None:
        raise ReplayError(f"no {exchange} {pair} book data at or before {iso(ts)} within a day")
    return book


def _book_in_hour(root, exchange: str, pair: str, hour: int, ts: int, book_kind: str) -> Book | None:
    """The book at ts from its hour's events alone (None before the first). An L3 hour is streamed up to ts when
    replay.stream can plan it; replay_hour(at=ts) is its whole-hour test oracle."""
    from replay import stream  # built on this module

    groups = stream.plan(root, exchange, pair, hour) if book_kind == "l3" else None
    res = replay_hour(root, exchange, pair, hour, at=ts, book_kind=book_kind) if groups is None else \
        stream.replay_hour(root, exchange, pair, hour, groups, at=ts)
    return res.book
