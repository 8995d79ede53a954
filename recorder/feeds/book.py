"""Order-level book tracking and the snapshot/stream join rule for L3 feeds (pure; no I/O).

The join (see docs/recorder.md, "Joining the L3 snapshot to the stream"): socket messages are
buffered from connect; a REST group=0 snapshot is taken; the snapshot equals the book after some
prefix messages[:k] of the stream. Messages received before the snapshot request was sent are in
that prefix (causality). Every order the buffer touches allows only the cuts after which its state is
its snapshot state; k is the smallest cut all of them allow, and messages[k:] are applied on top of it.
When the allowed cuts give different books the join is not exact and the feed takes another snapshot.
A grouped (group=1) snapshot is fitted the same way, to the book's price levels (`fit_grouped`; docs/recorder.md,
"Divergence").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

import numpy as np

from recorder.rows import BookEvent
from schemas.grouped import first_difference


def dec_str(d: Decimal) -> str:
    """Exact plain decimal string (never exponent notation)."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


@dataclass(slots=True)
class Order:
    """A resting order."""

    side: str | None
    price: str | None
    amount: Decimal
    ts_event: int | None


@dataclass
class L3Book:
    """Resting orders by id, with conservation anomalies counted instead of absorbed."""

    orders: dict[int, Order] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)

    def _anomaly(self, kind: str) -> None:
        self.anomalies[kind] = self.anomalies.get(kind, 0) + 1

    def apply(self, ev: BookEvent) -> None:
        """Apply one book event."""
        a, oid = ev.action, ev.order_id
        if a in ("A", "S"):
            if oid in self.orders and a == "A":
                self._anomaly("duplicate_add")
            self.orders[oid] = Order(ev.side, ev.price, Decimal(ev.amount), ev.ts_event)
        elif a in ("F", "P"):
            o = self.orders.get(oid)
            if o is None:
                self._anomaly("fill_unknown" if a == "F" else "reduce_unknown")
                return
            o.amount -= Decimal(ev.amount)
            if o.amount < 0:
                self._anomaly("overfill")
            if o.amount <= 0:
                del self.orders[oid]
        elif a == "C":
            if self.orders.pop(oid, None) is None:
                self._anomaly("cancel_unknown")
        elif a == "R":
            self.orders.clear()

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask: a book that cannot be the venue's."""
        bids = [Decimal(o.price) for o in self.orders.values() if o.side == "bid" and o.price is not None]
        asks = [Decimal(o.price) for o in self.orders.values() if o.side == "ask" and o.price is not None]
        return bool(bids and asks) and max(bids) >= min(asks)

    def apply_all(self, events: Iterable[BookEvent]) -> None:
        """Apply events in order."""
        for ev in events:
            self.apply(ev)

    def copy(self) -> "L3Book":
        """Independent copy of the resting orders (anomaly counts start at zero)."""
        return L3Book({k: Order(o.side, o.price, o.amount, o.ts_event) for k, o in self.orders.items()})

    def state(self) -> dict[int, tuple[str | None, Decimal, Decimal]]:
        """Comparable view: id -> (side, price, amount)."""
        return {k: (o.side, Decimal(o.price) if o.price is not None else None, o.amount)
                for k, o in self.orders.items()}

    def snapshot_events(self, ts_event: int | None = None) -> list[BookEvent]:
        """R then one S per resting order, in order-id order: the book as rows."""
        out = [BookEvent(ts_event, "R")]
        out += [BookEvent(o.ts_event, "S", o.side, oid, o.price, dec_str(o.amount))
                for oid, o in sorted(self.orders.items())]
        return out


#: A price level: (side, price).
LevelKey = tuple[str, Decimal]


def levels(book: L3Book) -> dict[LevelKey, Decimal]:
    """The book aggregated to price levels: (side, price) -> total resting amount (replay's depth, exactly)."""
    out: dict[LevelKey, Decimal] = {}
    for o in book.orders.values():
        if o.price is not None:
            key = (o.side, Decimal(o.price))
            out[key] = out.get(key, Decimal(0)) + o.amount
    return out


