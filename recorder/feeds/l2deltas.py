"""Current-era L2 books: numbered level changes over a websocket, joined to a REST snapshot that carries the
number it includes (Zonda's `orderbook/<mkt>` with seqNo, absolute amounts; BTC-Alpha's `alp-ws` diffs with an
update id, signed deltas). The venue modules parse; `L2Protocol` names their functions; one feed serves both.

The sync algorithm (Zonda's docs, exchanges.md §4.4): buffer the pushes, take the REST book, apply the pushes
numbered snapshot+1, +2, ...; a missing number (or a delta that would make a level negative) is a lost push: a
`gap` row and a fresh snapshot. After the join and after every push the tracked book's top `book_limit` levels are
one `book_levels` snapshot (source `ws`); each REST book is stored too (source `rest`). With a ping message the
client sends it every PING_EVERY seconds. A protocol with a trade subscription (alp-ws) may carry trades on the same
connection: trade frames (parsed to `Parsed.trades`) become `trades` rows (source `socket`), once each.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from recorder.rows import Level, Parsed, ParseError
from recorder.transport import TransportError, WebSocketClient
from recorder.venues.common import build_levels

from .base import Healthy, StreamSession, VenueContext, every, fetch

PING_EVERY = 15.0
#: Pushes a pair may buffer while its snapshot is on the way.
MAX_BUFFER = 100_000


@dataclass(frozen=True)
class L2Protocol:
    """A venue's current-era book: its frames and snapshot, as pure functions of the venue module.

    parse_ws(raw) gives a push (`.pair`, `.seq`, `.ts_event`, `.changes` of (side, price, amount or None, count)),
    a Parsed with trades, or a control string; parse_snapshot(body, pair) gives (Parsed levels, the number the
    snapshot includes)."""

    subscribe: Callable[[str], str]
    parse_ws: Callable[[bytes], Any]
    snapshot_url: Callable[[str, str], str]
    parse_snapshot: Callable[[bytes, str], tuple[Parsed, int]]
    absolute: bool  # changes carry a level's new amount (else a signed delta)
    ping: str | None = None
    subscribe_trades: str | None = None  # the frame that subscribes every configured pair's trades, if any


class BookBroken(ValueError):
    """A delta the tracked book cannot take (a level would go negative): the book is unknown."""


@dataclass
class L2Book:
    """A level book: side -> price text -> (amount, order count), with the number of the last change applied."""

    seq: int
    sides: dict[str, dict[str, tuple[Decimal, int | None]]] = field(default_factory=lambda: {"bid": {}, "ask": {}})

    @classmethod
    def from_levels(cls, seq: int, levels: list[Level]) -> "L2Book":
        b = cls(seq)
        for lv in levels:
            b.sides[lv.side][lv.price] = (Decimal(lv.amount), lv.count)
        return b

    def apply(self, push, absolute: bool) -> None:
        """One push's changes: absolute amounts (None or 0 removes the level) or signed deltas."""
        for side, price, amount, count in push.changes:
            lv = self.sides[side]
            if absolute:
                new = Decimal(0) if amount is None else Decimal(amount)
            else:
                new = lv.get(price, (Decimal(0), None))[0] + Decimal(amount)
                if new < 0:
                    raise BookBroken(f"{side} {price}: delta {amount} leaves {new}")
            if new == 0:
                lv.pop(price, None)
            else:
                lv[price] = (new, count)
        self.seq = push.seq

    def top(self, n: int) -> list[Level]:
        out: list[Level] = []
        for side in ("bid", "ask"):
            out += build_levels(side, [(p, format(a, "f"), c) for p, (a, c) in self.sides[side].items()])[:n]
        return out


@dataclass
class _Pair:
    book: L2Book | None = None
    buffer: list = field(default_factory=list)  # (push, raw seq, ts_recv) waiting for the snapshot
    epoch: int = 0  # bumped on every loss: a snapshot requested before it is stale


