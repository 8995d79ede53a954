"""Price-time-priority matching engine for one pair, in integer ticks and lots, with its trade tape and candles."""
from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache

BUY, SELL = "buy", "sell"


@dataclass(frozen=True, slots=True)
class PairSpec:
    """A pair's identity and grid: prices are ticks of 10**-price_dp, amounts lots of 10**-amount_dp."""

    name: str
    price_dp: int
    amount_dp: int
    mid: int  # initial mid in ticks

    @property
    def base(self) -> str:
        return self.name.split("_")[0]

    @property
    def quote(self) -> str:
        return self.name.split("_")[1]


KNOWN_PAIRS = {
    "BTC_USD": (2, 6, 60_000_00),
    "BTC_USDT": (2, 6, 60_000_00),
    "BTC_PLN": (2, 6, 250_000_00),
    "BTC_TWD": (0, 6, 1_900_000),
    "ETH_BTC": (6, 4, 50_000),
    "ETH_USD": (2, 5, 3_000_00),
    "ETH_PLN": (2, 5, 12_000_00),
}


def pair_spec(name: str) -> PairSpec:
    """Grid for a pair: known pairs have realistic grids, others get 4/4 decimals around 100."""
    price_dp, amount_dp, mid = KNOWN_PAIRS.get(name, (4, 4, 100_0000))
    return PairSpec(name, price_dp, amount_dp, mid)


@lru_cache(maxsize=1 << 16)
def fmt(n: int, dp: int) -> str:
    """Integer `n` scaled by 10**-dp as a fixed-point decimal string with exactly dp decimals."""
    if dp == 0:
        return str(n)
    sign = "-" if n < 0 else ""
    q, r = divmod(abs(n), 10**dp)
    return f"{sign}{q}.{r:0{dp}d}"


@lru_cache(maxsize=1 << 16)
def fmt_num(n: int, dp: int) -> str:
    """Like fmt but without trailing zeros (a JSON number literal; at least one decimal kept, as in `0.0`)."""
    s = fmt(n, dp)
    if dp:
        s = s.rstrip("0")
        if s.endswith("."):
            s += "0"
    return s


def to_dec(n: int, dp: int) -> Decimal:
    """Exact Decimal of integer `n` scaled by 10**-dp."""
    return Decimal(n).scaleb(-dp)


@dataclass(slots=True)
class Order:
    """A resting order; `lots` is what remains, `ts` when it started resting."""

    oid: int
    side: str
    price: int
    lots: int
    ts: int


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade: the incoming order took `lots` from resting order `maker_oid` at `price`."""

    tid: int
    maker_oid: int
    maker_side: str
    price: int
    lots: int


@dataclass(frozen=True, slots=True)
class NewOrder:
    """An order arrived: `fills` in match order, then `remaining` lots rest at `price` (if > 0)."""

    seq: int
    ts: int
    oid: int
    side: str
    price: int
    lots: int
    remaining: int
    fills: tuple[Fill, ...]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Resting order `oid` was cancelled by operation `cancel_id`; `lots` is what remained."""

    seq: int
    ts: int
    oid: int
    cancel_id: int
    side: str
    price: int
    lots: int


Event = NewOrder | Cancel


@dataclass(frozen=True, slots=True)
class Trade:
    """A tape entry: one fill, with the taker's side and both order ids."""

    tid: int
    ts: int
    price: int
    lots: int
    taker_side: str
    maker_oid: int
    taker_oid: int


class Book:
    """Resting orders: per side a price -> {oid: Order} map (insertion order is time priority) and sorted prices."""

    def __init__(self) -> None:
        self.levels = {BUY: {}, SELL: {}}
        self.prices = {BUY: [], SELL: []}  # ascending; best bid is last, best ask first
        self.orders: dict[int, Order] = {}
        self._ids: list[int] = []
        self._pos: dict[int, int] = {}

    def best(self, side: str) -> int | None:
        p = self.prices[side]
        if not p:
            return None
        return p[-1] if side == BUY else p[0]

    def rest(self, o: Order) -> None:
        lv = self.levels[o.side]
        level = lv.get(o.price)
        if level is None:
            level = lv[o.price] = {}
            bisect.insort(self.prices[o.side], o.price)
        level[o.oid] = o
        self.orders[o.oid] = o
        self._pos[o.oid] = len(self._ids)
        self._ids.append(o.oid)

    def remove(self, o: Order) -> None:
        level = self.levels[o.side][o.price]
        del level[o.oid]
        if not level:
            del self.levels[o.side][o.price]
            prices = self.prices[o.side]
            del prices[bisect.bisect_left(prices, o.price)]
        del self.orders[o.oid]
        i = self._pos.pop(o.oid)
        last = self._ids.pop()
        if last != o.oid:
            self._ids[i] = last
            self._pos[last] = i

    def random_order_id(self, u: float) -> int:
        """The resting order at fraction `u` in [0, 1) of the (arbitrary but deterministic) id list."""
        return self._ids[int(u * len(self._ids))]

    def depth_orders(self, side: str) -> list[Order]:
        """Every resting order on a side, best price first, then time priority."""
        prices = self.prices[side]
        ordered = reversed(prices) if side == BUY else prices
        lv = self.levels[side]
        return [o for p in ordered for o in lv[p].values()]

    def depth_levels(self, side: str, n: int | None = None) -> list[tuple[int, int, int]]:
        """Top `n` (all if None) levels as (price, total lots, order count), best first."""
        prices = self.prices[side]
        ordered = prices[::-1] if side == BUY else prices
        if n is not None:
            ordered = ordered[:n]
        lv = self.levels[side]
        return [(p, sum(o.lots for o in lv[p].values()), len(lv[p])) for p in ordered]

    def __len__(self) -> int:
        return len(self.orders)


