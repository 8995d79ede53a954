"""Compiled twin of one pair's L3 book and message memory, for the L3 feed's batch fast path.

`L3Join` keeps its book as an `L3Book` of Python objects; in steady state it hands the book to a
`FastBook` (`L3Join.go_fast`) and takes it back (`L3Join._slow`) whenever a message needs the Python
path (joining, checking, an hour's first message, a frame the scanner refused). Both apply the same
rules (`L3Book.apply`, `L3Join.on_message`'s duplicate keys); tests/test_fastbook.py holds them equal.

Amounts and prices are exact: value * 10**18 split as (hi, lo), 0 <= lo < 10**18, the store's
decimal(38, 18) domain. Events are applied one after another, so the kernel is a sequential loop.
"""
from __future__ import annotations

from decimal import Decimal

import numpy as np
from numba import njit, types
from numba.typed import Dict

from recorder.rows import BookEvent

from .book import L3Book, Order, dec_str
from .dedup import Recent

#: Anomaly kinds in the kernel's counter order (L3Book.anomalies keys).
ANOMALIES = ("duplicate_add", "fill_unknown", "overfill", "cancel_unknown")
_A, _F, _C = ord("A"), ord("F"), ord("C")
_ACTION_CODE = {"A": _A, "F": _F, "C": _C, "P": ord("P"), "R": ord("R"), "S": ord("S")}
_SIDES = ("bid", "ask")
_KEY = types.UniTuple(types.int64, 7)


class Unrepresentable(ValueError):
    """A book value outside the fast book's exact domain: the pair stays on the Python path."""


def split(text: str | None) -> tuple[int, int]:
    """Plain non-negative decimal text to (hi, lo) = value * 10**18 split; Unrepresentable otherwise."""
    if text is None:
        raise Unrepresentable("no value")
    ip, _, fp = text.partition(".")
    if not ip.isdigit() or (fp and not fp.isdigit()) or len(fp) > 18 or not text.isascii():
        raise Unrepresentable(text)
    hi = int(ip)
    if hi >= 2**63:
        raise Unrepresentable(text)
    return hi, int(fp.ljust(18, "0")) if fp else 0


def join_text(hi: int, lo: int) -> str:
    """(hi, lo) back to plain decimal text (the value `split` read)."""
    if lo == 0:
        return str(hi)
    return f"{hi}.{lo:018d}".rstrip("0")


@njit(cache=True)
def _new_state():
    index = Dict.empty(types.int64, types.int64)
    seen = Dict.empty(_KEY, types.int64)
    return index, seen


@njit(cache=True)
def _place(index, free, nfree, side, price_hi, price_lo, amt_hi, amt_lo, ts, oid, s, ph, pl, ah, al, t):
    """Put one order in its slot (reused when the id rests already); returns the new free count."""
    if oid in index:
        slot = index[oid]
    else:
        nfree -= 1
        slot = free[nfree]
        index[oid] = slot
    side[slot] = s
    price_hi[slot] = ph
    price_lo[slot] = pl
    amt_hi[slot] = ah
    amt_lo[slot] = al
    ts[slot] = t
    return nfree


