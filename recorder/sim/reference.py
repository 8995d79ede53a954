"""Reference L3 book applier for BTC-Alpha-style messages: the slow, obviously-correct oracle for replay tests."""
from __future__ import annotations

from decimal import Decimal


class RefBook:
    """Resting orders by id, in arrival order; `problems` counts what did not conserve (never silently absorbed)."""

    def __init__(self) -> None:
        self.orders: dict[int, tuple[str, Decimal, Decimal]] = {}  # id -> (side buy|sell, price, amount)
        self.problems: list[str] = []

    @classmethod
    def from_snapshot(cls, sell: list[dict], buy: list[dict]) -> "RefBook":
        """From an L3 snapshot (`orderbook/<PAIR>/?group=0` rows: id, price, amount), each side best first."""
        b = cls()
        for side, rows in (("sell", sell), ("buy", buy)):
            for r in rows:
                b.orders[int(r["id"])] = (side, Decimal(str(r["price"])), Decimal(str(r["amount"])))
        return b

    def apply(self, msg: dict) -> None:
        """One `book_<PAIR>` message: a cancel removes `oid`; a new order fills each `o_id`, then rests if amount > 0."""
        if msg.get("cancelled"):
            o = self.orders.pop(int(msg["oid"]), None)
            if o is None:
                self.problems.append(f"cancel of unknown order {msg['oid']}")
            elif o[2] != Decimal(str(msg["amount"])):
                self.problems.append(f"cancel amount {msg['amount']} != resting {o[2]} for {msg['oid']}")
            return
        for t in msg["trades"]:
            mid = int(t["o_id"])
            o = self.orders.get(mid)
            if o is None:
                self.problems.append(f"fill of unknown order {mid}")
                continue
            left = o[2] - Decimal(t["amount"])
            if left < 0:
                self.problems.append(f"overfill of {mid}")
            if left <= 0:
                del self.orders[mid]
            else:
                self.orders[mid] = (o[0], o[1], left)
        amount = Decimal(str(msg["amount"]))
        if amount > 0:
            self.orders[int(msg["oid"])] = (msg["type"], Decimal(str(msg["price"])), amount)

    def side(self, side: str) -> list[tuple[int, Decimal, Decimal]]:
        """(id, price, amount) best price first, arrival order within a price."""
        rows = [(i, p, a) for i, (s, p, a) in self.orders.items() if s == side]
        return sorted(rows, key=lambda r: -r[1] if side == "buy" else r[1])

    def crossed(self) -> bool:
        bids, asks = self.side("buy"), self.side("sell")
        return bool(bids and asks and bids[0][1] >= asks[0][1])
