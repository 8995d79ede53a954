"""BTC-Alpha adapter: socket.io `book_<PAIR>` events and REST v1 (orderbook, exchanges, charts, pairs).

Pure functions: URL builders and parsers from decoded events / raw bodies to canonical rows.
bitexbit (a fork) reuses this module; see bitexbit.py for its differences.

Decisions (facts and tags in shared/exchanges.md §1):
- New order: one `F` per `trades[]` entry in message order (maker = `o_id`, side = the maker's
  book side from `trades[].type`), then `A` for `oid` when the remaining `amount` > 0 (DESIGN.md).
  A fill whose `type` equals the new order's `type` contradicts that reading and is rejected.
  Trade rows: `taker_side` = the new order's `type`.
- Cancel: `oid` is the cancelled order; `cancel_order_id` is the id of the cancel operation
  (the docs never say; the simulator does the same). It is validated when present, not stored.
- Timestamps: float seconds (2017 docs) or the 2024 "seconds / 1000" text: a value < 1e8 is
  read as kiloseconds (common.ts_seconds allow_ks; exchanges.md §1.4).
- REST `exchanges/`: `type` is taken as the taker side (the docs are silent; our simulator sends
  the taker side).
- REST orderbook group=0 is an L3 snapshot: `R` (ts_event = our receive time, the venue gives the
  snapshot none) then one `S` per order, asks then bids, each best price first, then by order
  timestamp, then by id. group=1 gives L2 levels.
- The 2017 form `orderbook/?pair=` labels its lists "bids: sell orders, asks: buy orders" (swapped;
  seed 003). With `legacy=True`, `bids` is read as the ask side and `asks` as the bid side, and
  the limits are sent as `limit_bids` (sell) / `limit_asks` (buy).
"""
from __future__ import annotations

import re
from decimal import Decimal
from urllib.parse import urlencode

from recorder.rows import BookEvent, Parsed, ParseError, Trade
from recorder.venues import signing
from recorder.venues.common import (
    RESOLUTIONS, SHAPE_ERRORS, at, build_levels, candle, canon_pair, dec, dec_sign, each, guard, int_id, is_pos, loads,
    shape_error, taker, trade_pos, ts_seconds,
)

#: Cancels must carry `cancel_order_id` (the book stream scanner is told too).
CANCEL_ID_REQUIRED = False
WS_URL = "wss://btc-alpha.com"
REST_BASE = "https://btc-alpha.com/api/v1/"
CHARTS_BASE = "https://btc-alpha.com/api/charts/"
#: Chart `type` path value -> candle resolution.
CHART_TYPES = {"1": "1m", "5": "5m", "15": "15m", "30": "30m", "60": "1h", "240": "4h", "D": "1d"}
CHART_TYPE_OF = {v: k for k, v in CHART_TYPES.items()}

#: Private-call headers (X-KEY / X-SIGN / X-NONCE); signing lives in signing.py.
auth_headers = signing.btcalpha_headers

_BOOK_SIDE = {"buy": "bid", "sell": "ask"}
_MAKER_SIDE = {"buy": "ask", "sell": "bid"}  # new order type -> side of the orders it can fill
_EVENT_PAIRS: dict[str, str] = {}


def _base(base: str) -> str:
    return base if base.endswith("/") else base + "/"


def _side(x: object, what: str) -> str:
    side = _BOOK_SIDE.get(x) if type(x) is str else None
    if side is None:
        raise ParseError(f"{what}: unknown side {x!r} (expected buy or sell)")
    return side


def _venue_error(d: object) -> None:
    if type(d) is dict and "error" in d:
        raise ParseError(f"venue error: {str(d['error'])[:200]}")


# ----------------------------------------------------------------------------------- socket
def socket_url(base: str = WS_URL, eio: int = 3) -> str:
    """engine.io websocket URL on the default socket.io path (EIO=3 by default; exchanges.md §5)."""
    if eio not in (3, 4):
        raise ValueError(f"EIO must be 3 or 4, got {eio!r}")
    return f"{base.rstrip('/')}/socket.io/?EIO={eio}&transport=websocket"


def channel(pair: str) -> str:
    """Socket event / channel name of a pair: `BTC_USD` -> `book_BTC_USD`."""
    return "book_" + canon_pair(pair)


