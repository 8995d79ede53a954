"""Seeded random traders: limit orders around a random-walk mid, cancels and sweeps, on a Poisson logical clock."""
from __future__ import annotations

import math
import random

from recorder.sim.engine import BUY, SELL, Event, Market


class Traders:
    """Generates one Market's order flow at `rate` messages/s of logical time, reproducibly from `seed`."""

    def __init__(self, market: Market, seed: str, rate: float, start_ns: int, target_orders: int = 300) -> None:
        self.market = market
        self.rng = random.Random(seed)
        self.rate = rate
        self.next_ts = start_ns
        self.mid = market.spec.mid
        self.target_orders = target_orders
        self.vol = max(1, market.spec.mid // 200_000)  # mid step scale in ticks (~0.5 bp)
        mean_lots = 10 ** market.spec.amount_dp // 20  # about 0.05 base units
        self._sizes = [max(1, int(self.rng.lognormvariate(math.log(mean_lots), 1.0))) for _ in range(4096)]
        self._advance()

    def _advance(self) -> None:
        """Draw the next event's logical time (µs-rounded exponential gap)."""
        gap = self.rng.expovariate(self.rate) * 1e9
        self.next_ts += max(1000, int(gap) // 1000 * 1000)

    def _size(self) -> int:
        """Lognormal order size (sigma 1), drawn from a seeded table of 4096 draws."""
        return self._sizes[int(self.rng.random() * 4096)]

    def step(self) -> Event:
        """Perform the next trader action at `next_ts` and return the engine's event."""
        rng, m, ts = self.rng, self.market, self.next_ts
        self._advance()
        book = m.book
        self.mid = max(10 * self.vol, self.mid + int((rng.random() - 0.5) * 3.46 * self.vol))  # sd ~ vol
        n = len(book)
        u = rng.random()
        p_cancel = min(0.6, 0.35 * n / self.target_orders)
        if n and u < p_cancel:
            return m.cancel(book.random_order_id(rng.random()), ts)
        side = BUY if rng.random() < 0.5 else SELL
        if u > 0.9 and book.best(SELL if side == BUY else BUY) is not None:
            return self._sweep(side, ts)
        dist = 1 + int(rng.expovariate(1 / (4 * self.vol)))
        price = self.mid - dist if side == BUY else self.mid + dist
        return m.submit(side, max(1, price), self._size(), ts)

    def _sweep(self, side: str, ts: int) -> Event:
        """A marketable order through 1-5 opposite levels, usually leaving part of the last level."""
        m = self.market
        levels = m.book.depth_levels(SELL if side == BUY else BUY, self.rng.randint(1, 5))
        lots = sum(v for _, v, _ in levels[:-1]) + max(1, int(levels[-1][1] * self.rng.random()))
        if self.rng.random() < 0.1:
            lots += self._size()  # occasionally more than the levels hold: the rest rests
        return m.submit(side, levels[-1][0], lots, ts)

    def run_until(self, ts_ns: int, max_events: int | None = None) -> list[Event]:
        """Every event with logical time <= `ts_ns` (at most `max_events`)."""
        out = []
        while self.next_ts <= ts_ns and (max_events is None or len(out) < max_events):
            out.append(self.step())
        return out
