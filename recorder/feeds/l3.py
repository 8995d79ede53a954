"""BTC-Alpha / bitexbit L3 book stream: socket.io `book_<PAIR>` events joined to group=0 REST snapshots.

One connection per venue carries every pair. At connect every pair buffers until its snapshot is
joined (feeds/join.py); a REST snapshot per pair is re-taken at every `snapshot_interval` boundary
(one hour) to check the tracked book, and a mismatch resyncs. A book message that cannot be parsed
(kept raw, rejected) is a lost message: its pair (every pair when the frame does not say which) gets
a `gap` row and a fresh snapshot on the same connection. Silence longer than the venue's heartbeat
reconnects.
"""
from __future__ import annotations

import asyncio
import time
from types import ModuleType

from recorder.rows import ParseError
from recorder.transport import SocketIOClient, TransportError

from .base import Healthy, StreamSession, VenueContext, fetch
from .join import L3Join, Out


#: Seconds the stream keeps buffering after a snapshot response before the cut is chosen: a REST
#: snapshot can run ahead of the socket, and messages it already contains must be seen to be placed.
JOIN_LOOKAHEAD = 2.0


class L3BookFeed:
    """The book stream of one venue (all its pairs) with snapshots, checks and socket trades."""

    def __init__(self, ctx: VenueContext, venue_mod: ModuleType, *, snapshot_interval: float = 3600.0,
                 max_buffer: int = 200_000, join_lookahead: float = JOIN_LOOKAHEAD) -> None:
        self.ctx = ctx
        self.mod = venue_mod
        self.name = f"{ctx.venue}:book"
        self.snapshot_interval = snapshot_interval
        self.join_lookahead = join_lookahead
        self.max_buffer = max_buffer
        self.joins = {p: L3Join() for p in ctx.cfg.pairs}
        self._last_rx = 0.0
        self._lost: asyncio.Queue[str] = asyncio.Queue()  # pairs waiting for a resync snapshot (per connection)
        self._queued: set[str] = set()

    def _write(self, tap, pair: str, session: int, outs: list[Out]) -> None:
        for o in outs:
            tap.events(pair, session, o.ts_recv, o.msg_seq, o.events)

    def _anomalies(self, tap) -> None:
        total = sum(sum(j.book.anomalies.values()) for j in self.joins.values() if j.book is not None)
        tap.metrics.counters[("book_anomalies", tap.feed, "")] = total
        tap.metrics.counters[("dropped_duplicates", tap.feed, "")] = sum(j.duplicates for j in self.joins.values())
        tap.metrics.set("queue_depth", tap.feed, sum(j.buffered for j in self.joins.values()))
        tap.metrics.set("book_orders", tap.feed, sum(len(j.book.orders) for j in self.joins.values() if j.book))

    async def _snapshot(self, tap, http, session: int, pair: str, stream: str) -> None:
        join = self.joins[pair]
        join.request_sent()
        epoch = join.epoch
        url = self.mod.orderbook_url(self.ctx.cfg.urls["rest_url"], pair, 0)
        res, _, parsed = await fetch(http, tap, session, "rest:orderbook", pair, url,
                                     lambda r: self.mod.parse_orderbook(r.body, pair, r.ts_recv, 0))
        if parsed is None:
            raise TransportError(f"{pair} snapshot unusable (HTTP {res.status})")
        await asyncio.sleep(self.join_lookahead)
        if join.epoch != epoch:
            return  # a message was lost meanwhile: this snapshot may predate it; the resync takes another
        buffered = join.buffered
        outs = join.on_snapshot(parsed.events, res.ts_recv)
        self._write(tap, pair, session, outs)
        j = join.last_join
        tap.event(session, stream, "snapshot",
                  f"R+S {sum(1 for e in parsed.events if e.action == 'S')} orders; cut {j.cut} of "
                  f"{buffered} buffered msgs ({j.cut} already in the snapshot); ambiguous {j.ambiguous}"
                  + ("" if j.consistent else f"; INCONSISTENT (upper bound {j.upper})"), pair)

    async def _checks(self, tap, http, session: int, stream: str) -> None:
        while True:
            now = time.time()
            await asyncio.sleep(self.snapshot_interval - now % self.snapshot_interval)
            for pair, join in self.joins.items():
                if join.joining:
                    continue
                join.start_check()
                url = self.mod.orderbook_url(self.ctx.cfg.urls["rest_url"], pair, 0)
                try:
                    res, _, parsed = await fetch(http, tap, session, "rest:orderbook", pair, url,
                                                 lambda r, p=pair: self.mod.parse_orderbook(r.body, p, r.ts_recv, 0))
                except TransportError as e:
                    parsed = None
                    tap.event(session, stream, "error", f"hourly snapshot failed: {e}", pair)
                if parsed is None:
                    join.drop_check()
                    continue
                await asyncio.sleep(self.join_lookahead)
                ok, detail, outs = join.on_check(parsed.events, res.ts_recv)
                # The resync row comes first so its seq precedes the R+S it introduces: replay's gap ends there.
                tap.event(session, stream, "snapshot" if ok else "resync", detail, pair)
                self._write(tap, pair, session, outs)

    async def _watchdog(self, tap) -> None:
        limit = self.ctx.cfg.heartbeat
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            self._anomalies(tap)
            silent = time.monotonic() - self._last_rx
            if silent > limit:
                raise TransportError(f"no message for {silent:.1f}s (heartbeat {limit}s)")
            if any(j.buffered > self.max_buffer for j in self.joins.values()):
                raise TransportError(f"more than {self.max_buffer} messages buffered waiting for a snapshot")

    async def run(self, healthy: Healthy) -> None:
        """One connection: connect, snapshot every pair, stream until the connection fails."""
        ctx, cfg = self.ctx, self.ctx.cfg
        tap = ctx.tap(self.name)
        session = tap.new_session()
        stream = f"ws:{ctx.venue}"
        http = ctx.http(tap, session, "rest:orderbook")
        for j in self.joins.values():
            j.reset()
        self._lost, self._queued = asyncio.Queue(), set()
        emits = [f'42["subscribe","{self.mod.channel(p)}"]' for p in cfg.pairs]
        gap_detail = "book stream lost; book unknown until the next snapshot"
        try:
            with StreamSession(tap, session, stream, cfg.pairs, gap_detail) as conn:
                async with SocketIOClient(ctx.http_session, cfg.urls["ws_url"], eio=cfg.eio, emits=emits) as sio:
                    self._last_rx = time.monotonic()
                    conn.connect(f"{sio.url} ({len(cfg.pairs)} pairs)")
                    async with asyncio.TaskGroup() as tg:
                        snaps = [tg.create_task(self._snapshot(tap, http, session, p, stream)) for p in cfg.pairs]
                        tg.create_task(self._watchdog(tap))
                        tg.create_task(self._checks(tap, http, session, stream))
                        tg.create_task(self._read(sio, tap, session, stream))
                        tg.create_task(self._resyncs(tap, http, session, stream))
                        await asyncio.gather(*snaps)
                        healthy()
        finally:
            self._anomalies(tap)

    def _lose(self, tap, session: int, stream: str, pair: str | None, raw_seq: int) -> None:
        """A book message was lost (kept raw, rejected): the pair's book is unknown until a snapshot requested
        after the loss is joined (one taken earlier is dropped: it may predate the lost message)."""
        if pair is not None and pair not in self.joins:
            return  # a pair we do not record
        for p in ([pair] if pair is not None else list(self.joins)):
            join = self.joins[p]
            if join.book is not None:
                tap.event(session, stream, "gap", f"book message lost (raw seq {raw_seq}); book unknown until "
                                                  f"the next snapshot", p)
            join.reset()
            if p not in self._queued:
                self._queued.add(p)
                self._lost.put_nowait(p)

    async def _resyncs(self, tap, http, session: int, stream: str) -> None:
        """Take a fresh snapshot for each pair that lost a message (owned by the connection's task group)."""
        while True:
            pair = await self._lost.get()
            self._queued.discard(pair)
            await self._snapshot(tap, http, session, pair, stream)

    async def _read(self, sio: SocketIOClient, tap, session: int, stream: str) -> None:
        sink, mod, joins, recv = self.ctx.sink, self.mod, self.joins, sio.recv
        while True:
            frame = await recv()  # not `async for`: one coroutine less per frame
            self._last_rx = time.monotonic()
            ts = frame.ts_recv
            if frame.kind != "event":
                if frame.kind == "malformed":
                    pair = mod.pair_in_frame(frame.raw)
                    seq = tap.reject(session, stream, pair, ts, frame.raw, frame.error or "malformed frame")
                    self._lose(tap, session, stream, pair, seq)
                else:
                    tap.raw(session, stream, None, ts, frame.raw)
                continue
            try:
                parsed = mod.parse_book_event(frame.name, frame.args[0] if frame.args else None)
            except ParseError as e:
                try:
                    pair = mod.pair_of_event(frame.name)
                except ParseError:
                    pair = None
                seq = tap.reject(session, stream, pair, ts, frame.raw, str(e))
                if pair is not None or frame.name.startswith("book_"):  # a book message: lost
                    self._lose(tap, session, stream, pair, seq)
                continue
            pair = parsed.pair
            seq = tap.raw(session, stream, pair, ts, frame.raw)
            if parsed.ts_event is not None:
                tap.lag(ts, parsed.ts_event)
            join = joins.get(pair)
            if join is None:
                continue  # a pair we do not record: kept raw only
            outs = join.on_message(parsed.events, ts, seq)
            if outs:
                self._write(tap, pair, session, outs)
            if parsed.trades:
                fresh = self.ctx.dedup(pair).fresh(parsed.trades)
                tap.trades(pair, session, ts, fresh, "socket")
            if sink.full:
                await sink.room()