def pair_of_event(event_name: object) -> str:
    """Pair named by a `book_<PAIR>` event; ParseError for any other event."""
    pair = _EVENT_PAIRS.get(event_name) if type(event_name) is str else None  # type: ignore[arg-type]
    if pair is not None:
        return pair
    if type(event_name) is not str or not event_name.startswith("book_"):
        raise ParseError(f"unknown event {str(event_name)[:60]!r} (expected book_<PAIR>)")
    try:
        pair = canon_pair(event_name[5:])
    except ParseError:
        raise ParseError(f"unknown event {event_name[:60]!r} (bad pair)") from None
    if pair != event_name[5:]:
        raise ParseError(f"unknown event {event_name[:60]!r} (pair must be upper case)")
    if len(_EVENT_PAIRS) < 4096:
        _EVENT_PAIRS[event_name] = pair
    return pair


_FRAME_EVENT = re.compile(rb'42\["(book_[A-Za-z0-9]{1,32}_[A-Za-z0-9]{1,32})"')


def pair_in_frame(raw: bytes) -> str | None:
    """Pair named at the start of a socket.io frame too broken to decode (`42["book_<PAIR>",...`), if any."""
    m = _FRAME_EVENT.match(raw)
    if m is None:
        return None
    try:
        return pair_of_event(m.group(1).decode("ascii"))
    except ParseError:
        return None


def _new_order(pair: str, arg: dict) -> Parsed:
    ts = ts_seconds(arg["date"], "date", True)
    oid = int_id(arg["oid"], "oid")
    typ = arg["type"]
    side = _side(typ, "type")
    maker_side = _MAKER_SIDE[typ]
    amount = dec(arg["amount"], "amount")
    remaining = dec_sign(amount)
    if remaining < 0:
        raise ParseError(f"amount: negative remaining amount {amount}")
    trades = arg["trades"]
    if type(trades) is not list:
        raise ParseError(f"trades: expected a list, got {type(trades).__name__}")
    events: list[BookEvent] = []
    rows: list[Trade] = []
    for i, t in enumerate(trades):
        try:
            if type(t) is not dict:
                raise ParseError(f"expected an object, got {type(t).__name__}")
            tid = int_id(t["tid"], "tid")
            ttype = t["type"]
            mside = _BOOK_SIDE.get(ttype) if type(ttype) is str else None
            if mside != maker_side:
                if mside is None:
                    raise ParseError(f"type: unknown side {ttype!r} (expected buy or sell)")
                raise ParseError(f"type: fill type {ttype!r} equals the taker's type {typ!r}")
            price = dec(t["price"], "price")
            if not is_pos(price):
                raise ParseError(f"price: fill price must be > 0, got {price}")
            amt = dec(t["amount"], "amount")
            if not is_pos(amt):
                raise ParseError(f"amount: fill amount must be > 0, got {amt}")
            maker = int_id(t["o_id"], "o_id")
        except (ParseError, KeyError) as e:
            raise at(f"trades[{i}]", e) from None
        events.append(BookEvent(ts, "F", mside, maker, price, amt, tid, oid))
        rows.append(Trade(ts, str(tid), price, amt, typ, maker, oid))
    price = dec(arg["price"], "price")
    if remaining > 0:
        if not is_pos(price):
            raise ParseError(f"price: resting order price must be > 0, got {price}")
        events.append(BookEvent(ts, "A", side, oid, price, amount))
    return Parsed(pair, ts, events, [], rows)


def _cancel(pair: str, arg: dict, need_cancel_id: bool) -> Parsed:
    if arg["cancelled"] is not True:
        raise ParseError(f"cancelled: expected true, got {arg['cancelled']!r}")
    if "trades" in arg:
        raise ParseError("message has both trades and cancelled")
    ts = ts_seconds(arg["date"], "date", True)
    oid = int_id(arg["oid"], "oid")
    side = _side(arg["type"], "type")
    price = dec(arg["price"], "price")
    amount = dec(arg["amount"], "amount")
    if dec_sign(amount) < 0:
        raise ParseError(f"amount: negative cancelled amount {amount}")
    if "cancel_order_id" in arg:
        int_id(arg["cancel_order_id"], "cancel_order_id")
    elif need_cancel_id:
        raise ParseError("missing key 'cancel_order_id'")
    if "pair" in arg and canon_pair(arg["pair"]) != pair:
        raise ParseError(f"pair: message pair {arg['pair']!r} differs from event pair {pair}")
    return Parsed(pair, ts, [BookEvent(ts, "C", side, oid, price, amount)])