def add_level(agg: dict[LevelKey, Decimal], key: LevelKey, d: Decimal) -> Decimal:
    """Add d to a level's total (a level at 0 is no level); returns the new total."""
    v = agg.get(key, Decimal(0)) + d
    if v:
        agg[key] = v
    else:
        agg.pop(key, None)
    return v


def apply_levels(book: L3Book, events: Sequence[BookEvent]) -> list[tuple[LevelKey, Decimal]]:
    """Apply events as apply_all does and return how they changed the price levels' totals."""
    if any(ev.action == "R" for ev in events):
        before = levels(book)
        book.apply_all(events)
        after = levels(book)
        return [(k, after.get(k, Decimal(0)) - before.get(k, Decimal(0))) for k in before.keys() | after.keys()
                if after.get(k) != before.get(k)]
    ids = {ev.order_id for ev in events}
    was = {oid: (o.side, o.price, o.amount) for oid in ids if (o := book.orders.get(oid)) is not None}
    book.apply_all(events)
    delta: dict[LevelKey, Decimal] = {}
    for oid in ids:
        o = book.orders.get(oid)
        for sign, state in ((-1, was.get(oid)), (1, None if o is None else (o.side, o.price, o.amount))):
            if state is not None and state[1] is not None:
                key = (state[0], Decimal(state[1]))
                delta[key] = delta.get(key, Decimal(0)) + sign * state[2]
    return [(k, d) for k, d in delta.items() if d]


def best_levels(agg: Mapping[LevelKey, Decimal], side: str, n: int) -> list[tuple[Decimal, Decimal]]:
    """The n best (price, amount) levels of one side, best first."""
    prices = sorted((p for s, p in agg if s == side), reverse=side == "bid")[:n]
    return [(p, agg[(side, p)]) for p in prices]


@dataclass(frozen=True)
class GroupedFit:
    """Where a grouped snapshot fits the tracked book among the cuts of its window."""

    cuts: int  # cuts tried (the book before the window's first message, and after each one)
    fits: int  # cuts at which the snapshot's levels are the book's best levels
    cut: int | None  # the first of them, counted from the window's start (0: the book when the request went out)
    #: when none fits: (side, level, snapshot's (price, amount), book's or None) at the report cut
    diff: tuple[str, int, tuple[Decimal, Decimal], tuple[Decimal, Decimal] | None] | None

    def where(self) -> str:
        """The first difference as a sessions detail clause (empty when there is none to name)."""
        if self.diff is None:
            return ""
        side, k, (p, a), got = self.diff
        book = "nothing" if got is None else f"{dec_str(got[0])} x {dec_str(got[1])}"
        return f": {side} level {k} is {dec_str(p)} x {dec_str(a)} in the snapshot, {book} in the tracked book " \
               "when it arrived"


def fit_grouped(start: Mapping[LevelKey, Decimal], changes: Sequence[Sequence[tuple[LevelKey, Decimal]]], lo: int,
                snapshot: Mapping[str, Sequence[tuple[Decimal, Decimal]]], report: int) -> GroupedFit:
    """The cuts k in lo..len(changes) at which the snapshot (side -> levels best first) equals the best levels
    (schemas.grouped.first_difference) of the book start + changes[:k]; when none does, the first difference
    at cut `report`.

    Equality of the best levels is kept as the set of prices at or better than the snapshot's last level
    whose book total differs from the snapshot's (0 where it has none): the snapshot fits where that set is
    empty, so each level change costs O(1), not a sort."""
    agg = dict(start)
    want = {(s, p): a for s, lv in snapshot.items() for p, a in lv}
    worst = {s: lv[-1][0] for s, lv in snapshot.items() if lv}

    def covered(key: LevelKey) -> bool:
        w = worst.get(key[0])
        return w is not None and (key[1] >= w if key[0] == "bid" else key[1] <= w)

    for ch in changes[:lo]:
        for key, d in ch:
            add_level(agg, key, d)
    bad = {k for k in agg.keys() | want.keys() if covered(k) and agg.get(k, 0) != want.get(k, 0)}
    fits, cut, diff = 0, None, None
    for k in range(lo, len(changes) + 1):
        if k > lo:
            for key, d in changes[k - 1]:
                v = add_level(agg, key, d)
                if covered(key):
                    (bad.add if v != want.get(key, 0) else bad.discard)(key)
        if not bad:
            fits += 1
            cut = k - lo if cut is None else cut
        elif k == report:
            diff = _first_diff(agg, snapshot)
    return GroupedFit(len(changes) + 1 - lo, fits, cut, None if fits else diff)