@njit(cache=True)
def _apply(index, seen, ring, ring_pos, ring_cap, free, nfree, side, price_hi, price_lo, amt_hi, amt_lo, ts,
           anomalies, keep, frames, ev_off, ev_ts, action, ev_side, order_id, trade_id, e_ph, e_pl, e_ah, e_al):
    """The given frames of a scan: drop repeated messages (keep[f] = 0), apply the others' events in order.

    Sequential by nature (each event depends on the book the previous ones left). Returns
    (ring_pos, nfree, duplicates); the resting orders are the slots not free.
    """
    dups = 0
    for f in frames:
        e0, e1 = ev_off[f], ev_off[f + 1]
        if e1 > e0:
            last = e1 - 1
            key = (np.int64(action[e0]), order_id[e0], trade_id[e0], np.int64(action[last]), order_id[last],
                   trade_id[last], np.int64(e1 - e0))
            if key in seen:
                keep[f] = 0
                dups += 1
                continue
            if len(seen) >= ring_cap:
                old = ring[ring_pos]
                del seen[(old[0], old[1], old[2], old[3], old[4], old[5], old[6])]
            seen[key] = 1
            for j in range(7):
                ring[ring_pos, j] = key[j]
            ring_pos = (ring_pos + 1) % ring_cap
        keep[f] = 1
        for e in range(e0, e1):
            a = action[e]
            oid = order_id[e]
            if a == _A:
                if oid in index:
                    anomalies[0] += 1
                nfree = _place(index, free, nfree, side, price_hi, price_lo, amt_hi, amt_lo, ts, oid,
                               ev_side[e], e_ph[e], e_pl[e], e_ah[e], e_al[e], ev_ts[e])
            elif a == _F:
                if oid not in index:
                    anomalies[1] += 1
                    continue
                slot = index[oid]
                hi = amt_hi[slot] - e_ah[e]
                lo = amt_lo[slot] - e_al[e]
                if lo < 0:
                    lo += 1_000_000_000_000_000_000
                    hi -= 1
                amt_hi[slot] = hi
                amt_lo[slot] = lo
                if hi < 0:
                    anomalies[2] += 1
                if hi < 0 or (hi == 0 and lo == 0):
                    del index[oid]
                    free[nfree] = slot
                    nfree += 1
            elif a == _C:
                if oid not in index:
                    anomalies[3] += 1
                    continue
                slot = index.pop(oid)
                free[nfree] = slot
                nfree += 1
    return ring_pos, nfree, dups


@njit(cache=True)
def _dump(index):
    """(order ids, slots) of the resting orders."""
    n = len(index)
    oids = np.empty(n, np.int64)
    slots = np.empty(n, np.int64)
    i = 0
    for k, v in index.items():
        oids[i] = k
        slots[i] = v
        i += 1
    return oids, slots


@njit(cache=True)
def _load(index, oids, seen, ring):
    """Index slots 0..n-1 by order id, and remember the ring's keys."""
    for i in range(len(oids)):
        index[oids[i]] = i
    for r in range(len(ring)):
        k = ring[r]
        seen[(k[0], k[1], k[2], k[3], k[4], k[5], k[6])] = 1


