"""BitoPro websocket streams: ORDER_BOOK pushes (full top-N snapshots -> book_levels) and TRADE pushes.

Captured from the live venue: only the first ORDER_BOOK frame of a connection is exact, later ones round amounts to
the pair's amountPrecision, so those levels are stored with source `ws_rounded` (the `rest_book` channel takes exact
books to check them against). TRADE pushes carry the full recent list, newest first, repeated across pushes: the
trade memory keeps the new ones, written oldest first. Identical frames repeat and a quiet pair may send nothing
for minutes: liveness is the server's 1 s pings (the client's idle timeout counts them), not data frames.
"""
from __future__ import annotations


from recorder.rows import ParseError
from recorder.transport import TransportError, WebSocketClient
from recorder.venues import bitopro

from .base import Healthy, StreamSession, VenueContext


class BitoProStream:
    """One websocket for all pairs of one kind ("book" or "trades"); the URL path selects the stream."""

    def __init__(self, ctx: VenueContext, kind: str) -> None:
        self.ctx, self.kind = ctx, kind
        self.name = f"bitopro:ws_{kind}"

    def url(self) -> str:
        """The stream URL for every configured pair."""
        cfg = self.ctx.cfg
        if self.kind == "book":
            return bitopro.orderbook_stream_url(cfg.urls["ws_url"], {p: cfg.book_limit for p in cfg.pairs})
        return bitopro.trades_stream_url(cfg.urls["ws_url"], list(cfg.pairs))

    async def run(self, healthy: Healthy) -> None:
        """One connection, read until it fails."""
        ctx = self.ctx
        tap = ctx.tap(self.name)
        session = tap.new_session()
        stream = f"ws:{self.kind}"
        pairs = set(ctx.cfg.pairs)
        with StreamSession(tap, session, stream, ctx.cfg.pairs, f"{self.kind} stream lost") as conn:
            async with WebSocketClient(ctx.http_session, self.url(), idle_timeout=ctx.cfg.heartbeat) as ws:
                conn.connect(ws.url)
                first = True
                exact: set[str] = set()  # pairs whose first (exact) book frame this connection has had
                async for frame in ws:
                    ts = frame.ts_recv
                    try:
                        parsed = bitopro.parse_ws(frame.raw)
                    except ParseError as e:
                        tap.reject(session, stream, None, ts, frame.raw, str(e))
                        continue
                    seq = tap.raw(session, stream, parsed.pair, ts, frame.raw)
                    if parsed.ts_event is not None:
                        tap.lag(ts, parsed.ts_event)
                    if parsed.pair in pairs:
                        if parsed.levels:
                            src = "ws_rounded" if parsed.pair in exact else "ws"
                            exact.add(parsed.pair)
                            tap.levels(parsed.pair, session, parsed.ts_event, ts, seq, parsed.levels, src)
                        if parsed.trades:  # newest first: the new ones are written oldest first
                            fresh = ctx.dedup(parsed.pair).fresh(parsed.trades)
                            tap.trades(parsed.pair, session, ts, fresh[::-1], "socket")
                    if first:
                        healthy()
                        first = False
                    if ctx.sink.full:
                        await ctx.sink.room()
        raise TransportError("stream ended")  # pragma: no cover - the client raises instead of ending
