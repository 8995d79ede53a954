"""BTC-Alpha API (and bitexbit, its fork: flavour="bitexbit"): REST v1, charts, and the `book_<PAIR>` socket.io feed.

Decisions (see docs/simulator.md):
- Socket messages follow the docs: outer numbers are JSON numbers, trade price/amount strings. A cancel carries
  `oid` = the cancelled order's id and `cancel_order_id` = the id of the cancel operation (our documented meaning).
- REST `style="2024"` (default) follows the real March-2024 recorded bodies (exchanges.md [V-real]): decimal strings,
  ids as strings in `exchanges/`, and `timestamp` as unix seconds/1000 strings ("1710264.956584"). `style="doc"`
  follows the seed docs: JSON numbers and float seconds.
- `orderbook/?pair=` (2017 seed form) answers with keys `bids` = SELL orders and `asks` = BUY orders, the doc's
  swapped naming, limited by `limit_bids` (sells) / `limit_asks` (buys), default 100 each.
- `alp-ws` (BTC-Alpha's 2023 book, exchanges.md §1.3; btcalpha only): a plain websocket at `/alp-ws`; after
  `["subscribe","diff.<PAIR>"]` every engine event is `["d", <update id>, "<PAIR>", [[price, delta]...bids],
  [[price, delta]...asks]]` with signed decimal-string deltas and the update id = the engine event number; the
  depth snapshot `GET /api/web/finance/exchange?pair=<PAIR>&depth=true` is `{"depth": {"symbol", "bids", "asks",
  "update_id"}}` (the update id in the snapshot is our assumption: no public source shows one).
  `["subscribe","trade.*"]` (every pair) or `["subscribe","trade.<PAIR>"]` adds the trade frames: one
  `["t", unix s, trade id, "<PAIR>", price, amount, taker side]` per fill (a published batch's trades after its
  diffs), prices and amounts as decimal strings with the pair's precision (as the one frame seen publicly).
- Rate limits: the docs from 2017-02-02 on (and bitexbit's): 100 calls/s per IP public, 2 calls/s per key private,
  answered with HTTP 429 (the 2017-02-01 seed's "1 call per second" was superseded the next day).
"""
from __future__ import annotations

import bisect
import itertools
import json
import time
from collections import defaultdict

from aiohttp import WSMsgType, web

from recorder.sim.engine import BUY, SELL, Cancel, Event, Market, fmt, fmt_num
from recorder.sim.engineio_server import EngineIOServer
from recorder.sim.plumbing import Hub, Num, VenueContext, json_response, rest_middleware, serve_ws
from recorder.venues.signing import btcalpha_sign

SIGNS = {"BTC": "Ƀ", "ETH": "Ξ", "USD": "$", "USDT": "₮", "PLN": "zł"}
CHART_TYPES = {"1": 60, "5": 300, "15": 900, "30": 1800, "60": 3600, "240": 14400, "D": 86400}


