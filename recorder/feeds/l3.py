"""BTC-Alpha / bitexbit L3 book stream: socket.io `book_<PAIR>` events joined to group=0 REST snapshots.

One connection per venue carries every pair. At connect every pair buffers until its snapshot is
joined (feeds/join.py); a REST snapshot per pair is re-taken at every `snapshot_interval` boundary
(one hour) to check the tracked book, and a mismatch resyncs. A book message that cannot be parsed
(kept raw, rejected) is a lost message: its pair (every pair when the frame does not say which) gets
a `gap` row and a fresh snapshot on the same connection. A tracked book found wrong without a lost
message (an anomaly burst, a crossed book: a stall that discarded frames, reordered frames; or a grouped
snapshot that fits the tracked book's levels at no cut of its window) gets a `resync` row and a fresh
snapshot within seconds. Silence longer than the venue's heartbeat
reconnects; time the reader spends held back by the sink (back-pressure) is not silence.

With raw engine.io framing (`framing = "engineio"`) messages are bare JSON objects and new orders name no
pair: each pair gets its own connection (feeds/__init__.build) and its messages are that pair's.

Bursts of event frames take a compiled path (`_burst`): one scan of the whole burst into columns, each
steady pair's book kept by its FastBook, rows built as columns. A frame the scanner refuses, and every
pair that is joining, checking or starting an hour, goes the per-message Python path (`_frame`); both
write the same rows (tests/test_l3_fastpath.py).
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from recorder.rows import Level, ParseError
from recorder.transport import SocketIOClient, StreamSilent, TransportError
from recorder.transport.engineio import parse_packet
from recorder.venues import btcalpha_scan
from recorder.venues.common import loads

from . import columns as C
from . import l3batch
from .base import Healthy, StreamSession, VenueContext, fetch
from .book import L3Book
from .dedup import Recent
from .fastbook import FastBook
from .join import HOUR_NS, L3Join, Out, Ticket


#: Seconds the stream keeps buffering after a snapshot response before the cut is chosen: a REST
#: snapshot can run ahead of the socket, and messages it already contains must be seen to be placed.
JOIN_LOOKAHEAD = 2.0
#: Seconds a join the evidence does not yet fix is re-tried (every JOIN_RETRY s) as messages arrive (a
#: cancel's remaining amount places the fills of its order) before it gives up with a gap row.
JOIN_PATIENCE, JOIN_RETRY = 6.0, 0.5
#: Most frames read in one burst (bounds how long the loop runs without yielding).
BURST = 2048
#: A run of fewer compiled frames than this gives the sink tuples: building Arrow arrays costs more for a few.
SMALL = 200
#: Bursts (their moving average) of at least FAST_ON frames switch the compiled path on, below FAST_OFF off:
#: its fixed cost per burst (~50 us) only pays when messages come faster than they are read one by one.
FAST_ON, FAST_OFF = 24.0, 8.0
#: While the compiled path is on, a burst smaller than LINGER_BELOW frames is followed by a pause of
#: LINGER seconds, so the next burst gathers more frames (each burst has a fixed cost); rows wait for
#: the sink's own linger (50 ms) anyway.
LINGER, LINGER_BELOW = 0.002, 512
#: Conservation anomalies (fill/cancel of an unknown order, overfill...) since a snapshot that make the book
#: known wrong: resync. A single one is counted only (a venue's odd message).
ANOMALY_BURST = 3


@dataclass
class _Grouped:
    """A grouped snapshot of one pair in flight, then answered (levels, raw seq, when to fit it)."""

    pair: str
    ticket: Ticket
    holds: int  # the reader's back-pressure holds when the request went out
    levels: list[Level] | None = None
    seq: int | None = None
    due: float = 0.0


def warm() -> None:
    """Compile (or load from numba's cache) the compiled path's kernels before any socket is read."""
    btcalpha_scan.warm()
    packed = l3batch.pack(['42["book_A_B",{"date":1700000000.5,"oid":1,"type":"buy","price":"1","amount":1,"trades":[]}]'],
                          [0])
    scan = btcalpha_scan.scan_frames(packed.buf, packed.starts, packed.ends, btcalpha_scan.Names(["book_A_B"]), False)
    fast = FastBook(L3Book(), Recent(4))
    fast.apply(scan, np.arange(1), scan.ts_event[scan.frame], np.zeros(1, np.int8))
    l3batch.decimals(scan.price_hi, scan.price_lo)
    fast.to_book()


def subscription(cfg, channel: str) -> str | None:
    """The frame that subscribes `channel` (config `subscribe`): a socket.io emit, or an engine.io message
    with the plain channel name or the `subscribe_json` template; None for `none`."""
    if cfg.subscribe == "none":
        return None
    if cfg.subscribe == "emit":
        return f'42["subscribe",{json.dumps(channel)}]'
    if cfg.subscribe == "text":
        return "4" + channel
    return "4" + cfg.subscribe_json.replace("{channel}", channel)


class L3BookFeed:
    """The book stream of one venue (all its pairs, or with `pairs` those only) with snapshots, checks and
    socket trades."""

    def __init__(self, ctx: VenueContext, venue_mod: ModuleType, *, snapshot_interval: float = 3600.0,
                 max_buffer: int = 200_000, join_lookahead: float = JOIN_LOOKAHEAD,
                 join_patience: float = JOIN_PATIENCE,
                 pairs: Sequence[str] | None = None) -> None:
        self.ctx = ctx
        self.mod = venue_mod
        self._pairs = list(ctx.cfg.pairs if pairs is None else pairs)
        self.name = f"{ctx.venue}:book" if pairs is None else f"{ctx.venue}:book:{','.join(self._pairs)}"
        #: raw engine.io framing: the one pair whose channel this connection subscribed (messages name none)
        self._raw_pair = self._pairs[0] if ctx.cfg.framing == "engineio" else None
        if self._raw_pair is not None and len(self._pairs) != 1:
            raise ValueError("raw engine.io framing takes one connection per pair")
        self.snapshot_interval = snapshot_interval
        self.join_lookahead = join_lookahead
        self.join_patience = join_patience
        self.max_buffer = max_buffer
        self.joins = {p: L3Join() for p in self._pairs}
        self._last_rx = 0.0
        self._held = False  # the reader is waiting for room in the sink: silence is not the venue's
        self._lost: asyncio.Queue[str] = asyncio.Queue()  # pairs waiting for a resync snapshot (per connection)
        self._queued: set[str] = set()
        self._anomaly_base = 0  # anomalies of books since forgotten (the metric is a counter: it never goes back)
        self._names = btcalpha_scan.Names([venue_mod.channel(p) for p in self._pairs])
        self._cancel_id = venue_mod.CANCEL_ID_REQUIRED
        self._burst_avg = 0.0
        self._compiled = False
        self._holds = 0  # times the reader was held back by the sink
        self._grouped: asyncio.Queue[_Grouped] | None = None  # answered grouped snapshots (per connection)

    def _write(self, tap, pair: str, session: int, outs: list[Out]) -> None:
        for o in outs:
            tap.events(pair, session, o.ts_recv, o.msg_seq, o.events)

    def _anomalies(self, tap) -> None:
        total = self._anomaly_base + sum(sum(j.anomalies().values()) for j in self.joins.values())
        tap.metrics.counters[("book_anomalies", tap.feed, "")] = total
        tap.metrics.counters[("dropped_duplicates", tap.feed, "")] = sum(j.duplicates for j in self.joins.values())
        tap.metrics.set("queue_depth", tap.feed, sum(j.buffered for j in self.joins.values()))
        tap.metrics.set("book_orders", tap.feed, sum(j.orders for j in self.joins.values()))

    async def _snapshot(self, tap, http, session: int, pair: str, stream: str) -> None:
        """Take a snapshot and join it. A join the evidence does not fix yet is tried again as messages
        arrive (for JOIN_PATIENCE s), while one more snapshot is taken: a quiet pair's next snapshot decides
        at once, a busy pair's later cancels decide this one. Whichever joins first wins."""
        join = self.joins[pair]
        sent, epoch = join.request_sent(), join.epoch
        url = self.mod.orderbook_url(self.ctx.cfg.urls["rest_url"], pair, 0)
        res, _, parsed = await fetch(http, tap, session, "rest:orderbook", pair, url,
                                     lambda r: self.mod.parse_orderbook(r.body, pair, r.ts_recv, 0))
        if parsed is None:
            raise TransportError(f"{pair} snapshot unusable (HTTP {res.status})")
        await asyncio.sleep(self.join_lookahead)
        waited, again = 0.0, False
        while True:
            if join.epoch != epoch or not join.joining:
                return  # a message was lost meanwhile (this snapshot may predate it), or another one joined
            buffered = join.buffered
            outs = join.on_snapshot(parsed.events, res.ts_recv, sent)
            j = join.last_join
            if j.exact:
                break
            if not again:
                again = True
                self._queue_snapshot(pair)
            if not j.consistent or waited >= self.join_patience:
                why = (f"cuts {j.lower}..{j.upper} of {buffered} buffered msgs fit and give different books "
                       f"({j.undecided} orders)" if j.consistent else
                       f"no cut of {buffered} buffered msgs fits the snapshot (reordered or lost frames)")
                tap.event(session, stream, "gap", f"snapshot join not exact: {why}; book unknown until the "
                                                  "next snapshot", pair)
                return
            await asyncio.sleep(JOIN_RETRY)
            waited += JOIN_RETRY
        self._write(tap, pair, session, outs)
        tap.event(session, stream, "snapshot",
                  f"R+S {sum(1 for e in parsed.events if e.action == 'S')} orders; cut {j.cut} of "
                  f"{buffered} buffered msgs ({j.cut} already in the snapshot; {j.candidates} cuts fit)", pair)

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
                if not ok:
                    tap.metrics.inc("resyncs", tap.feed)
                self._write(tap, pair, session, outs)

    async def _watchdog(self, tap, session: int, stream: str) -> None:
        limit = self.ctx.cfg.heartbeat
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            self._anomalies(tap)
            self._diverged(tap, session, stream)
            silent = time.monotonic() - self._last_rx
            if silent > limit and not self._held:
                raise StreamSilent(f"no message for {silent:.1f}s (heartbeat {limit}s)",
                                   since_ns=time.time_ns() - int(silent * 1e9))
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
            self._anomaly_base += sum(j.anomalies().values())
            j.reset()
        self._lost, self._queued, self._grouped = asyncio.Queue(), set(), asyncio.Queue()
        pairs = self._pairs
        emits = [f for f in (subscription(cfg, self.mod.channel(p)) for p in pairs) if f is not None]
        gap_detail = "book stream lost; book unknown until the next snapshot"
        try:
            with StreamSession(tap, session, stream, pairs, gap_detail, pair=self._raw_pair) as conn:
                async with SocketIOClient(ctx.http_session, cfg.urls["ws_url"], eio=cfg.eio, framing=cfg.framing,
                                          path=cfg.ws_path, emits=emits) as sio:
                    self._last_rx = time.monotonic()
                    found = f"EIO={sio.eio} ({sio.detected})" if sio.detected else f"EIO={sio.eio or '?'}"
                    conn.connect(f"{sio.url} ({len(pairs)} pairs, {cfg.framing} framing, {found})")
                    async with asyncio.TaskGroup() as tg:
                        snaps = [tg.create_task(self._snapshot(tap, http, session, p, stream)) for p in pairs]
                        tg.create_task(self._watchdog(tap, session, stream))
                        tg.create_task(self._checks(tap, http, session, stream))
                        tg.create_task(self._read(sio, tap, session, stream))
                        tg.create_task(self._resyncs(tap, http, session, stream))
                        tg.create_task(self._fit_grouped(tap, session, stream))
                        await asyncio.gather(*snaps)
                        healthy()
        finally:
            self._grouped = None
            self._anomalies(tap)

    def _lose(self, tap, session: int, stream: str, pair: str | None, raw_seq: int, ts_recv: int) -> None:
        """A book message was lost (kept raw, rejected): the pair's book is unknown until a snapshot requested
        after the loss is joined (one taken earlier is dropped: it may predate the lost message). The gap row
        is stamped with the lost message's receive time: frames after it in its burst may be processed (and
        joined after the snapshot) later than they were received, and the gap must start before them."""
        if pair is not None and pair not in self.joins:
            return  # a pair we do not record
        for p in ([pair] if pair is not None else list(self.joins)):
            join = self.joins[p]
            if join.book is not None:
                tap.event(session, stream, "gap", f"book message lost (raw seq {raw_seq}); book unknown until "
                                                  f"the next snapshot", p, ts=ts_recv)
            self._resnapshot(p)

    def _diverged(self, tap, session: int, stream: str) -> None:
        """Resync each pair whose tracked book is known wrong though no message was seen lost."""
        for pair, join in self.joins.items():
            if join.joining:
                continue
            found = join.anomalies()
            n = sum(found.values())
            if n >= ANOMALY_BURST:
                why = f"{n} book anomalies since the snapshot ({', '.join(f'{k} {v}' for k, v in sorted(found.items()))})"
            elif join.crossed():
                why = "crossed book"
            else:
                continue
            tap.event(session, stream, "resync", f"{why}: book unknown until a fresh snapshot", pair)
            tap.metrics.inc("resyncs", tap.feed)
            self._resnapshot(pair)

    def grouped_sent(self, pair: str) -> _Grouped | None:
        """A grouped snapshot of the pair is about to be requested (GroupedWatch): None when its book is not
        tracked now (no connection, or joining)."""
        if self._grouped is None:
            return None
        t = self.joins[pair].grouped_sent()
        return None if t is None else _Grouped(pair, t, self._holds)

    def grouped_done(self, token: _Grouped, levels: list[Level] | None, seq: int | None) -> None:
        """Its response was parsed (levels), or the request failed (None): fit it after the join's lookahead,
        by then the messages a snapshot running ahead of the socket holds have arrived."""
        join = self.joins[token.pair]
        if levels is None or self._grouped is None:
            join.grouped_drop(token.ticket)
            return
        join.grouped_received(token.ticket)
        token.levels, token.seq, token.due = levels, seq, time.monotonic() + self.join_lookahead
        self._grouped.put_nowait(token)  # at most one per pair per grouped poll in the last lookahead

    async def _fit_grouped(self, tap, session: int, stream: str) -> None:
        """Resync each pair whose grouped snapshot fits its tracked book at no cut of the snapshot's window."""
        queue = self._grouped
        while True:
            g = await queue.get()
            await asyncio.sleep(max(0.0, g.due - time.monotonic()))
            join = self.joins[g.pair]
            if self._held or self._holds != g.holds:  # messages the snapshot holds may be unread: no verdict
                join.grouped_drop(g.ticket)
                continue
            fit = join.grouped_fit(g.ticket, g.levels)
            if fit is None or fit.fits:
                continue
            tap.event(session, stream, "resync", f"grouped snapshot (raw seq {g.seq}) fits the tracked book at none "
                                                 f"of the {fit.cuts} cuts from its request to {self.join_lookahead:g}s "
                                                 f"after its response{fit.where()}; book unknown until a fresh "
                                                 "snapshot", g.pair)
            tap.metrics.inc("resyncs", tap.feed)
            self._resnapshot(g.pair)

    def _resnapshot(self, pair: str) -> None:
        """Forget the pair's book (its anomalies stay counted) and queue a fresh snapshot on this connection."""
        join = self.joins[pair]
        self._anomaly_base += sum(join.anomalies().values())
        join.reset()
        self._queue_snapshot(pair)

    def _queue_snapshot(self, pair: str) -> None:
        """Ask the connection's resync task for a fresh snapshot of the pair (once while one is queued)."""
        if pair not in self._queued:
            self._queued.add(pair)
            self._lost.put_nowait(pair)

    async def _resyncs(self, tap, http, session: int, stream: str) -> None:
        """Take a fresh snapshot for each pair that lost a message or could not be joined exactly (owned
        by the connection's task group); pairs are snapshotted concurrently, each task owned here."""
        async with asyncio.TaskGroup() as tg:
            while True:
                pair = await self._lost.get()
                self._queued.discard(pair)
                tg.create_task(self._snapshot(tap, http, session, pair, stream))

    async def _read(self, sio: SocketIOClient, tap, session: int, stream: str) -> None:
        sink, texts, stamps = self.ctx.sink, [], []
        while True:
            try:
                frame = await sio.recv_batch(texts, stamps, BURST)
            finally:  # frames read before the connection failed (or the feed was stopped) are kept
                n = len(texts)
                if n:
                    self._last_rx = time.monotonic()
                    self._burst(tap, session, stream, l3batch.pack(texts, stamps))
                    texts.clear()
                    stamps.clear()
            if self._compiled and n < LINGER_BELOW:
                await asyncio.sleep(LINGER)
            if frame is not None:
                self._last_rx = time.monotonic()
                self._frame(tap, session, stream, frame)
            if sink.full:
                self._held = True
                self._holds += 1
                try:
                    await sink.room()
                finally:  # silence is measured again from the moment we read again
                    self._held = False
                    self._last_rx = time.monotonic()

    def _route(self, scan, packed: l3batch.Packed) -> np.ndarray:
        """Per frame: True for the compiled path. A pair goes compiled when its book is steady, the burst
        stays in the hour of its last message, and no frame the scanner refused may touch its book."""
        blocked: set[str] = set()
        for i in np.flatnonzero(~scan.ok).tolist():
            touched = self._touched(packed.raw(i))
            if touched is None:
                return np.zeros(len(scan.ok), bool)
            blocked |= touched
        fast = np.zeros(len(self._pairs), bool)
        hours = packed.ts // HOUR_NS
        for i, p in enumerate(self._pairs):
            sel = scan.pair == i
            if p in blocked or not sel.any():
                continue
            join = self.joins[p]
            if join.hour is not None and (hours[sel] == join.hour).all() and join.go_fast():
                fast[i] = True
        return scan.ok & fast[np.maximum(scan.pair, 0)]

    def _touched(self, raw: bytes) -> set[str] | None:
        """Pairs whose book a refused frame may change on the Python path (None: every pair's)."""
        pair = self.mod.pair_in_frame(raw)
        if pair is not None:
            return {pair}
        frame = parse_packet(raw, 0)[2]
        if frame.kind == "malformed" or (frame.kind == "event" and frame.name.startswith("book_")):
            return None  # a book message of no known pair is lost: every pair resyncs
        return set()  # another event, or another namespace: kept raw only

    def _burst(self, tap, session: int, stream: str, packed: l3batch.Packed) -> None:
        """Frames read in one burst, in order: runs of compiled frames and frames taken one by one."""
        n = len(packed.ts)
        self._burst_avg += 0.1 * (n - self._burst_avg)
        self._compiled = self._burst_avg >= (FAST_OFF if self._compiled else FAST_ON)
        redact = tap.sink.redact
        if not self._compiled or (redact and redact.hit(packed.data)):  # the per-message path redacts raw rows
            self._one_by_one(tap, session, stream, packed, 0, n)
            return
        scan = btcalpha_scan.scan_frames(packed.buf, packed.starts, packed.ends, self._names, self._cancel_id)
        route = self._route(scan, packed)
        cuts = np.flatnonzero(route[1:] != route[:-1]) + 1
        for f0, f1 in zip([0, *cuts.tolist()], [*cuts.tolist(), n]):
            if route[f0]:
                self._fast_run(tap, session, stream, packed, scan, np.arange(f0, f1))
            else:
                self._one_by_one(tap, session, stream, packed, f0, f1)

    def _one_by_one(self, tap, session: int, stream: str, packed: l3batch.Packed, f0: int, f1: int) -> None:
        """Frames f0..f1 of a burst through the per-message path."""
        for i in range(f0, f1):
            self._frame(tap, session, stream, parse_packet(packed.raw(i), int(packed.ts[i]))[2])

    def _fast_run(self, tap, session: int, stream: str, packed: l3batch.Packed, scan, frames: np.ndarray) -> None:
        """Consecutive compiled frames (their pairs steady): books, trade memory, then rows in arrival order."""
        keep = np.zeros(len(scan.ok), np.int8)
        fresh = np.zeros(len(scan.action), bool)
        ev_ts = scan.ts_event[scan.frame]
        ev_pair = scan.pair[scan.frame]
        fills = (scan.action == ord("F")) & (scan.frame >= frames[0]) & (scan.frame <= frames[-1])  # this run's
        pairs = scan.pair[frames]
        present = [(i, p, pairs == i) for i, p in enumerate(self._pairs)]
        present = [(i, p, sel) for i, p, sel in present if sel.any()]
        for i, p, sel in present:
            self.joins[p].apply_fast(scan, frames[sel], ev_ts, keep)
            fe = np.flatnonzero(fills & (ev_pair == i))
            if len(fe):
                tids = scan.trade_id[fe]
                occ = l3batch.occurrences(scan.frame[fe], tids)
                fresh[fe] = self.ctx.dedup(p).fresh_ids(tids.tolist(), occ.tolist())
        c = l3batch.counts(scan, frames, keep, fresh)
        seq0 = self.ctx.sink.next_seq(c.total)
        small = len(frames) < SMALL
        for _, p, select in present:
            if small:
                for table, rows in l3batch.rows(scan, packed, frames, keep, c, seq0, session, stream, select).items():
                    tap.sink.extend(table, tap.exchange, p, rows)
                continue
            for table, cols in l3batch.columns(scan, packed, frames, keep, c, seq0, session, stream, select).items():
                tap.sink.extend_columns(table, tap.exchange, p, C.typed(table, cols), len(cols["seq"]))
        last = frames[-1]
        tap.metrics.seen_many(tap.feed, len(frames), int((packed.ends[frames] - packed.starts[frames]).sum()))
        tap.lag(int(packed.ts[last]), int(scan.ts_event[last]))

    def _frame(self, tap, session: int, stream: str, frame) -> None:
        """One frame the per-message Python path takes."""
        mod, joins = self.mod, self.joins
        ts = frame.ts_recv
        if frame.kind == "message" and self._raw_pair is not None:
            self._message(tap, session, stream, frame)
            return
        if frame.kind != "event":
            if frame.kind == "malformed":
                pair = mod.pair_in_frame(frame.raw)
                seq = tap.reject(session, stream, pair, ts, frame.raw, frame.error or "malformed frame")
                self._lose(tap, session, stream, pair, seq, ts)
            else:
                tap.raw(session, stream, None, ts, frame.raw)
            return
        self._event(tap, session, stream, frame.raw, ts, frame.name, frame.args[0] if frame.args else None)

    def _message(self, tap, session: int, stream: str, frame) -> None:
        """A bare engine.io message (raw framing): the subscribed pair's order or cancel object."""
        pair = self._raw_pair
        try:
            obj = loads(frame.raw[1:])
        except ParseError as e:
            seq = tap.reject(session, stream, pair, frame.ts_recv, frame.raw, str(e))
            self._lose(tap, session, stream, pair, seq, frame.ts_recv)
            return
        self._event(tap, session, stream, frame.raw, frame.ts_recv, self.mod.channel(pair), obj)

    def _event(self, tap, session: int, stream: str, raw: bytes, ts: int, name: str, arg) -> None:
        """One book message (event name, its object): raw row, book events, socket trades."""
        mod, joins = self.mod, self.joins
        try:
            parsed = mod.parse_book_event(name, arg)
        except ParseError as e:
            try:
                pair = mod.pair_of_event(name)
            except ParseError:
                pair = None
            seq = tap.reject(session, stream, pair, ts, raw, str(e))
            if pair is not None or name.startswith("book_"):  # a book message: lost
                self._lose(tap, session, stream, pair, seq, ts)
            return
        pair = parsed.pair
        seq = tap.raw(session, stream, pair, ts, raw)
        if parsed.ts_event is not None:
            tap.lag(ts, parsed.ts_event)
        join = joins.get(pair)
        if join is None:
            return  # a pair we do not record: kept raw only
        outs = join.on_message(parsed.events, ts, seq)
        if outs:
            self._write(tap, pair, session, outs)
        if parsed.trades:
            fresh = self.ctx.dedup(pair).fresh(parsed.trades)
            tap.trades(pair, session, ts, fresh, "socket")
