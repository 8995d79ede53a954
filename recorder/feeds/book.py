"""Order-level book tracking and the snapshot/stream join rule for L3 feeds (pure; no I/O).

The join (see docs/recorder.md, "Joining the L3 snapshot to the stream"): socket messages are
buffered from connect; a REST group=0 snapshot is taken; the snapshot equals the book after some
prefix messages[:k] of the stream. Messages received before the snapshot request was sent are in
that prefix (causality). Other messages are classified by what the snapshot proves about them;
k is the smallest cut consistent with every proof, and messages[k:] are applied on top of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

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


def book_from_snapshot(events: Iterable[BookEvent]) -> L3Book:
    """L3Book holding a snapshot's S rows (R rows ignored)."""
    b = L3Book()
    for ev in events:
        if ev.action == "S":
            b.apply(ev)
    return b


@dataclass(frozen=True)
class Join:
    """Where the snapshot cuts the buffered stream and how sure we are."""

    cut: int  # messages[:cut] are already in the snapshot
    lower: int  # smallest cut the evidence allows
    upper: int  # largest cut the evidence allows
    consistent: bool  # lower <= upper
    ambiguous: int  # messages in [lower, upper) the evidence cannot place


def find_cut(snapshot: dict[int, Decimal], messages: Sequence[Sequence[BookEvent]], sent_before: int,
             resting: Mapping[int, Decimal] | None = None) -> Join:
    """Index k such that the snapshot is the book after messages[:k].

    snapshot: resting order id -> amount; messages: book events per socket message, in arrival order;
    sent_before: how many messages arrived before the snapshot request was sent (all of them are in it);
    resting: order id -> amount of the book before messages[0] when it is known (the hourly check's
    tracked book): then fills of those orders are placed by amount too, as for orders added in the buffer.
    """
    n = len(messages)
    lower, upper = sent_before, n
    added_at: dict[int, int] = {}  # order id -> index of the message that added it
    removed_after: dict[int, list[int]] = {}  # order id -> indices of messages that cancel/fill it
    for i, msg in enumerate(messages):
        for ev in msg:
            if ev.action == "A" and ev.order_id not in added_at:
                added_at[ev.order_id] = i
            elif ev.action in ("C", "F", "P"):
                removed_after.setdefault(ev.order_id, []).append(i)
    # Amount paths of snapshot orders whose amount before the buffer is known (added inside it, or resting
    # and given): the snapshot amount matches at exactly the cut.
    running: dict[int, Decimal] = {} if resting is None else {o: a for o, a in resting.items() if o in snapshot}
    for i, msg in enumerate(messages):
        before = after = False
        for ev in msg:
            oid = ev.order_id
            if ev.action == "A":
                running[oid] = Decimal(ev.amount)
                if oid in snapshot:
                    before = True  # it rests in the snapshot, so its message (fills included) came first
                elif not removed_after.get(oid):
                    after = True  # never removed in the buffer, absent from the snapshot: not yet added
            elif ev.action == "C":
                if oid in snapshot:
                    after = True  # still resting in the snapshot: the cancel came later
                elif oid not in added_at or added_at[oid] > i:
                    before = True  # it rested when cancelled, yet the snapshot lacks it
            elif ev.action in ("F", "P"):
                if oid not in snapshot:
                    if oid not in added_at or added_at[oid] > i:
                        before = True  # a resting order the snapshot no longer has
                elif oid in running:
                    if running[oid] == snapshot[oid]:
                        after = True  # the snapshot amount is the amount before this fill
                    running[oid] -= Decimal(ev.amount)
                    if running[oid] == snapshot[oid]:
                        before = True  # the snapshot amount is the amount after this fill
        if before:
            lower = max(lower, i + 1)
        if after:
            upper = min(upper, i)
    consistent = lower <= upper
    return Join(lower, lower, upper, consistent, max(0, upper - lower))