class FastBook:
    """One pair's resting orders and recent message keys, in numba structures."""

    def __init__(self, book: L3Book, seen: Recent) -> None:
        orders = list(book.orders.items())
        n = len(orders)
        cap = max(1024, 2 * n)
        self.side = np.zeros(cap, np.int8)
        self.price_hi = np.zeros(cap, np.int64)
        self.price_lo = np.zeros(cap, np.int64)
        self.amt_hi = np.zeros(cap, np.int64)
        self.amt_lo = np.zeros(cap, np.int64)
        self.ts = np.zeros(cap, np.int64)
        for i, (_, o) in enumerate(orders):
            if o.side not in _SIDES or o.ts_event is None:
                raise Unrepresentable(f"order side {o.side!r} / time {o.ts_event!r}")
            self.side[i] = _SIDES.index(o.side)
            self.price_hi[i], self.price_lo[i] = split(o.price)
            self.amt_hi[i], self.amt_lo[i] = split(dec_str(o.amount))
            self.ts[i] = o.ts_event
        self.free = np.empty(cap, np.int64)  # a stack of free slots (room for all: every order may leave)
        self.free[:cap - n] = np.arange(cap - 1, n - 1, -1)  # popped from the end: slot n first
        self.nfree = cap - n
        self.ring_cap = seen.capacity
        keys = [_code_key(k) for k in seen]
        self.ring = np.zeros((self.ring_cap, 7), np.int64)
        if keys:
            self.ring[:len(keys)] = keys
        self.ring_pos = len(keys) % self.ring_cap
        self.index, self.seen = _new_state()
        _load(self.index, np.array([oid for oid, _ in orders], np.int64), self.seen, self.ring[:len(keys)])
        self.anomalies = np.zeros(len(ANOMALIES), np.int64)
        self.carried = dict(book.anomalies)  # counted before the hand-over

    def __len__(self) -> int:
        return len(self.side) - self.nfree  # not len(self.index): a typed Dict's len from Python compiles a helper

    def _reserve(self, adds: int) -> None:
        if self.nfree >= adds:
            return
        old = len(self.side)
        new = max(2 * old, old + adds)
        for name in ("side", "price_hi", "price_lo", "amt_hi", "amt_lo", "ts"):
            a = getattr(self, name)
            b = np.zeros(new, a.dtype)
            b[:old] = a
            setattr(self, name, b)
        free = np.empty(new, np.int64)
        free[:self.nfree] = self.free[:self.nfree]
        free[self.nfree:self.nfree + new - old] = np.arange(new - 1, old - 1, -1)
        self.free, self.nfree = free, self.nfree + new - old

    def apply(self, scan, frames: np.ndarray, ev_ts: np.ndarray, keep: np.ndarray) -> int:
        """The given frames (in order) of a scan (recorder.venues.btcalpha_scan.Scan), ev_ts each event's time;
        sets keep[f]; returns how many were duplicates."""
        self._reserve(int(np.count_nonzero(scan.action == _A)))
        self.ring_pos, self.nfree, dups = _apply(
            self.index, self.seen, self.ring, self.ring_pos, self.ring_cap, self.free, self.nfree, self.side,
            self.price_hi, self.price_lo, self.amt_hi, self.amt_lo, self.ts, self.anomalies, keep, frames,
            scan.ev_off, ev_ts, scan.action, scan.side, scan.order_id, scan.trade_id, scan.price_hi, scan.price_lo,
            scan.amount_hi, scan.amount_lo)
        return dups

    def to_book(self) -> L3Book:
        """The resting orders as an L3Book (anomaly counts carried over)."""
        oids, slots = _dump(self.index)
        order = np.argsort(oids, kind="stable")
        b = L3Book(anomalies=self.anomaly_counts())
        for oid, s in zip(oids[order].tolist(), slots[order].tolist()):
            b.orders[oid] = Order(_SIDES[self.side[s]], join_text(int(self.price_hi[s]), int(self.price_lo[s])),
                                  Decimal(join_text(int(self.amt_hi[s]), int(self.amt_lo[s]))), int(self.ts[s]))
        return b

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (as L3Book.crossed)."""
        _, slots = _dump(self.index)
        side, hi, lo = self.side[slots], self.price_hi[slots], self.price_lo[slots]
        bids, asks = np.flatnonzero(side == 0), np.flatnonzero(side == 1)
        if not len(bids) or not len(asks):
            return False
        b = bids[np.lexsort((lo[bids], hi[bids]))[-1]]  # highest bid
        a = asks[np.lexsort((lo[asks], hi[asks]))[0]]  # lowest ask
        return (int(hi[b]), int(lo[b])) >= (int(hi[a]), int(lo[a]))

    def anomaly_counts(self) -> dict[str, int]:
        """Anomalies counted so far, by kind (as L3Book.anomalies)."""
        out = dict(self.carried)
        for kind, n in zip(ANOMALIES, self.anomalies.tolist()):
            if n:
                out[kind] = out.get(kind, 0) + n
        return out

    def recent(self) -> Recent:
        """The message memory as a Recent (oldest key first)."""
        r = Recent(self.ring_cap)
        n = len(self.seen)
        start = (self.ring_pos - n) % self.ring_cap
        for i in range(n):
            r.add(_key_of(self.ring[(start + i) % self.ring_cap].tolist()))
        return r


def _code_key(key: tuple) -> tuple[int, ...]:
    """L3Join's duplicate key (actions as letters, missing trade ids None) as 7 int64."""
    a0, o0, t0, a1, o1, t1, n = key
    return (_ACTION_CODE[a0], -1 if o0 is None else o0, -1 if t0 is None else t0, _ACTION_CODE[a1],
            -1 if o1 is None else o1, -1 if t1 is None else t1, n)


_ACTION_OF = {v: k for k, v in _ACTION_CODE.items()}


def _key_of(k: list[int]) -> tuple:
    a0, o0, t0, a1, o1, t1, n = k
    return (_ACTION_OF[a0], None if o0 < 0 else o0, None if t0 < 0 else t0, _ACTION_OF[a1],
            None if o1 < 0 else o1, None if t1 < 0 else t1, n)


def event_key(events: list[BookEvent]) -> tuple:
    """L3Join's duplicate key of a message's events (first and last event, and their count)."""
    first, last = events[0], events[-1]
    return (first.action, first.order_id, first.trade_id, last.action, last.order_id, last.trade_id, len(events))
