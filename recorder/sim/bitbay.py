"""BitBay API: the signed legacy Trading API, the legacy public `/API/Public/<MARKET>/<cat>.json`, and the Zonda REST
endpoints (`/rest/trading/...`) that current clients (ccxt `zonda`) use for books, trades and candles.

Trading API per the seed (004): form body `method=..&moment=..`, `API-Key`, `API-Hash` = HMAC-SHA512 of the body,
`moment` within 5 s of server (wall) time else code 503, bad hash code 502, unknown key 501, 1 request/s per key.
Errors are HTTP 200 with `{"code":N,"message":...}`; the rate-limit answer is HTTP 429 with code 429 [INF: the
seed lists no code for it]; Zonda's are `{"status":"Fail","errors":[...]}` (ACTION_LIMIT_EXCEEDED on a 429).
`orderbook` lists every open offer with `price` = rate*quantity exactly ("amount of
currency for whole offer"). Legacy public numbers are JSON numbers and `tid` a string; `trades.json?since=<tid>`
returns trades with tid > since, ascending, 50 per page; without `since` the OLDEST 50 (the real venue starts in 2014:
vendor docs, ccxt issue 2320), and `sort=desc` without `since` the newest 50, newest first.
Zonda REST bodies are strings with ms timestamps, 60 requests/min per IP ("others" in its docs).
Zonda websocket `/websocket/` (exchanges.md §4.4): `{"action":"subscribe-public","module":"trading","path":
"orderbook/<mkt>"}` is confirmed, then every book change is a `push` with `seqNo` (the market's event sequence, the
same number REST `orderbook` reports) and `changes` carrying each touched level's new absolute amount (`ca`) or
`remove`; `{"action":"ping"}` is answered `{"action":"pong"}`.
"""
from __future__ import annotations

import itertools
import json
import time
import uuid
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from recorder.sim.engine import BUY, SELL, Cancel, Market, fmt, fmt_num
from recorder.sim.plumbing import Hub, Num, VenueContext, json_response, rest_middleware, serve_ws
from recorder.venues.signing import bitbay_hash

ZONDA_RESOLUTIONS = (60, 180, 300, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400, 259200, 604800)
TRADE_NS = uuid.UUID("0b9c4f52-2d0e-4a8e-8a53-51f2b8a1c7d3")


