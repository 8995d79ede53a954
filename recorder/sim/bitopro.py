"""BitoPro API: public REST v3, one signed GET (`/v3/accounts/balance`), and path-selected websocket streams.

Per the docs (exchanges.md §3): REST pair ids lower case (upper case accepted too), order book without timestamp,
trade `timestamp` in seconds (a string, as in the real 2024 recording), candle `timestamp` in ms with zero-volume
candles omitted. WS envelopes carry ms timestamps and upper-case pairs, TRADE `data[].timestamp` is seconds;
ORDER_BOOK pushes are full top-N snapshots at most once per 200 ms grid tick when the book changed, plus one right
after connect.

Captured from the live venue (issue 13) and reproduced here: only the first ORDER_BOOK frame after connecting is
exact; later pushes round amounts (and totals) to the pair's `amountPrecision` (0.00212753 -> 0.0021; here
amount_dp - 2 decimals, half up, never below one unit [INF]); a pushed frame is repeated identically at the next grid tick when the book did not change again;
a quiet pair gets no frame at all; TRADE pushes carry the full recent list (here the last 20), newest first, items
with the 4 keys timestamp/price/amount/isBuyer; the server pings every 1 s (the docs say 20 s) and drops clients
that do not pong within 5 s; a bad limit or pair is HTTP 422 {"error": ...}, limit=0 serves 5 levels, and an
unknown pair in a websocket path is HTTP 200 with an empty body.
The signed GET checks HMAC-SHA384 of the payload (the published test vector verifies); the nonce is not checked
for freshness, because the docs state no window and the published vector's nonce is from 2019.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import datetime, timezone

from aiohttp import WSMsgType, web

from recorder.sim.engine import BUY, SELL, Event, Market, NewOrder, fmt
from recorder.sim.engineio_server import run_tasks
from recorder.sim.plumbing import Conn, Hub, VenueContext, json_response, rest_middleware
from recorder.venues.signing import bitopro_signature

BOOK_LIMITS = (1, 5, 10, 20, 30, 50)
RESOLUTIONS = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "3h": 10800, "4h": 14400, "6h": 21600,
               "12h": 43200, "1d": 86400, "1w": 604800, "1M": "1M"}
EVENT_NS = uuid.UUID("6f1c8f9e-5b7d-4c1e-9a61-3b2a7d0e4c11")


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


#: TRADE pushes list this many recent trades.
TRADE_LIST = 20


def amount_precision(m: Market) -> int:
    """The pair's `amountPrecision`: socket books after the first frame are rounded to it."""
    return max(m.spec.amount_dp - 2, 0)