def book_frame(pair: str, market: Market, ev: Event) -> str:
    """The `42["book_<PAIR>",{…}]` engine.io frame for one engine event."""
    pdp, adp = market.spec.price_dp, market.spec.amount_dp
    date = fmt(ev.ts // 1000, 6)
    if isinstance(ev, Cancel):
        return (f'42["book_{pair}",{{"success":true,"date":{date},"oid":{ev.oid},"cancel_order_id":{ev.cancel_id},'
                f'"price":{fmt_num(ev.price, pdp)},"type":"{ev.side}","amount":{fmt_num(ev.lots, adp)},'
                f'"pair":"{pair}","cancelled":true}}]')
    trades = ",".join(
        f'{{"tid":{f.tid},"type":"{f.maker_side}","price":"{fmt(f.price, pdp)}","amount":"{fmt(f.lots, adp)}","o_id":{f.maker_oid}}}'
        for f in ev.fills)
    return (f'42["book_{pair}",{{"success":true,"date":{date},"oid":{ev.oid},"type":"{ev.side}",'
            f'"price":{fmt_num(ev.price, pdp)},"amount":{fmt_num(ev.remaining, adp)},"trades":[{trades}]}}]')


def behind(market: Market, c: Cancel) -> int:
    """How many price levels of the book now are better than the cancelled order's, on its side."""
    prices = market.book.prices[c.side]  # ascending: better bids are higher, better asks lower
    return len(prices) - bisect.bisect_right(prices, c.price) if c.side == BUY else bisect.bisect_left(prices, c.price)


def alp_diff(pair: str, market: Market, ev: Event) -> str:
    """The alp-ws `["d", update id, pair, bids, asks]` frame of one engine event: signed level deltas."""
    pdp, adp = market.spec.price_dp, market.spec.amount_dp
    delta: dict[tuple[str, int], int] = defaultdict(int)
    if isinstance(ev, Cancel):
        delta[(ev.side, ev.price)] -= ev.lots
    else:
        for f in ev.fills:
            delta[(f.maker_side, f.price)] -= f.lots
        if ev.remaining:
            delta[(ev.side, ev.price)] += ev.remaining
    side = {s: [[fmt(p, pdp), ("-" if d < 0 else "") + fmt(abs(d), adp)] for (x, p), d in sorted(delta.items())
                if x == s and d] for s in (BUY, SELL)}
    return json.dumps(["d", ev.seq, pair, side[BUY], side[SELL]], separators=(",", ":"))


def alp_trades(pair: str, market: Market, ev: Event) -> list[str]:
    """The alp-ws `["t", unix s, id, pair, price, amount, taker side]` frames of one engine event's fills."""
    if isinstance(ev, Cancel):
        return []
    pdp, adp = market.spec.price_dp, market.spec.amount_dp
    return [json.dumps(["t", ev.ts // 10**9, f.tid, pair, fmt(f.price, pdp), fmt(f.lots, adp), ev.side],
                       separators=(",", ":")) for f in ev.fills]


class BtcAlphaVenue:
    """One BTC-Alpha-style venue: REST + `/socket.io/` fed by `publish`; bitexbit lacks the 2017 `orderbook/?pair=`."""

    tick_ns = None

    def __init__(self, ctx: VenueContext, flavour: str = "btcalpha", ping_interval_ms: int = 25_000,
                 ping_timeout_ms: int = 20_000) -> None:
        self.ctx, self.flavour = ctx, flavour
        self.hub = Hub(ctx)
        self.eio = EngineIOServer(self.hub, ping_interval_ms, ping_timeout_ms)
        self._nonces: dict[str, int] = defaultdict(int)
        self.app = web.Application(middlewares=[rest_middleware(ctx, self.error, ("/api/v1/wallets",))])
        v1 = "/api/v1"
        self.app.add_routes(self.eio.routes() + [
            web.get(f"{v1}/currencies/", self.currencies),
            web.get(f"{v1}/pairs/", self.pairs),
            web.get(f"{v1}/orderbook/{{pair}}/", self.orderbook),
            web.get(f"{v1}/orderbook/{{pair}}", self.orderbook),
            web.get(f"{v1}/exchanges/", self.exchanges),
            web.get("/api/charts/{pair}/{type}/chart", self.charts),
            web.get("/api/charts/{pair}/{type}/chart/", self.charts),
            web.get(f"{v1}/wallets/", self.wallets),
        ])
        self.alp_hub = Hub(ctx)  # alp-ws clients: never sent the socket.io frames
        if flavour == "btcalpha":
            self.app.router.add_get(f"{v1}/orderbook/", self.orderbook_2017)
            self.app.router.add_get("/alp-ws", self.alp_ws)
            self.app.router.add_get("/api/web/finance/exchange", self.alp_depth)

    # --- feed -------------------------------------------------------------------------------------------
    def publish(self, market: Market, events: list[Event]) -> None:
        pair = market.spec.name
        if self.ctx.faults.lose:
            events = [e for e in events if not (isinstance(e, Cancel) and self.ctx.faults.take_lose(behind(market, e)))]
        self.hub.broadcast([book_frame(pair, market, e) for e in events])
        conns = self.alp_hub.conns
        if any(("diff", pair) in c.topics for c in conns):
            self.alp_hub.broadcast([alp_diff(pair, market, e) for e in events], ("diff", pair))
        if any(("trade", pair) in c.topics for c in conns):  # a batch's trades after its diffs
            self.alp_hub.broadcast([f for e in events for f in alp_trades(pair, market, e)], ("trade", pair))

    def background(self) -> list:
        return [self.hub.run_reaper(), self.eio.run_heartbeats(), self.alp_hub.run_reaper()]

    # --- alp-ws -----------------------------------------------------------------------------------------
    async def alp_ws(self, request: web.Request) -> web.StreamResponse:
        """Plain websocket: `["subscribe","diff.<PAIR>"]` adds the pair's diffs, `["subscribe","trade.<PAIR>"]` its
        trades (`trade.*`: every pair's); nothing is acknowledged."""
        return await serve_ws(self.alp_hub, request, self._alp_reader)

    async def _alp_reader(self, conn) -> None:
        async for msg in conn.ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                d = json.loads(msg.data)
            except ValueError:
                continue
            if not (isinstance(d, list) and len(d) == 2 and d[0] == "subscribe"):
                continue
            kind, _, what = str(d[1]).partition(".")
            if kind == "trade" and what == "*":
                conn.topics = conn.topics | {("trade", p) for p in self.ctx.markets}
            elif kind in ("diff", "trade"):
                m = self.ctx.market(what)
                if m is not None:
                    conn.topics = conn.topics | {(kind, m.spec.name)}

    async def alp_depth(self, request: web.Request) -> web.Response:
        """`finance/exchange?pair=<PAIR>&depth=true`: the whole book as [price, amount] levels plus its update id."""
        m = self._market(request, "pair")
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        lv = {s: [[fmt(p, pdp), fmt(v, adp)] for p, v, _ in m.book.depth_levels(s)] for s in (BUY, SELL)}
        return json_response({"depth": {"symbol": m.spec.name, "bids": lv[BUY], "asks": lv[SELL],
                                        "update_id": m.seq}})

    # --- helpers ----------------------------------------------------------------------------------------
    def error(self, status: int, message: str, path: str = "") -> web.Response:
        return json_response({"date": Num(f"{time.time():.6f}"), "error": message}, status)

    def _num(self, n: int, dp: int) -> object:
        return fmt(n, dp) if self.ctx.style == "2024" else Num(fmt_num(n, dp))

    def _ts(self, ts_ns: int) -> object:
        """2024: unix seconds/1000 as a string with 6 decimals; doc: float seconds (µs)."""
        if self.ctx.style == "2024":
            return fmt(ts_ns // 1_000_000, 6)
        return Num(fmt(ts_ns // 1000, 6))

    def _market(self, request: web.Request, key: str) -> Market:
        m = self.ctx.market(request.match_info.get(key) or request.query.get(key, ""))
        if m is None:
            raise web.HTTPNotFound(text='{"detail":"Not found."}', content_type="application/json")
        return m

    @staticmethod
    def _int(request: web.Request, name: str, default: int | None) -> int | None:
        v = request.query.get(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise web.HTTPBadRequest(text=f'{{"error":"{name} must be an integer"}}', content_type="application/json")

    # --- public REST ------------------------------------------------------------------------------------
    async def currencies(self, request: web.Request) -> web.Response:
        codes = sorted({c for m in self.ctx.markets.values() for c in (m.spec.base, m.spec.quote)})
        return json_response([{"sign": SIGNS.get(c, c), "short_name": c} for c in codes])

    async def pairs(self, request: web.Request) -> web.Response:
        c1, c2 = request.query.get("currency1"), request.query.get("currency2")
        out = []
        for m in self.ctx.markets.values():
            s = m.spec
            if c1 and c1 != s.base or c2 and c2 != s.quote:
                continue
            if self.ctx.style == "2024":
                out.append({"name": s.name, "currency1": s.base, "currency2": s.quote, "price_precision": s.price_dp,
                            "amount_precision": s.amount_dp, "minimum_order_size": fmt(1, s.amount_dp),
                            "maximum_order_size": "100000000.00000000", "minimum_order_value": "0.00000000",
                            "liquidity_type": 10})
            else:
                out.append({"currency2": s.quote, "maximum_order_size": Num("100000000.0"),
                            "minimum_order_size": Num(fmt_num(1, s.amount_dp)), "currency1": s.base, "name": s.name,
                            "price_precision": s.price_dp})
        return json_response(out)

    def _side(self, m: Market, side: str, limit: int | None, group: bool) -> list[dict]:
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        if group:
            return [{"price": self._num(p, pdp), "amount": self._num(v, adp)}
                    for p, v, _ in m.book.depth_levels(side, limit)]
        orders = m.book.depth_orders(side)[:limit] if limit is not None else m.book.depth_orders(side)
        return [{"price": self._num(o.price, pdp), "id": o.oid, "amount": self._num(o.lots, adp),
                 "timestamp": self._ts(o.ts)} for o in orders]

    async def orderbook(self, request: web.Request) -> web.Response:
        """`orderbook/<PAIR>/`: keys sell/buy, best first; group=0 every order (id, timestamp), group=1 levels."""
        m = self._market(request, "pair")
        group = self._int(request, "group", 0) == 1
        return json_response({"sell": self._side(m, SELL, self._int(request, "limit_sell", None), group),
                              "buy": self._side(m, BUY, self._int(request, "limit_buy", None), group)})

    async def orderbook_2017(self, request: web.Request) -> web.Response:
        """2017 seed form `orderbook/?pair=`: `bids` are sell orders and `asks` buy orders, as that doc says."""
        m = self._market(request, "pair")
        group = self._int(request, "group", 0) == 1
        return json_response({"bids": self._side(m, SELL, self._int(request, "limit_bids", 100), group),
                              "asks": self._side(m, BUY, self._int(request, "limit_asks", 100), group)})

    async def exchanges(self, request: web.Request) -> web.Response:
        """Public trades: `pair`, `limit` (100), `offset` (0), `ordering` id | -id (default -id); type = taker side."""
        limit = self._int(request, "limit", 100)
        offset = self._int(request, "offset", 0)
        ordering = request.query.get("ordering", "-id")
        if ordering not in ("id", "-id"):
            return self.error(400, "ordering must be id or -id")
        pair = request.query.get("pair")
        markets = [self._market(request, "pair")] if pair else list(self.ctx.markets.values())
        rows = []
        for m in markets:
            tape = reversed(m.trades) if ordering == "-id" else iter(m.trades)
            rows += [(t, m) for t in itertools.islice(tape, offset + limit)]
        rows.sort(key=lambda tm: tm[0].tid, reverse=ordering == "-id")
        out = []
        for t, m in rows[offset: offset + limit]:
            pdp, adp = m.spec.price_dp, m.spec.amount_dp
            out.append({"id": str(t.tid) if self.ctx.style == "2024" else t.tid, "price": self._num(t.price, pdp),
                        "amount": self._num(t.lots, adp), "timestamp": self._ts(t.ts), "pair": m.spec.name,
                        "type": t.taker_side})
        return json_response(out)

    async def charts(self, request: web.Request) -> web.Response:
        """Candles newest first, `since`/`until` in unix seconds, `limit` default 720; empty buckets omitted."""
        m = self._market(request, "pair")
        res = CHART_TYPES.get(request.match_info["type"])
        if res is None:
            return self.error(400, "unknown chart type")
        rows = m.candles.query(res, self._int(request, "since", None), self._int(request, "until", None))
        rows = rows[::-1][: self._int(request, "limit", 720)]
        pdp, adp = m.spec.price_dp, m.spec.amount_dp
        two = self.ctx.style == "2024"
        return json_response([{"time": str(b) if two else b, "open": self._num(o, pdp), "close": self._num(c, pdp),
                               "low": self._num(lo, pdp), "high": self._num(h, pdp), "volume": self._num(v, adp)}
                              for b, o, h, lo, c, v, _ in rows])

    # --- private REST -----------------------------------------------------------------------------------
    async def wallets(self, request: web.Request) -> web.Response:
        """Signed GET: X-KEY, X-SIGN = HMAC-SHA256(secret, key) (a GET signs no data), X-NONCE increasing."""
        key, sign, nonce = (request.headers.get(h) for h in ("X-KEY", "X-SIGN", "X-NONCE"))
        if key != self.ctx.api_key or not sign or not nonce:
            return self.error(401, "Invalid authentication headers")
        if sign != btcalpha_sign(key, self.ctx.api_secret, {}):
            return self.error(401, "Invalid signature")
        if not nonce.isdigit() or int(nonce) <= self._nonces[key]:
            return self.error(401, "Nonce must be greater than the previous one")
        self._nonces[key] = int(nonce)
        private = self.ctx.limits.get("private")
        if private and not private.allow(key):
            return self.error(429, "Too many requests")
        codes = sorted({c for m in self.ctx.markets.values() for c in (m.spec.base, m.spec.quote)})
        return json_response([{"currency": c, "balance": self._num(0, 8), "reserve": self._num(0, 8)} for c in codes])