class L2DeltaFeed:
    """One websocket for every pair's book channel, each pair joined to its REST snapshot, and (`trades`, with a
    protocol that has a trade subscription) the pairs' trades; `book=False` records the trades alone."""

    def __init__(self, ctx: VenueContext, proto: L2Protocol, *, book: bool = True, trades: bool = False) -> None:
        if trades and proto.subscribe_trades is None:
            raise ValueError(f"{ctx.venue}: this websocket has no trade subscription")
        self.ctx, self.proto, self.book, self.trades = ctx, proto, book, trades
        self.name = f"{ctx.venue}:ws_book" if book else f"{ctx.venue}:ws_trades"
        self.pairs = {p: _Pair() for p in ctx.cfg.pairs}

    async def run(self, healthy: Healthy) -> None:
        ctx, cfg = self.ctx, self.ctx.cfg
        tap = ctx.tap(self.name)
        session = tap.new_session()
        stream = "ws:orderbook" if self.book else "ws:trades"
        http = ctx.http(tap, session, "rest:orderbook")
        self.pairs = {p: _Pair() for p in cfg.pairs}
        lost: asyncio.Queue[str] = asyncio.Queue()
        subs = [self.proto.subscribe(p) for p in cfg.pairs] if self.book else []
        if self.trades:
            subs.append(self.proto.subscribe_trades)
        gap = "book stream lost; book unknown until the next snapshot" if self.book else "trades stream lost"
        with StreamSession(tap, session, stream, cfg.pairs, gap) as conn:
            async with WebSocketClient(ctx.http_session, cfg.urls["ws_url"], idle_timeout=cfg.heartbeat,
                                       send_on_open=subs) as ws:
                conn.connect(f"{ws.url} ({len(cfg.pairs)} pairs)")
                async with asyncio.TaskGroup() as tg:
                    if self.proto.ping is not None:
                        tg.create_task(every(PING_EVERY, lambda: ws.send_str(self.proto.ping)))
                    if self.book:
                        for p in cfg.pairs:
                            lost.put_nowait(p)
                        tg.create_task(self._snapshots(tap, http, session, stream, lost, healthy))
                    await self._read(ws, tap, session, stream, lost, None if self.book else healthy)

    async def _read(self, ws, tap, session: int, stream: str, lost: asyncio.Queue, healthy: Healthy | None) -> None:
        """Every frame to raw; pushes to the pairs' books, trade frames to trades. `healthy` (trades alone) is
        called at the first trade frame."""
        limit = self.ctx.cfg.book_limit
        async for frame in ws:
            ts = frame.ts_recv
            try:
                msg = self.proto.parse_ws(frame.raw)
            except ParseError as e:
                tap.reject(session, stream, None, ts, frame.raw, str(e))
                continue  # which pair's push it was is unknown: the next push's seqNo tells the pair it lost one
            if isinstance(msg, str):
                seq = tap.raw(session, stream, None, ts, frame.raw)
                if msg.endswith("error"):
                    tap.event(session, stream, "error", f"venue answered {msg} (raw seq {seq})")
                continue
            seq = tap.raw(session, stream, msg.pair, ts, frame.raw)
            st = self.pairs.get(msg.pair)
            if st is None:
                continue
            if isinstance(msg, Parsed):  # a trade frame
                if self.trades:
                    tap.lag(ts, msg.ts_event)  # whole seconds: up to 1 s more than the true lag
                    fresh = self.ctx.dedup(msg.pair).fresh(msg.trades)
                    tap.trades(msg.pair, session, ts, fresh, "socket")
                    if len(fresh) < len(msg.trades):
                        tap.metrics.inc("dropped_duplicates", tap.feed, len(msg.trades) - len(fresh))
                    if healthy is not None:
                        healthy()
                        healthy = None
                    if self.ctx.sink.full:
                        await self.ctx.sink.room()
                continue
            if not self.book:
                continue
            if msg.ts_event is not None:
                tap.lag(ts, msg.ts_event)
            if st.book is None:
                st.buffer.append((msg, seq, ts))
                if len(st.buffer) > MAX_BUFFER:
                    raise TransportError(f"{msg.pair}: more than {MAX_BUFFER} pushes buffered waiting for a snapshot")
                continue
            if msg.seq <= st.book.seq:
                continue  # already in the book (kept raw)
            if msg.seq != st.book.seq + 1:
                self._lose(tap, session, stream, msg.pair, f"seqNo {msg.seq} after {st.book.seq}", ts, lost)
                st.buffer.append((msg, seq, ts))
                continue
            try:
                st.book.apply(msg, self.proto.absolute)
            except BookBroken as e:
                self._lose(tap, session, stream, msg.pair, str(e), ts, lost)
                continue
            tap.levels(msg.pair, session, msg.ts_event, ts, seq, st.book.top(limit), "ws")
            if self.ctx.sink.full:
                await self.ctx.sink.room()

    def _lose(self, tap, session: int, stream: str, pair: str, why: str, ts: int, lost: asyncio.Queue) -> None:
        st = self.pairs[pair]
        tap.event(session, stream, "gap", f"push lost ({why}); book unknown until the next snapshot", pair, ts=ts)
        st.book, st.buffer, st.epoch = None, [], st.epoch + 1
        lost.put_nowait(pair)

    async def _snapshots(self, tap, http, session: int, stream: str, lost: asyncio.Queue, healthy: Healthy) -> None:
        """Join each pair that needs a book (at connect, after a loss) to a REST snapshot."""
        cfg, joined = self.ctx.cfg, set()
        while True:
            pair = await lost.get()
            st = self.pairs[pair]
            epoch = st.epoch
            url = self.proto.snapshot_url(cfg.urls["rest_url"], pair)
            res, seq, got = await fetch(http, tap, session, "rest:orderbook", pair, url,
                                        lambda r: self.proto.parse_snapshot(r.body, pair))
            if got is None or st.epoch != epoch:
                await asyncio.sleep(0.5)
                lost.put_nowait(pair)
                continue
            parsed, snap_seq = got
            tap.levels(pair, session, parsed.ts_event, res.ts_recv, seq, parsed.levels, "rest")
            pending = [b for b in st.buffer if b[0].seq > snap_seq]
            if pending and pending[0][0].seq != snap_seq + 1:  # the socket is ahead of the snapshot: take another
                await asyncio.sleep(0.2)
                lost.put_nowait(pair)
                continue
            book = L2Book.from_levels(snap_seq, parsed.levels)
            tap.levels(pair, session, parsed.ts_event, res.ts_recv, seq, book.top(cfg.book_limit), "ws")
            for push, raw_seq, ts in pending:
                if push.seq != book.seq + 1:
                    break
                try:
                    book.apply(push, self.proto.absolute)
                except BookBroken:
                    break
                tap.levels(pair, session, push.ts_event, ts, raw_seq, book.top(cfg.book_limit), "ws")
            else:
                st.book, st.buffer = book, []
                tap.event(session, stream, "snapshot", f"seqNo {snap_seq}; {len(pending)} buffered pushes applied",
                          pair)
                joined.add(pair)
                if joined >= set(self.pairs):
                    healthy()
                continue
            self._lose(tap, session, stream, pair, "buffered pushes not contiguous", res.ts_recv, lost)
