"""Order-level book tracking and the snapshot/stream join rule for L3 feeds (pure; no I/O).

The join (see docs/recorder.md, "Joining the L3 snapshot to the stream"): socket messages are
buffered from connect; a REST group=0 snapshot is taken; the snapshot equals the book after some
prefix messages[:k] of the stream. Messages received before the snapshot request was sent are in
that prefix (causality). Every order the buffer touches allows only the cuts after which its state is
its snapshot state; k is the smallest cut all of them allow, and messages[k:] are applied on top of it.
When the allowed cuts give different books the join is not exact and the feed takes another snapshot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

import numpy as np

from recorder.rows import BookEvent


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


def _order_events(messages: Sequence[Sequence[BookEvent]]) -> dict[int, list[tuple[int, BookEvent]]]:
    """Order id -> (message index, event) of every event that touches it, in stream order."""
    out: dict[int, list[tuple[int, BookEvent]]] = {}
    for i, msg in enumerate(messages):
        for ev in msg:
            if ev.action in ("A", "F", "P", "C") and ev.order_id is not None:
                out.setdefault(ev.order_id, []).append((i, ev))
    return out


def _start(evs: list[tuple[int, BookEvent]], resting: Mapping[int, Decimal] | None, oid: int) -> _State | None:
    """The order's state before the buffer when the evidence gives it, else None.

    Known when the buffer adds it (absent before), when the tracked book is given, or from a cancel's
    remaining amount plus every reduction before that cancel."""
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
    touched = _order_events(messages)
    for oid, evs in touched.items():
        ranges = _allowed(evs, snapshot.get(oid), _start(evs, resting, oid), n)
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