def _parse_book(event_name: str, arg: object, need_cancel_id: bool) -> Parsed:
    pair = pair_of_event(event_name)
    if type(arg) is not dict:
        raise ParseError(f"expected an object, got {type(arg).__name__}")
    if "success" in arg and arg["success"] is not True:
        raise ParseError(f"success: expected true, got {arg['success']!r}")
    if "cancelled" in arg:
        return _cancel(pair, arg, need_cancel_id)
    if "trades" in arg:
        return _new_order(pair, arg)
    raise ParseError("neither a new order (no 'trades') nor a cancel (no 'cancelled')")


def parse_book_event(event_name: str, arg: object) -> Parsed:
    """A decoded socket.io event `(book_<PAIR>, obj)` to book events (F.. then A, or C) and trades."""
    try:
        return _parse_book(event_name, arg, False)
    except SHAPE_ERRORS as e:  # hot path: inline guard
        raise shape_error("book event", e) from None


# ------------------------------------------------------------------------------------- REST
def orderbook_url(base: str, pair: str, group: int = 0, limit_sell: int | None = None,
                  limit_buy: int | None = None, legacy: bool = False) -> str:
    """`orderbook/<PAIR>/?limit_sell&limit_buy&group`, or with legacy the 2017 `orderbook/?pair=` form."""
    p = canon_pair(pair)
    if group not in (0, 1):
        raise ValueError(f"group must be 0 or 1, got {group!r}")
    for name, v in (("limit_sell", limit_sell), ("limit_buy", limit_buy)):
        if v is not None and (type(v) is not int or v < 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    q: list[tuple[str, object]] = [("pair", p)] if legacy else []
    if limit_sell is not None:
        q.append(("limit_bids" if legacy else "limit_sell", limit_sell))  # legacy: bids = sell orders
    if limit_buy is not None:
        q.append(("limit_asks" if legacy else "limit_buy", limit_buy))
    q.append(("group", group))
    path = "orderbook/" if legacy else f"orderbook/{p}/"
    return f"{_base(base)}{path}?{urlencode(q)}"


def _book_lists(d: object, legacy: bool) -> tuple[list, list]:
    _venue_error(d)
    if type(d) is not dict:
        raise ParseError(f"orderbook: expected an object, got {type(d).__name__}")
    sell_key, buy_key = ("bids", "asks") if legacy else ("sell", "buy")
    sells, buys = d[sell_key], d[buy_key]
    if type(sells) is not list or type(buys) is not list:
        raise ParseError(f"orderbook: {sell_key!r} and {buy_key!r} must be lists")
    return sells, buys


def _level(o: dict) -> tuple[str, str, None]:
    return dec(o["price"], "price"), dec(o["amount"], "amount"), None


@guard("orderbook")
def parse_orderbook(body: bytes | str, pair: str, ts_recv_ns: int, group: int = 0, legacy: bool = False) -> Parsed:
    """REST book: group=0 -> `R` + one `S` per resting order (L3); group=1 -> levels (L2)."""
    pair = canon_pair(pair)
    sells, buys = _book_lists(loads(body), legacy)
    if group == 1:
        levels = build_levels("ask", each(sells, _level, "ask", objects=False))
        return Parsed(pair, None, levels=levels + build_levels("bid", each(buys, _level, "bid", objects=False)))
    if group != 0:
        raise ValueError(f"group must be 0 or 1, got {group!r}")
    events = [BookEvent(ts_recv_ns, "R")]
    seen: set[int] = set()

    def order(o: dict) -> tuple[Decimal, int, int, str, str]:
        oid = int_id(o["id"], "id")
        price = dec(o["price"], "price")
        amount = dec(o["amount"], "amount")
        ts = ts_seconds(o["timestamp"], "timestamp", True)
        if not is_pos(price):
            raise ParseError(f"price: must be > 0, got {price}")
        if not is_pos(amount):
            raise ParseError(f"amount: resting amount must be > 0, got {amount}")
        if oid in seen:
            raise ParseError(f"id: duplicate order id {oid}")
        seen.add(oid)
        d = Decimal(price)
        return d if side == "ask" else -d, ts, oid, price, amount  # sort key first: best price, time, id

    for side, rows in (("ask", sells), ("bid", buys)):
        orders = each(rows, order, side)
        orders.sort(key=lambda o: o[:3])
        events += [BookEvent(ts, "S", side, oid, price, amount) for _, ts, oid, price, amount in orders]
    return Parsed(pair, None, events)


def exchanges_url(base: str, pair: str | None = None, limit: int | None = None, offset: int | None = None,
                  ordering: str | None = None) -> str:
    """Public trades: `exchanges/?pair&limit&offset&ordering` (ordering `id` ascending, `-id` descending)."""
    if ordering not in (None, "id", "-id"):
        raise ValueError(f"ordering must be 'id' or '-id', got {ordering!r}")
    for name, v in (("limit", limit), ("offset", offset)):
        if v is not None and (type(v) is not int or v < 0):
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    q = [(k, v) for k, v in (("pair", None if pair is None else canon_pair(pair)), ("limit", limit),
                             ("offset", offset), ("ordering", ordering)) if v is not None]
    return f"{_base(base)}exchanges/" + (f"?{urlencode(q)}" if q else "")


@guard("exchanges")
def parse_trades(body: bytes | str, pair: str | None = None) -> Parsed:
    """REST `exchanges/` body to trades (taker side = `type`); all rows must be of one pair."""
    d = loads(body)
    _venue_error(d)
    if type(d) is not list:
        raise ParseError(f"exchanges: expected a list, got {type(d).__name__}")
    if pair is not None:
        pair = canon_pair(pair)

    def trade(t: dict) -> Trade:
        nonlocal pair
        if "pair" in t:
            p = canon_pair(t["pair"])
            if pair is None:
                pair = p
            elif p != pair:
                raise ParseError(f"pair: {p} differs from {pair} (request one pair at a time)")
        typ = taker(t["type"])
        price = dec(t["price"], "price")
        amount = dec(t["amount"], "amount")
        trade_pos(price, amount)
        return Trade(ts_seconds(t["timestamp"], "timestamp", True), str(int_id(t["id"], "id")), price, amount, typ)

    rows = each(d, trade)
    return Parsed(pair, None, trades=rows)


def chart_type(type_or_resolution: object) -> str:
    """Chart path type (`1`..`D`) from a type value or a resolution (`1h` -> `60`)."""
    t = str(type_or_resolution)
    if t in CHART_TYPES:
        return t
    if t in CHART_TYPE_OF:
        return CHART_TYPE_OF[t]
    raise ValueError(f"unknown chart type {type_or_resolution!r}; types: {', '.join(CHART_TYPES)}")


def charts_url(base: str, pair: str, type_: object, since: int | None = None, until: int | None = None,
               limit: int | None = None) -> str:
    """`<base><PAIR>/<type>/chart?limit&since&until` (since/until unix seconds); base is CHARTS_BASE."""
    q = [(k, v) for k, v in (("limit", limit), ("since", since), ("until", until)) if v is not None]
    return f"{_base(base)}{canon_pair(pair)}/{chart_type(type_)}/chart" + (f"?{urlencode(q)}" if q else "")


def _resolution(resolution: object) -> str:
    r = CHART_TYPES.get(str(resolution), resolution)
    if r not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}")
    return r  # type: ignore[return-value]


@guard("charts")
def parse_candles(body: bytes | str, resolution: str, pair: str | None = None) -> Parsed:
    """Charts body to candles (`time` unix seconds, numbers or strings); resolution `1h` or type `60`."""
    res = _resolution(resolution)
    d = loads(body)
    _venue_error(d)
    out = each(d, lambda c: candle(res, c, _OHLCV, _chart_time), what="charts")
    return Parsed(None if pair is None else canon_pair(pair), None, candles=out)


_OHLCV = ("open", "high", "low", "close", "volume")


def _chart_time(c: dict) -> int:
    return ts_seconds(c["time"], "time", True)


def pairs_url(base: str) -> str:
    """`pairs/` (every pair the venue lists)."""
    return f"{_base(base)}pairs/"


@guard("pairs")
def parse_pairs(body: bytes | str) -> list[str]:
    """`pairs/` body to the canonical pair names it lists."""
    d = loads(body)
    _venue_error(d)
    if type(d) is not list:
        raise ParseError(f"pairs: expected a list, got {type(d).__name__}")
    out = []
    for i, p in enumerate(d):
        if type(p) is not dict:
            raise ParseError(f"[{i}]: expected an object, got {type(p).__name__}")
        out.append(canon_pair(p["name"]))
    return out