def _first_diff(agg: Mapping[LevelKey, Decimal], snapshot: Mapping[str, Sequence[tuple[Decimal, Decimal]]]):
    """(side, level, snapshot's level, book's level or None) of the first side whose best levels differ."""
    for side, lv in snapshot.items():
        got = best_levels(agg, side, len(lv))
        k = first_difference(list(lv), got)
        if k is not None:
            return side, k, lv[k], got[k] if k < len(got) else None
    return None


def book_from_snapshot(events: Iterable[BookEvent]) -> L3Book:
    """L3Book holding a snapshot's S rows (R rows ignored)."""
    b = L3Book()
    for ev in events:
        if ev.action == "S":
            b.apply(ev)
    return b


@dataclass(frozen=True)
class Join:
    """Where the snapshot cuts the buffered stream and whether the evidence fixes the book."""

    cut: int  # messages[:cut] are already in the snapshot (the smallest consistent cut)
    lower: int  # smallest cut consistent with all the evidence
    upper: int  # largest cut consistent with all the evidence
    consistent: bool  # some cut explains the snapshot and every message
    exact: bool  # consistent, and every consistent cut gives the same book after the buffer
    candidates: int  # how many cuts are consistent
    undecided: int  # orders whose state after the buffer differs between consistent cuts


#: One order's state: (resting, amount); amount is 0 when not resting.
_State = tuple[bool, Decimal]
_GONE: _State = (False, Decimal(0))


def _step(state: _State, ev: BookEvent) -> tuple[_State, bool]:
    """One event on one order, as L3Book applies it; the flag says the event was possible (no anomaly)."""
    resting, amount = state
    if ev.action in ("A", "S"):
        return (True, Decimal(ev.amount)), not resting
    if not resting:
        return state, False
    if ev.action == "C":
        return _GONE, True
    left = amount - Decimal(ev.amount)
    return ((True, left) if left > 0 else _GONE), left >= 0


def _order_events(messages: Sequence[Sequence[BookEvent]]) -> tuple[dict[int, list[tuple[int, BookEvent]]], set[int]]:
    """Order id -> (message index, event) of every event that touches it, in stream order; and the ids
    (id()) of the fills that take their maker's whole remainder: in a new order's message every fill but
    the last does (price-time priority: a taker moves to the next maker only once one is used up)."""
    out: dict[int, list[tuple[int, BookEvent]]] = {}
    whole: set[int] = set()
    for i, msg in enumerate(messages):
        fills = [ev for ev in msg if ev.action == "F"]
        whole.update(id(ev) for ev in fills[:-1])
        for ev in msg:
            if ev.action in ("A", "F", "P", "C") and ev.order_id is not None:
                out.setdefault(ev.order_id, []).append((i, ev))
    return out, whole


def _start(evs: list[tuple[int, BookEvent]], resting: Mapping[int, Decimal] | None, oid: int,
           whole: set[int]) -> _State | None:
    """The order's state before the buffer when the evidence gives it, else None.

    Known when the buffer adds it (absent before), when the tracked book is given, or from the first event
    that says what remained: a cancel's remaining amount, or a fill that took the whole remainder; plus
    every reduction before it."""
    if evs[0][1].action == "A":
        return _GONE
    if resting is not None:
        return (True, resting[oid]) if oid in resting else _GONE
    reduced = Decimal(0)
    for _, ev in evs:
        if ev.action == "C":
            left = Decimal(ev.amount) if ev.amount is not None else Decimal(0)
            return (True, left + reduced) if left > 0 else None
        if ev.action == "A":
            return None
        if id(ev) in whole:
            return (True, Decimal(ev.amount) + reduced)
        reduced += Decimal(ev.amount)
    return None


