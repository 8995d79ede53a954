"""Bounded memories that decide what is new: trades (by id and occurrence) and candle versions (pure)."""
from __future__ import annotations

from collections import OrderedDict
from decimal import Decimal
from typing import Hashable, Iterable, Iterator, Sequence

from recorder.rows import Candle, Trade


class Recent:
    """A set that forgets its oldest keys beyond `capacity` (constant memory)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """Remember key; False if it was already remembered."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
        return True

    def add_many(self, keys: Iterable[Hashable]) -> list[bool]:
        """`add` of each key in order (one call for a burst)."""
        mem, cap, out = self._keys, self.capacity, []
        for key in keys:
            if key in mem:
                out.append(False)
                continue
            mem[key] = None
            if len(mem) > cap:
                mem.popitem(last=False)
            out.append(True)
        return out

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[Hashable]:
        """Keys, oldest first."""
        return iter(self._keys)


def trade_keys(trades: Sequence[Trade]) -> list:
    """Identity of each trade in one message: its id, or its content when the venue gives none.

    The occurrence number tells identical trades in the same message apart, so a page listing two
    equal trades yields two keys, and the same page seen again yields the same two keys. A first
    occurrence of a plain integer id is keyed by the int alone (the socket's compiled path does too).
    """
    seen: dict[tuple, int] = {}
    out: list = []
    for t in trades:
        base = (t.trade_id,) if t.trade_id is not None else (t.ts_event, t.price, t.amount, t.taker_side)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(int(t.trade_id) if n == 0 and _plain_id(t.trade_id) else base + (n,))  # an int hashes cheapest
    return out


def _plain_id(trade_id: str | None) -> bool:
    """A trade id written as a plain non-negative integer (no sign, no leading zero)."""
    return trade_id is not None and trade_id.isascii() and trade_id.isdigit() and (trade_id[0] != "0" or trade_id == "0")


class TradeDedup:
    """Trades seen from any source (socket, REST, backfill); `fresh` keeps the ones not written yet."""

    def __init__(self, capacity: int = 20_000, floor: int | None = None) -> None:
        self._seen = Recent(capacity)
        self.floor = floor  # numeric ids <= floor are already in the dataset (from an earlier run)

    def fresh(self, trades: Sequence[Trade]) -> list[Trade]:
        """The trades of one message that are new, in message order; remembers them."""
        out = []
        for t, key in zip(trades, trade_keys(trades)):
            if self.floor is not None:
                nid = _int_id(t.trade_id)
                if nid is not None and nid <= self.floor:
                    continue
            if self._seen.add(key):
                out.append(t)
        return out

    def written(self, trade_ids: Iterable[str]) -> None:
        """Remember trades already in the dataset (an earlier run's), each as its id's first occurrence."""
        self._seen.add_many(int(t) if _plain_id(t) else (t, 0) for t in trade_ids)

    def fresh_ids(self, ids: Sequence[int], occurrences: Sequence[int]) -> list[bool]:
        """`fresh` for trades given by numeric id and occurrence in their message (trade_keys): which are new."""
        keys = ids if not any(occurrences) else [i if n == 0 else (str(i), n) for i, n in zip(ids, occurrences)]
        floor = self.floor
        if floor is None:
            return self._seen.add_many(keys)
        new = [i > floor for i in ids]
        added = iter(self._seen.add_many(k for k, keep in zip(keys, new) if keep))
        return [keep and next(added) for keep in new]


def _int_id(trade_id: str | None) -> int | None:
    if trade_id is not None and trade_id.isdigit():
        return int(trade_id)
    return None


def max_trade_id(trades: Iterable[Trade]) -> int | None:
    """Largest numeric trade id (None when the venue gives none)."""
    ids = [i for i in (_int_id(t.trade_id) for t in trades) if i is not None]
    return max(ids) if ids else None


def needs_backfill(page: Sequence[Trade], cursor: int | None, limit: int) -> bool:
    """A full page of `limit` trades whose oldest id is still above the cursor: the next page may hold more.

    Ids may be shared across pairs (not contiguous per pair), so only "oldest id <= cursor" proves overlap.
    """
    if cursor is None or len(page) < limit:
        return False
    ids = [i for i in (_int_id(t.trade_id) for t in page) if i is not None]
    return bool(ids) and min(ids) > cursor


def _values(c: Candle) -> tuple:
    """A candle version's numbers, compared by value ("1.50" as "1.5", as the dataset's decimals hold them)."""
    return tuple(None if x is None else Decimal(x) for x in (c.open, c.high, c.low, c.close, c.volume))


class CandleVersions:
    """Latest version of each candle seen; `changed` keeps only new candles and changed versions. `known`:
    the versions already in the dataset (so a restart rewrites none of them)."""

    def __init__(self, keep: int = 4096, known: Iterable[Candle] = ()) -> None:
        self._last: OrderedDict[tuple[str, int], tuple] = OrderedDict()
        self._keep = keep
        self.changed(known)

    def changed(self, candles: Iterable[Candle]) -> list[Candle]:
        """Candles that differ from the version last seen (or were never seen), in ts_open order."""
        out = []
        for c in sorted(candles, key=lambda c: (c.resolution, c.ts_open)):
            key = (c.resolution, c.ts_open)
            val = _values(c)
            if self._last.get(key) != val:
                self._last[key] = val
                self._last.move_to_end(key)
                out.append(c)
        while len(self._last) > self._keep:
            self._last.popitem(last=False)
        return out

    def latest_open(self, resolution: str) -> int | None:
        """ts_open of the newest candle seen for a resolution."""
        opens = [k[1] for k in self._last if k[0] == resolution]
        return max(opens) if opens else None