class Candles:
    """1-minute OHLCV buckets (bounded), aggregated on demand to any resolution."""

    def __init__(self, max_minutes: int = 100_000) -> None:
        self.minutes: OrderedDict[int, list[int]] = OrderedDict()
        self.max_minutes = max_minutes

    def add(self, ts_ns: int, price: int, lots: int) -> None:
        m = ts_ns // 60_000_000_000 * 60
        c = self.minutes.get(m)
        if c is None:
            self.minutes[m] = [price, price, price, price, lots, 1]
            if len(self.minutes) > self.max_minutes:
                self.minutes.popitem(last=False)
        else:
            if price > c[1]:
                c[1] = price
            if price < c[2]:
                c[2] = price
            c[3] = price
            c[4] += lots
            c[5] += 1

    def query(self, resolution: int | str, since_s: int | None, until_s: int | None) -> list[tuple[int, ...]]:
        """Candles (open_s, o, h, l, c, volume_lots, trades) ascending, open in [since, until]; empty ones omitted."""
        out: dict[int, list[int]] = {}
        for m, (o, h, l, c, v, n) in self.minutes.items():
            b = bucket(m, resolution)
            if since_s is not None and b < since_s or until_s is not None and b > until_s:
                continue
            agg = out.get(b)
            if agg is None:
                out[b] = [o, h, l, c, v, n]
            else:
                agg[1] = max(agg[1], h)
                agg[2] = min(agg[2], l)
                agg[3] = c
                agg[4] += v
                agg[5] += n
        return [(b, *vals) for b, vals in sorted(out.items())]


def bucket(ts_s: int, resolution: int | str) -> int:
    """Open time (s) of the candle containing `ts_s`: seconds-based resolutions, weeks from Monday, "1M" months."""
    if resolution == "1M":
        d = datetime.fromtimestamp(ts_s, timezone.utc)
        return int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp())
    if resolution == 604800:
        return ts_s - (ts_s - 345_600) % 604_800  # 1970-01-05 was a Monday
    return ts_s - ts_s % int(resolution)


class Market:
    """One pair's matching engine: book, ids, trade tape and candles; every change returns an Event."""

    def __init__(self, spec: PairSpec, id_base: int = 1000, tape_len: int = 200_000) -> None:
        self.spec = spec
        self.book = Book()
        self.trades: deque[Trade] = deque(maxlen=tape_len)
        self.candles = Candles()
        self.seq = 0
        self.last_ts = 0
        self._next_id = id_base
        self._next_tid = id_base
        self._next_cancel = id_base

    def submit(self, side: str, price: int, lots: int, ts: int) -> NewOrder:
        """Match an incoming limit order against the opposite side, resting any remainder."""
        oid = self._next_id
        self._next_id += 1
        book = self.book
        other = SELL if side == BUY else BUY
        prices = book.prices[other]
        levels = book.levels[other]
        fills = []
        left = lots
        while left and prices:
            best = prices[-1] if other == BUY else prices[0]
            if (side == BUY and best > price) or (side == SELL and best < price):
                break
            for maker in list(levels[best].values()):
                take = min(left, maker.lots)
                tid = self._next_tid
                self._next_tid += 1
                fills.append(Fill(tid, maker.oid, other, best, take))
                self.trades.append(Trade(tid, ts, best, take, side, maker.oid, oid))
                self.candles.add(ts, best, take)
                left -= take
                if take == maker.lots:
                    book.remove(maker)
                else:
                    maker.lots -= take
                    break
                if not left:
                    break
        if left:
            book.rest(Order(oid, side, price, left, ts))
        self.seq += 1
        self.last_ts = ts
        return NewOrder(self.seq, ts, oid, side, price, lots, left, tuple(fills))

    def cancel(self, oid: int, ts: int) -> Cancel:
        """Cancel a resting order entirely."""
        o = self.book.orders[oid]
        self.book.remove(o)
        cid = self._next_cancel
        self._next_cancel += 1
        self.seq += 1
        self.last_ts = ts
        return Cancel(self.seq, ts, oid, cid, o.side, o.price, o.lots)