class BitBayVenue:
    """BitBay legacy Trading + Public API and Zonda REST on one port (no socket feed)."""

    tick_ns = None

    def __init__(self, ctx: VenueContext) -> None:
        self.ctx = ctx
        self.hub = Hub(ctx)
        self.app = web.Application(middlewares=[rest_middleware(ctx, self.error, ("/API/",))])
        self.app.add_routes([
            web.post("/API/Trading/tradingApi.php", self.trading),
            web.get("/API/Public/{market}/{cat}.json", self.public),
            web.get("/rest/trading/ticker", self.z_ticker),
            web.get("/rest/trading/ticker/{market}", self.z_ticker),
            web.get("/rest/trading/orderbook/{market}", self.z_orderbook),
            web.get("/rest/trading/transactions/{market}", self.z_transactions),
            web.get("/rest/trading/candle/history/{market}/{resolution}", self.z_candles),
            web.get("/websocket/", self.z_ws),
            web.get("/websocket", self.z_ws),
        ])
        self._orders: dict[str, dict[int, list]] = {}  # pair -> oid -> [side, price, lots]: the book as pushed

    def publish(self, market: Market, events: list) -> None:
        """No socket feed in the seed; Zonda's websocket pushes each event's level changes (seqNo = event seq)."""
        pair = market.spec.name
        orders = self._orders.setdefault(pair, {})
        code = f"{market.spec.base}-{market.spec.quote}"
        topic = ("orderbook", pair)
        send = any(topic in c.topics for c in self.hub.conns)
        frames = []
        for e in events:
            touched = self._mirror(orders, e)
            if send:
                frames.append(self._z_push(market, code, orders, touched, e.seq, e.ts))
        if frames:
            self.hub.broadcast(frames, topic)

    @staticmethod
    def _mirror(orders: dict[int, list], e) -> set[tuple[str, int]]:
        """Apply one engine event to the mirror; the (side, price) levels it touched."""
        touched = set()
        if isinstance(e, Cancel):
            orders.pop(e.oid, None)
            return {(e.side, e.price)}
        for f in e.fills:
            o = orders[f.maker_oid]
            o[2] -= f.lots
            if o[2] == 0:
                del orders[f.maker_oid]
            touched.add((f.maker_side, f.price))
        if e.remaining:
            orders[e.oid] = [e.side, e.price, e.remaining]
            touched.add((e.side, e.price))
        return touched

    def _z_push(self, m: Market, code: str, orders: dict[int, list], touched, seq: int, ts: int) -> str:
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        changes = []
        for side, price in sorted(touched):
            at = [o[2] for o in orders.values() if o[0] == side and o[1] == price]
            entry = {"marketCode": code, "entryType": "Buy" if side == BUY else "Sell", "rate": fmt(price, pdp)}
            if at:
                v = fmt(sum(at), adp)
                changes.append({**entry, "action": "update",
                                "state": {"ra": fmt(price, pdp), "ca": v, "sa": v, "pa": v, "co": len(at)}})
            else:
                changes.append({**entry, "action": "remove"})
        ms = str(ts // 1_000_000)
        return json.dumps({"action": "push", "topic": f"trading/orderbook/{code.lower()}",
                           "message": {"changes": changes, "timestamp": ms}, "timestamp": ms, "seqNo": seq},
                          separators=(",", ":"))

    async def z_ws(self, request: web.Request) -> web.StreamResponse:
        """Zonda public websocket: subscribe-public orderbook/<mkt>, pushes with seqNo, ping/pong."""
        return await serve_ws(self.hub, request, self._z_reader)

    async def _z_reader(self, conn) -> None:
        async for msg in conn.ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    return
                continue
            try:
                d = json.loads(msg.data)
            except ValueError:
                conn.push(['{"action":"json-error"}'])
                continue
            action, path = d.get("action"), str(d.get("path", ""))
            if action == "ping":
                conn.push(['{"action":"pong"}'])
            elif action == "subscribe-public" and d.get("module") == "trading" and path.startswith("orderbook/"):
                m = self._by_code(path.split("/", 1)[1], "-")
                if m is None:
                    conn.push([json.dumps({"action": "subscribe-public-error", "module": "trading", "path": path})])
                    continue
                conn.topics = conn.topics | {("orderbook", m.spec.name)}
                conn.push([json.dumps({"action": "subscribe-public-confirm", "module": "trading", "path": path},
                                      separators=(",", ":"))])

    def background(self) -> list:
        return [self.hub.run_reaper()]

    def error(self, status: int, message: str, path: str = "/rest/") -> web.Response:
        """Zonda's `{"status":"Fail","errors":[code]}` under `/rest/`, the legacy API's `{"code":N,"message":..}`
        elsewhere."""
        if not path.startswith("/rest/"):
            return json_response({"code": status, "message": message}, status)
        return json_response({"status": "Fail", "errors": ["ACTION_LIMIT_EXCEEDED" if status == 429 else message]},
                             status)

    def _by_code(self, code: str, sep: str) -> Market | None:
        code = code.upper()
        return next((m for m in self.ctx.markets.values() if m.spec.base + sep + m.spec.quote == code), None)

    # --- legacy Trading API -----------------------------------------------------------------------------
    @staticmethod
    def _fail(code: int, message: str) -> web.Response:
        return json_response({"code": code, "message": message})

    async def trading(self, request: web.Request) -> web.Response:
        raw = await request.text()
        params = dict(parse_qsl(raw, keep_blank_values=True))
        key, sig = request.headers.get("API-Key"), request.headers.get("API-Hash")
        if key != self.ctx.api_key:
            return self._fail(501, "Invalid public key")
        if sig != bitbay_hash(self.ctx.api_secret, raw):
            return self._fail(502, "Invalid sign")
        if "method" not in params or "moment" not in params:
            return self._fail(400, "At least one parameter wasn't set")
        try:
            moment = int(params["moment"])
        except ValueError:
            moment = 0
        if abs(moment - time.time()) > 5:
            return self._fail(503, "Invalid moment parameter. Request time doesn't match current server time")
        limiter = self.ctx.limits.get("private")
        if limiter and not limiter.allow(key):
            return self.error(429, "Too many requests", request.path)
        method = params["method"]
        if method == "orderbook":
            m = self._by_code(params.get("order_currency", "") + params.get("payment_currency", ""), "")
            if m is None:
                return self._fail(510, "Invalid market name")
            return json_response({"bids": self._offers(m, BUY), "asks": self._offers(m, SELL)})
        if method == "info":
            codes = sorted({c for m in self.ctx.markets.values() for c in (m.spec.base, m.spec.quote)})
            if params.get("currency"):
                codes = [c for c in codes if c == params["currency"].upper()]
                if not codes:
                    return self._fail(408, "Invalid currency name")
            return json_response({"success": 1, "balances": {c: {"available": Num("0"), "locked": Num("0")} for c in codes}})
        if method == "orders":
            return json_response([])
        return self._fail(504, "Invalid method")

    def _offers(self, m: Market, side: str) -> list[dict]:
        """Every open offer, best first: price = rate * quantity exactly (whole-offer value in quote currency)."""
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        return [{"currency": m.spec.quote, "price": Num(fmt_num(o.price * o.lots, pdp + adp)),
                 "quantity": Num(fmt_num(o.lots, adp))} for o in m.book.depth_orders(side)]

    # --- legacy public ----------------------------------------------------------------------------------
    async def public(self, request: web.Request) -> web.Response:
        m = self._by_code(request.match_info["market"], "")
        if m is None:
            return json_response({"code": 510, "message": "Invalid market name"}, 404)
        cat = request.match_info["cat"]
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        if cat == "orderbook":
            return json_response({s: [[Num(fmt_num(p, pdp)), Num(fmt_num(v, adp))] for p, v, _ in m.book.depth_levels(side)]
                                  for s, side in (("bids", BUY), ("asks", SELL))})
        if cat == "trades":
            since = request.query.get("since")
            if since is not None and since.lstrip("-").isdigit():
                first = m.trades[0].tid if m.trades else 0
                start = max(0, int(since) + 1 - first)
                page = list(itertools.islice(m.trades, start, start + 50))
            elif request.query.get("sort") == "desc":
                page = list(m.trades)[-50:]
            else:
                page = list(itertools.islice(m.trades, 0, 50))
            if request.query.get("sort") == "desc":
                page.reverse()
            return json_response([{"date": t.ts // 1_000_000_000, "price": Num(fmt_num(t.price, pdp)), "type": t.taker_side,
                                   "amount": Num(fmt_num(t.lots, adp)), "tid": str(t.tid)} for t in page])
        if cat == "ticker":
            t = self._stats(m)
            return json_response({k: Num(fmt_num(v, pdp if k != "volume" else adp)) for k, v in t.items()})
        return json_response({"code": 504, "message": "Invalid method"}, 404)

    def _stats(self, m: Market) -> dict[str, int]:
        day = [t for t in m.trades if t.ts >= m.last_ts - 86_400 * 10**9] or [None]
        prices = [t.price for t in day if t]
        vol = sum(t.lots for t in day if t)
        bid, ask = m.book.best(BUY) or 0, m.book.best(SELL) or 0
        vwap = sum(t.price * t.lots for t in day if t) // vol if vol else 0
        return {"max": max(prices, default=0), "min": min(prices, default=0), "last": prices[-1] if prices else 0,
                "bid": bid, "ask": ask, "vwap": vwap, "average": (sum(prices) // len(prices)) if prices else 0,
                "volume": vol}

    # --- Zonda REST -------------------------------------------------------------------------------------
    def _z_market(self, request: web.Request) -> Market:
        m = self._by_code(request.match_info["market"], "-")
        if m is None:
            raise web.HTTPNotFound(text='{"status":"Fail","errors":["TICKER_NOT_FOUND"]}', content_type="application/json")
        return m

    def _z_ticker_item(self, m: Market) -> dict:
        s = m.spec
        last = m.trades[-1].price if m.trades else 0
        prev = m.trades[-2].price if len(m.trades) > 1 else last
        return {"market": {"code": f"{s.base}-{s.quote}",
                           "first": {"currency": s.base, "minOffer": fmt(1, s.amount_dp), "scale": str(s.amount_dp)},
                           "second": {"currency": s.quote, "minOffer": "1", "scale": str(s.price_dp)},
                           "amountPrecision": str(s.amount_dp), "pricePrecision": str(s.price_dp),
                           "ratePrecision": str(s.price_dp)},
                "time": str(m.last_ts // 1_000_000), "highestBid": fmt(m.book.best(BUY) or 0, s.price_dp),
                "lowestAsk": fmt(m.book.best(SELL) or 0, s.price_dp), "rate": fmt(last, s.price_dp),
                "previousRate": fmt(prev, s.price_dp)}

    async def z_ticker(self, request: web.Request) -> web.Response:
        if "market" in request.match_info:
            return json_response({"status": "Ok", "ticker": self._z_ticker_item(self._z_market(request))})
        return json_response({"status": "Ok", "items": {f"{m.spec.base}-{m.spec.quote}": self._z_ticker_item(m)
                                                        for m in self.ctx.markets.values()}})

    async def z_orderbook(self, request: web.Request) -> web.Response:
        """Top 300 levels per side: ra rate, ca/sa/pa amounts (all the current amount here), co order count."""
        m = self._z_market(request)
        pdp, adp = m.spec.price_dp, m.spec.amount_dp

        def side(s: str) -> list[dict]:
            return [{"ra": fmt(p, pdp), "ca": fmt(v, adp), "sa": fmt(v, adp), "pa": fmt(v, adp), "co": n}
                    for p, v, n in m.book.depth_levels(s, 300)]

        return json_response({"status": "Ok", "sell": side(SELL), "buy": side(BUY),
                              "timestamp": str(m.last_ts // 1_000_000), "seqNo": str(m.seq)})

    async def z_transactions(self, request: web.Request) -> web.Response:
        """`limit` (10, max 300), `fromTime` ms exclusive, `sort` desc (default) or asc."""
        m = self._z_market(request)
        try:
            limit = min(300, int(request.query.get("limit", 10)))
            from_ms = int(request.query["fromTime"]) if "fromTime" in request.query else None
        except ValueError:
            return self.error(400, "INVALID_PARAMS")
        rows = [t for t in m.trades if from_ms is None or t.ts // 1_000_000 > from_ms]
        rows = rows[:limit] if request.query.get("sort") == "asc" else rows[::-1][:limit]
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        return json_response({"status": "Ok", "items": [
            {"id": str(uuid.uuid5(TRADE_NS, f"{m.spec.name}:{t.tid}")), "t": str(t.ts // 1_000_000),
             "a": fmt(t.lots, adp), "r": fmt(t.price, pdp), "ty": "Buy" if t.taker_side == BUY else "Sell"}
            for t in rows]})

    async def z_candles(self, request: web.Request) -> web.Response:
        """Candles ascending, `from`/`to` in ms (required), resolution in seconds; empty candles omitted."""
        m = self._z_market(request)
        try:
            res = int(request.match_info["resolution"])
            since, until = int(request.query["from"]) // 1000, int(request.query["to"]) // 1000
        except (KeyError, ValueError):
            return self.error(400, "INVALID_PARAMS")
        if res not in ZONDA_RESOLUTIONS:
            return self.error(400, "INVALID_RESOLUTION")
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        return json_response({"status": "Ok", "items": [
            [str(b * 1000), {"o": fmt(o, pdp), "c": fmt(c, pdp), "h": fmt(h, pdp), "l": fmt(lo, pdp),
                             "v": fmt(v, adp), "co": str(n)}]
            for b, o, h, lo, c, v, n in m.candles.query(res, since, until)]})