def _rounded(lots: int, unit: int) -> int:
    """Lots rounded half up to a multiple of unit, never below one unit."""
    return max((lots + unit // 2) // unit * unit, unit)


def book_side(m: Market, side: str, limit: int, rounded: bool = False) -> list[dict]:
    """Top `limit` levels: price, amount, order count and cumulative `total` amount, best first (amounts rounded
    to amountPrecision when `rounded`, as the live socket does after its first frame)."""
    pdp, adp = m.spec.price_dp, m.spec.amount_dp
    unit = 10 ** (adp - amount_precision(m))
    out, total = [], 0
    for p, v, n in m.book.depth_levels(side, limit):
        total += v
        a, t = (_rounded(v, unit), _rounded(total, unit)) if rounded else (v, total)
        out.append({"amount": fmt(a, adp), "count": n, "price": fmt(p, pdp), "total": fmt(t, adp)})
    return out


class BitoProVenue:
    """BitoPro REST + WS on one port; `on_tick` (every 200 ms grid tick) pushes changed order books."""

    tick_ns = 200_000_000  # the live venue pushes on a 200 ms grid (its docs: "every second when updated")

    def __init__(self, ctx: VenueContext, ping_s: float = 1.0, pong_timeout_s: float = 5.0) -> None:
        self.ctx = ctx
        self.hub = Hub(ctx)
        self.ping_s, self.pong_timeout_s = ping_s, pong_timeout_s
        self._dirty: set[str] = set()
        self._repeat: dict[tuple, str] = {}  # topic -> its last push, repeated at the next grid tick
        self._event_n = 0
        self.app = web.Application(middlewares=[rest_middleware(ctx, self.error, ("/v3/accounts",))])
        self.app.add_routes([
            web.get("/v3/order-book/{pair}", self.order_book),
            web.get("/v3/trades/{pair}", self.trades),
            web.get("/v3/trading-history/{pair}", self.trading_history),
            web.get("/v3/provisioning/trading-pairs", self.trading_pairs),
            web.get("/v3/provisioning/currencies", self.currencies),
            web.get("/v3/tickers", self.tickers),
            web.get("/v3/tickers/{pair}", self.tickers),
            web.get("/v3/accounts/balance", self.balance),
            web.get("/ws/v1/pub/{stream}", self.ws),
            web.get("/ws/v1/pub/{stream}/{spec}", self.ws),
        ])

    def background(self) -> list:
        return [self.hub.run_reaper()]

    def error(self, status: int, message: str, path: str = "") -> web.Response:
        return json_response({"error": message}, status)

    def _market(self, request: web.Request) -> Market:
        m = self.ctx.market(request.match_info["pair"])
        if m is None:
            raise web.HTTPUnprocessableEntity(text='{"error":"pair not found"}', content_type="application/json")
        return m

    def _event_id(self) -> str:
        self._event_n += 1
        return str(uuid.uuid5(EVENT_NS, f"{self.ctx.name}:{self._event_n}"))

    # --- websocket --------------------------------------------------------------------------------------
    def _book_frame(self, m: Market, limit: int, ts_ns: int, rounded: bool = False) -> str:
        ms = ts_ns // 1_000_000
        return json.dumps({"event": "ORDER_BOOK", "eventID": self._event_id(), "pair": m.spec.name, "limit": limit,
                           "scale": 0, "bids": book_side(m, BUY, limit, rounded),
                           "asks": book_side(m, SELL, limit, rounded), "timestamp": ms, "datetime": iso_ms(ms)},
                          separators=(",", ":"))

    def publish(self, market: Market, events: list[Event]) -> None:
        self._dirty.add(market.spec.name)
        pair, pdp, adp = market.spec.name, market.spec.price_dp, market.spec.amount_dp
        topic = ("trades", pair)
        if not any(topic in c.topics for c in self.hub.conns):
            return
        filled = [e for e in events if isinstance(e, NewOrder) and e.fills]
        if not filled:
            return
        ms = filled[-1].ts // 1_000_000
        data = [{"timestamp": t.ts // 1_000_000_000, "price": fmt(t.price, pdp), "amount": fmt(t.lots, adp),
                 "isBuyer": t.taker_side == BUY} for t in list(reversed(market.trades))[:TRADE_LIST]]
        self.hub.broadcast([json.dumps({"event": "TRADE", "eventID": self._event_id(), "pair": pair, "timestamp": ms,
                                        "datetime": iso_ms(ms), "data": data}, separators=(",", ":"))], topic)

    def on_tick(self, market: Market, ts_ns: int) -> None:
        """A grid tick passed: push each subscribed top-N snapshot of a book that changed (or repeat the last)."""
        pair = market.spec.name
        limits = {t[2] for c in self.hub.conns for t in c.topics if t[0] == "order-books" and t[1] == pair}
        dirty = pair in self._dirty
        self._dirty.discard(pair)
        for limit in sorted(limits):
            topic = ("order-books", pair, limit)
            if dirty:
                frame = self._repeat[topic] = self._book_frame(market, limit, ts_ns, rounded=True)
            else:  # unchanged: the last push once more, identical; then a quiet pair gets no frame at all
                frame = self._repeat.pop(topic, None)
            if frame is not None:
                self.hub.broadcast([frame], topic)

    def _parse_streams(self, stream: str, spec: str) -> frozenset:
        topics = set()
        for item in filter(None, spec.split(",")):
            name, _, limit = item.partition(":")
            m = self.ctx.market(name)
            if m is None:
                raise web.HTTPOk(text="")  # the live venue: HTTP 200, empty body, no upgrade
            if stream == "order-books":
                n = int(limit) if limit.isdigit() else 5
                if n not in BOOK_LIMITS:
                    raise web.HTTPBadRequest(text='{"error":"invalid limit"}', content_type="application/json")
                topics.add(("order-books", m.spec.name, n))
            else:
                topics.add(("trades", m.spec.name))
        return frozenset(topics)

    async def ws(self, request: web.Request) -> web.StreamResponse:
        """`/ws/v1/pub/{order-books|trades}/{PAIR[:limit][,…]}` or `…/{stream}?pairs=A:5,B`; no subscribe message."""
        stream = request.match_info["stream"]
        if stream not in ("order-books", "trades"):
            raise web.HTTPNotFound(text='{"error":"unknown stream"}', content_type="application/json")
        topics = self._parse_streams(stream, request.match_info.get("spec") or request.query.get("pairs", ""))
        if not topics:
            return self.error(400, "no pairs")
        ws = web.WebSocketResponse(autoping=False, compress=False)
        await ws.prepare(request)
        conn = self.hub.open(ws, request.transport)
        conn.topics = topics
        for t in sorted(topics):
            if t[0] == "order-books":
                m = self.ctx.market(t[1])
                conn.push([self._book_frame(m, t[2], m.last_ts)])
        conn.ready = True
        state = {"pong": time.monotonic()}
        try:
            await run_tasks(self._reader(conn, state), conn.run_sender(), self._pinger(conn, state))
        finally:
            self.hub.close(conn)
            await ws.close()
        return ws

    async def _reader(self, conn: Conn, state: dict) -> None:
        async for msg in conn.ws:
            if msg.type == WSMsgType.PING:
                await conn.ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                state["pong"] = time.monotonic()
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                return

    async def _pinger(self, conn: Conn, state: dict) -> None:
        """Ping every `ping_s`; close the socket when a ping has had no pong for `pong_timeout_s`."""
        unanswered: float | None = None  # when the oldest ping still waiting for its pong was sent
        while True:
            await asyncio.sleep(self.ping_s)
            if self.ctx.faults.stalled():
                continue
            now = time.monotonic()
            if unanswered is not None and state["pong"] >= unanswered:
                unanswered = None
            if unanswered is not None and now - unanswered > self.pong_timeout_s:
                await conn.ws.close(code=1008, message=b"pong timeout")
                return
            await conn.ws.ping()
            if unanswered is None:
                unanswered = now

    # --- REST -------------------------------------------------------------------------------------------
    async def order_book(self, request: web.Request) -> web.Response:
        m = self._market(request)
        try:
            limit = int(request.query.get("limit", 5)) or 5  # limit=0 serves the default 5
        except ValueError:
            limit = -1
        if limit not in BOOK_LIMITS:
            return self.error(422, "limit must be one of 1, 5, 10, 20, 30, 50")
        return json_response({"asks": book_side(m, SELL, limit), "bids": book_side(m, BUY, limit)})

    async def trades(self, request: web.Request) -> web.Response:
        """Latest trades, newest first; no trade id (as the venue); `isBuyer` = the taker bought."""
        m = self._market(request)
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        rows = [{"timestamp": str(t.ts // 1_000_000_000), "price": fmt(t.price, pdp), "amount": fmt(t.lots, adp),
                 "isBuyer": t.taker_side == BUY} for t in list(reversed(m.trades))[:1000]]
        return json_response({"data": rows})

    async def trading_history(self, request: web.Request) -> web.Response:
        m = self._market(request)
        res = RESOLUTIONS.get(request.query.get("resolution", ""))
        try:
            since, until = int(request.query["from"]), int(request.query["to"])
        except (KeyError, ValueError):
            return self.error(400, "resolution, from and to (unix seconds) are required")
        if res is None:
            return self.error(400, "invalid resolution")
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        rows = m.candles.query(res, since, until)
        return json_response({"data": [{"timestamp": str(b * 1000), "open": fmt(o, pdp), "high": fmt(h, pdp),
                                        "low": fmt(lo, pdp), "close": fmt(c, pdp), "volume": fmt(v, adp)}
                                       for b, o, h, lo, c, v, _ in rows]})

    async def trading_pairs(self, request: web.Request) -> web.Response:
        return json_response({"data": [
            {"pair": s.name.lower(), "base": s.base.lower(), "quote": s.quote.lower(), "basePrecision": "8",
             "quotePrecision": str(s.price_dp), "minLimitBaseAmount": fmt(1, s.amount_dp),
             "maxLimitBaseAmount": "1000000", "minMarketBuyQuoteAmount": "1", "orderOpenLimit": "200",
             "maintain": False, "orderBookQuoteScaleLevel": "0", "amountPrecision": str(amount_precision(m))}
            for m, s in ((m, m.spec) for m in self.ctx.markets.values())]})

    async def currencies(self, request: web.Request) -> web.Response:
        codes = sorted({c for m in self.ctx.markets.values() for c in (m.spec.base, m.spec.quote)})
        return json_response({"data": [
            {"currency": c.lower(), "withdrawFee": "0", "minWithdraw": "0", "maxWithdraw": "1000000",
             "maxDailyWithdraw": "1000000", "withdraw": True, "deposit": True, "depositConfirmation": "1"}
            for c in codes]})

    def _ticker(self, m: Market) -> dict:
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        day = [t for t in m.trades if t.ts >= m.last_ts - 86_400 * 10**9]
        if not day:
            return {"pair": m.spec.name.lower(), "lastPrice": "0", "isBuyer": False, "priceChange24hr": "0",
                    "volume24hr": "0", "high24hr": "0", "low24hr": "0"}
        first, last = day[0].price, day[-1].price
        return {"pair": m.spec.name.lower(), "lastPrice": fmt(last, pdp), "isBuyer": day[-1].taker_side == BUY,
                "priceChange24hr": f"{(last - first) * 100 / first:.2f}", "volume24hr": fmt(sum(t.lots for t in day), adp),
                "high24hr": fmt(max(t.price for t in day), pdp), "low24hr": fmt(min(t.price for t in day), pdp)}

    async def tickers(self, request: web.Request) -> web.Response:
        if "pair" in request.match_info:
            return json_response({"data": self._ticker(self._market(request))})
        return json_response({"data": [self._ticker(m) for m in self.ctx.markets.values()]})

    async def balance(self, request: web.Request) -> web.Response:
        """Signed GET: X-BITOPRO-APIKEY, -PAYLOAD (base64 JSON with a nonce), -SIGNATURE = HMAC-SHA384 hex."""
        key, payload, sig = (request.headers.get(f"X-BITOPRO-{h}") for h in ("APIKEY", "PAYLOAD", "SIGNATURE"))
        if not key or not payload or not sig:
            return self.error(401, "Missing authentication headers")
        if key != self.ctx.api_key:
            return self.error(401, "Invalid APIKEY")
        if sig != bitopro_signature(self.ctx.api_secret, payload):
            return self.error(401, "Invalid Signature")
        try:
            body = json.loads(base64.b64decode(payload, validate=True))
            int(body["nonce"])
        except (ValueError, KeyError, TypeError):
            return self.error(400, "Invalid payload")
        private = self.ctx.limits.get("private")
        if private and not private.allow(key):
            return self.error(429, "Too Many Requests")
        codes = sorted({c for m in self.ctx.markets.values() for c in (m.spec.base, m.spec.quote)})
        return json_response({"data": [{"currency": c.lower(), "amount": "0", "available": "0", "stake": "0",
                                        "tradable": True} for c in codes]})