def _segments(evs: list[tuple[int, BookEvent]], n: int) -> list[tuple[int, int, int]]:
    """Cut ranges [lo, hi] between the order's messages, each with how many of its events lie before it."""
    bounds, before = [], []
    for j, (i, _) in enumerate(evs):
        if not bounds or bounds[-1] != i:
            bounds.append(i)
            before.append(j)
    los = [0] + [b + 1 for b in bounds]
    his = bounds + [n]
    return list(zip(los, his, before + [len(evs)]))


def _allowed(evs: list[tuple[int, BookEvent]], snap: Decimal | None, start: _State | None,
             n: int) -> list[tuple[int, int, _State | None]]:
    """Cut ranges this order allows, each with the order's state after the buffer under that cut
    (None when the state is the same for every allowed range)."""
    want: _State = _GONE if snap is None else (True, snap)
    out = []
    if start is not None:  # the whole amount path is known: the snapshot state pins the cut
        state, done = start, 0
        for lo, hi, k in _segments(evs, n):
            for _, ev in evs[done:k]:
                state = _step(state, ev)[0]
            done = k
            if state == want:
                out.append((lo, hi, None))
        return out
    if snap is None:  # rested before the buffer and is gone from the snapshot: all of its events came first
        return [(evs[-1][0] + 1, n, None)]
    for lo, hi, k in _segments(evs, n):  # rests in the snapshot, amount before the buffer unknown
        if any(ev.action == "C" for _, ev in evs[:k]):
            break  # cancelled before the cut, yet in the snapshot
        state, possible = want, True
        for _, ev in evs[k:]:
            state, ok = _step(state, ev)
            possible &= ok
        if possible:
            out.append((lo, hi, state))
    return out


def find_cut(snapshot: dict[int, Decimal], messages: Sequence[Sequence[BookEvent]], sent_before: int,
             resting: Mapping[int, Decimal] | None = None) -> Join:
    """Every cut k such that the snapshot is the book after messages[:k], and the smallest of them.

    snapshot: resting order id -> amount; messages: book events per socket message, in arrival order;
    sent_before: how many messages arrived before the snapshot request was sent (all of them are in it);
    resting: order id -> amount of the book before messages[0] when it is known (the hourly check's
    tracked book). Each order the buffer touches allows a set of cuts (its state after the cut must be
    its snapshot state); the cuts are those every order allows. When the orders disagree, the cut the
    most orders allow is returned with consistent=False.
    """
    n = len(messages)
    votes = np.zeros(n + 2, np.int64)
    finals: list[list[tuple[int, int, _State]]] = []
    touched, whole = _order_events(messages)
    for oid, evs in touched.items():
        ranges = _allowed(evs, snapshot.get(oid), _start(evs, resting, oid, whole), n)
        for lo, hi, _ in ranges:
            votes[lo] += 1
            votes[hi + 1] -= 1
        if sum(1 for r in ranges if r[2] is not None) > 1:
            finals.append([r for r in ranges if r[2] is not None])
    votes = np.cumsum(votes)[:n + 1]
    votes[:sent_before] = -1
    ok = votes == len(touched)
    if not ok.any():
        cut = int(np.argmax(votes))
        return Join(cut, cut, cut, False, False, 0, 0)
    cuts = np.flatnonzero(ok)
    seen = np.concatenate([[0], np.cumsum(ok)])
    undecided = sum(1 for ranges in finals
                    if len({s for lo, hi, s in ranges if seen[hi + 1] > seen[lo]}) > 1)
    return Join(int(cuts[0]), int(cuts[0]), int(cuts[-1]), True, undecided == 0, len(cuts), undecided)
