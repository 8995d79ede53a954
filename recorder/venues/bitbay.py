"""BitBay adapter: the legacy signed Trading API (`method=orderbook`) and the legacy public API.

Pure functions. Facts in shared/exchanges.md §4.1-4.2 and seed 004.

Decisions:
- Trading API book entries are offers whose `price` is the value of the whole offer: the level
  price is rate = price / quantity, computed exactly with `decimal`; a rate that is not exact
  (rate * quantity != price, or more than 18 fractional digits) is a ParseError "inexact rate".
  Offers at equal rates are summed into one level whose `count` is the number of offers.
- Error bodies `{"code": 502, "message": "Invalid sign"}` become ParseError "venue error 502: ...";
  `trading_error` returns (code, message) so the feed can classify them (ERROR_CODES, seed 004).
- Zonda REST (the successor; exchanges.md §4.3) parsers are included for orderbook, transactions and
  candles: `ty` Buy/Sell is the taker side, trade ids are the venue's UUIDs verbatim.
- Public trades: `type` is the taker side; `tid` is kept verbatim as trade_id (a digit string);
  `date` is unix seconds. Public books ([[price, amount]]) are sorted best first and equal prices
  summed (count None: the venue does not say how many orders).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping
from urllib.parse import urlencode

import orjson

from recorder.rows import Candle, Parsed, ParseError, Trade
from recorder.venues import signing
from recorder.venues.common import (
    EXACT, at, candle, canon_pair, dec, each, guard, int_id, is_pos, loads, pair_joined, sides, split_market, taker,
    trade_pos, ts_ms, ts_seconds,
)

TRADING_HOST = "https://bitbay.net"
TRADING_PATH = "/API/Trading/tradingApi.php"
PUBLIC_BASE = "https://bitbay.net/API/Public"
CATEGORIES = ("trades", "orderbook", "ticker", "market", "all")
#: Trading API error codes (seed 004).
ERROR_CODES = {
    400: "At least one parameter wasn't set", 401: "Invalid order type", 402: "No orders with specified currencies",
    403: "Invalid payment currency name", 404: "Error. Wrong transaction type", 405: "Order with this id doesn't exist",
    406: "No enough money or crypto", 408: "Invalid currency name", 501: "Invalid public key", 502: "Invalid sign",
    503: "Invalid moment parameter. Request time doesn't match current server time", 504: "Invalid method",
    505: "Key has no permission for this action", 506: "Account locked. Please contact with customer service",
    509: "The BIC/SWIFT is required for this currency", 510: "Invalid market name",
}


# ------------------------------------------------------------------------------- Trading API
def trading_request(key: str, secret: str, method: str, params: Mapping[str, object],
                    moment: int) -> tuple[str, str, dict[str, str]]:
    """(url_path, form body, headers) of a signed Trading API POST; `moment` is unix seconds."""
    body = signing.bitbay_body(method, moment, params)
    headers = {"API-Key": key, "API-Hash": signing.bitbay_hash(secret, body),
               "Content-Type": "application/x-www-form-urlencoded"}
    return TRADING_PATH, body, headers


def orderbook_params(pair: str) -> dict[str, str]:
    """Params of `method=orderbook` for a pair: order_currency (base) and payment_currency (quote)."""
    base, quote = canon_pair(pair).split("_")
    return {"order_currency": base, "payment_currency": quote}


def _error_of(d: object) -> tuple[int | None, str] | None:
    if type(d) is not dict or "bids" in d or "asks" in d:
        return None
    if "code" in d:
        code = d["code"]
        try:
            code = int_id(code)
        except ParseError:
            code = None
        msg = d.get("message")
        if msg is None:
            msg = ERROR_CODES.get(code, "") if code is not None else ""
        return code, str(msg)[:200]
    if "error" in d:
        return None, str(d["error"])[:200]
    return None


def trading_error(body: bytes | str) -> tuple[int | None, str] | None:
    """(code, message) when the body is a Trading API error, else None (also None for bad JSON)."""
    try:
        return _error_of(loads(body))
    except ParseError:
        return None


def _raise_error(d: object) -> None:
    err = _error_of(d)
    if err is not None:
        raise ParseError(f"venue error {err[0]}: {err[1]}")


_BIDS_ASKS = (("bid", "bids"), ("ask", "asks"))


def _book(body: bytes | str) -> dict:
    d = loads(body)
    _raise_error(d)
    if type(d) is not dict:
        raise ParseError(f"orderbook: expected an object, got {type(d).__name__}")
    return d


def _rate(price: str, qty: str) -> str:
    p, q = Decimal(price), Decimal(qty)
    try:
        rate = EXACT.divide(p, q)
        ok = EXACT.multiply(rate, q) == p
    except ArithmeticError:
        ok = False
    if not ok:
        raise ParseError(f"inexact rate {price} / {qty}")
    text = format(EXACT.normalize(rate), "f")
    try:
        return dec(text, "rate")
    except ParseError:
        raise ParseError(f"inexact rate {price} / {qty} (more than 18 fractional digits)") from None


@guard("bitbay orderbook")
def parse_trading_orderbook(body: bytes | str, pair: str) -> Parsed:
    """`method=orderbook` body to levels: rate = price / quantity exactly, equal rates summed, best first."""
    pair = canon_pair(pair)
    quote = pair.split("_")[1]
    d = _book(body)

    def offer(o: dict) -> tuple[str, str, None]:
        cur = o.get("currency")
        if cur is not None and (type(cur) is not str or cur.upper() != quote):
            raise ParseError(f"currency: {cur!r} is not the pair's quote {quote}")
        price = dec(o["price"], "price")
        qty = dec(o["quantity"], "quantity")
        if not is_pos(price) or not is_pos(qty):
            raise ParseError(f"price and quantity must be > 0, got {price} / {qty}")
        return _rate(price, qty), qty, None

    return Parsed(pair, None, levels=sides(d, _BIDS_ASKS, offer, aggregate=True, count_entries=True))


# -------------------------------------------------------------------------------- public API
def public_url(base: str, market: str, category: str, since: int | str | None = None,
               sort: str | None = None) -> str:
    """`<base>/BTCPLN/<category>.json[?since=<tid>&sort=asc|desc]`; market `BTC_PLN`, `BTC-PLN` or `BTCPLN`."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; one of {CATEGORIES}")
    if sort not in (None, "asc", "desc"):
        raise ValueError(f"sort must be asc or desc, got {sort!r}")
    q = [(k, v) for k, v in (("since", since), ("sort", sort)) if v is not None]
    m = pair_joined(split_market(market))
    return f"{base.rstrip('/')}/{m}/{category}.json" + (f"?{urlencode(q)}" if q else "")


@guard("bitbay trades")
def parse_public_trades(body: bytes | str, pair: str | None = None) -> Parsed:
    """Public `trades.json` (`date` seconds, numbers, `tid` string; `type` = taker side) to trades."""
    d = loads(body)
    _raise_error(d)
    return Parsed(None if pair is None else canon_pair(pair), None, trades=each(d, _public_trade, what="trades"))


def _public_trade(t: dict) -> Trade:
    tid = t["tid"]
    int_id(tid, "tid")
    typ = taker(t["type"])
    price = dec(t["price"], "price")
    amount = dec(t["amount"], "amount")
    ts = ts_seconds(t["date"], "date")
    trade_pos(price, amount)
    return Trade(ts, tid if type(tid) is str else str(tid), price, amount, typ)


@guard("bitbay public orderbook")
def parse_public_orderbook(body: bytes | str, pair: str) -> Parsed:
    """Public `orderbook.json` ({"bids": [[price, amount]], "asks": [...]}) to levels, best first."""
    return Parsed(canon_pair(pair), None,
                  levels=sides(_book(body), _BIDS_ASKS, _public_level, aggregate=True, objects=False))


def _public_level(r: object) -> tuple[str, str, None]:
    if type(r) is not list or len(r) < 2:
        raise ParseError(f"expected [price, amount], got {str(r)[:40]}")
    return dec(r[0], "price"), dec(r[1], "amount"), None


# ---------------------------------------------------------------------------- Zonda REST (v1_01)
# BitBay's successor (exchanges.md §4.3), recorded under `api = "current"`: books, transactions and candles.
# Markets are `BTC-PLN`; times are ms; values are strings.
ZONDA_BASE = "https://api.zondacrypto.exchange/rest"
#: Zonda candle resolution (seconds) for each candles-table resolution it offers (no 3h; 1M absent).
ZONDA_RESOLUTION_SECONDS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
                            "4h": 14400, "6h": 21600, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800}
#: Most transactions one request returns (`limit`, documented maximum).
ZONDA_TRADES_LIMIT = 300


def zonda_markets_url(base: str) -> str:
    """`/trading/ticker`: every market's ticker, keyed by market code (ccxt's zonda fetchMarkets reads it)."""
    return f"{base.rstrip('/')}/trading/ticker"


@guard("zonda markets")
def parse_zonda_markets(body: bytes | str) -> list[str]:
    """`/trading/ticker` (`{"status":"Ok","items":{"BTC-PLN":{...}}}`) to the canonical pairs it lists."""
    _, items = _zonda(body, "items")
    if type(items) is not dict:
        raise ParseError(f"items: expected an object keyed by market, got {type(items).__name__}")
    return [canon_pair(k.replace("-", "_")) for k in items]
ZONDA_BOOK_LIMITS = (10, 50, 100)


def zonda_orderbook_url(base: str, pair: str, limit: int | None = None) -> str:
    """`/trading/orderbook/BTC-PLN` (top 300), or `/trading/orderbook-limited/BTC-PLN/<10|50|100>`."""
    m = pair_joined(pair, "-")
    if limit is None:
        return f"{base.rstrip('/')}/trading/orderbook/{m}"
    if limit not in ZONDA_BOOK_LIMITS:
        raise ValueError(f"limit must be one of {ZONDA_BOOK_LIMITS}, got {limit!r}")
    return f"{base.rstrip('/')}/trading/orderbook-limited/{m}/{limit}"


def zonda_transactions_url(base: str, pair: str, limit: int | None = None, from_time_ms: int | None = None,
                           sort: str | None = None) -> str:
    """`/trading/transactions/BTC-PLN?limit&fromTime&sort` (fromTime ms, exclusive; limit <= 300)."""
    if sort not in (None, "asc", "desc"):
        raise ValueError(f"sort must be asc or desc, got {sort!r}")
    q = [(k, v) for k, v in (("limit", limit), ("fromTime", from_time_ms), ("sort", sort)) if v is not None]
    return f"{base.rstrip('/')}/trading/transactions/{pair_joined(pair, '-')}" + (f"?{urlencode(q)}" if q else "")


def zonda_candles_url(base: str, pair: str, resolution: str, from_ms: int, to_ms: int) -> str:
    """`/trading/candle/history/BTC-PLN/<seconds>?from=<ms>&to=<ms>`."""
    if resolution not in ZONDA_RESOLUTION_SECONDS:
        raise ValueError(f"resolution {resolution!r} not offered; one of {tuple(ZONDA_RESOLUTION_SECONDS)}")
    q = urlencode([("from", int(from_ms)), ("to", int(to_ms))])
    return f"{base.rstrip('/')}/trading/candle/history/{pair_joined(pair, '-')}/{ZONDA_RESOLUTION_SECONDS[resolution]}?{q}"


def _zonda(body: bytes | str, key: str) -> tuple[dict, object]:
    d = loads(body)
    if type(d) is not dict:
        raise ParseError(f"expected an object, got {type(d).__name__}")
    if d.get("status") != "Ok":
        raise ParseError(f"venue error: status {d.get('status')!r} errors {str(d.get('errors'))[:200]}")
    return d, d[key]


@guard("zonda orderbook")
def parse_zonda_orderbook(body: bytes | str, pair: str) -> Parsed:
    """`orderbook[-limited]` body to levels (ra rate, ca amount, co count); ts_event = `timestamp` ms.

    `seqNo` has no column and is not returned (it only orders WS pushes, which we do not record).
    """
    d, _ = _zonda(body, "status")
    levels = sides(d, (("bid", "buy"), ("ask", "sell")), _zonda_level)
    return Parsed(canon_pair(pair), ts_ms(d["timestamp"], "timestamp"), levels=levels)


def _zonda_level(r: dict) -> tuple[str, str, int | None]:
    co = r.get("co")
    if co is not None:
        co = int_id(co, "co")
        if co >= 2**31:
            raise ParseError(f"co: order count out of range: {co}")
    return dec(r["ra"], "ra"), dec(r["ca"], "ca"), co


@guard("zonda transactions")
def parse_zonda_transactions(body: bytes | str, pair: str) -> Parsed:
    """`transactions` body to trades: id verbatim (UUID), `t` ms, `a` amount, `r` rate, `ty` Buy/Sell = taker side."""
    _, items = _zonda(body, "items")
    return Parsed(canon_pair(pair), None, trades=each(items, _zonda_trade, "items"))


def _zonda_trade(t: dict) -> Trade:
    tid = t["id"]
    if type(tid) is not str or not tid or len(tid) > 64:
        raise ParseError(f"id: expected an id string, got {str(tid)[:40]!r}")
    ty = t["ty"]
    side = {"Buy": "buy", "Sell": "sell"}.get(ty) if type(ty) is str else None
    if side is None:
        raise ParseError(f"ty: unknown side {ty!r} (expected Buy or Sell)")
    price, amount = dec(t["r"], "r"), dec(t["a"], "a")
    trade_pos(price, amount)
    return Trade(ts_ms(t["t"], "t"), tid, price, amount, side)


@guard("zonda candles")
def parse_zonda_candles(body: bytes | str, resolution: str, pair: str | None = None) -> Parsed:
    """`candle/history` body ([["<ms>", {o, c, h, l, v, co}]]) to candles."""
    if resolution not in ZONDA_RESOLUTION_SECONDS:
        raise ValueError(f"resolution {resolution!r} not offered; one of {tuple(ZONDA_RESOLUTION_SECONDS)}")
    _, items = _zonda(body, "items")

    def one(it: object) -> Candle:
        if type(it) is not list or len(it) != 2 or type(it[1]) is not dict:
            raise ParseError("expected [\"<ms>\", {o, c, h, l, v}]")
        return candle(resolution, it[1], ("o", "h", "l", "c", "v"), lambda _: ts_ms(it[0], "time"))

    return Parsed(None if pair is None else canon_pair(pair), None, candles=each(items, one, "items", objects=False))


# ------------------------------------------------------------------------------------ Zonda websocket
ZONDA_WS_URL = "wss://api.zondacrypto.exchange/websocket/"
ZONDA_REST_BASE = "https://api.zondacrypto.exchange/rest"


def zonda_subscribe(pair: str) -> str:
    """The subscribe frame of a pair's order book channel (`orderbook/btc-pln`)."""
    return orjson.dumps({"action": "subscribe-public", "module": "trading",
                         "path": f"orderbook/{pair_joined(pair, '-').lower()}"}).decode()


ZONDA_PING = '{"action":"ping"}'


@dataclass(slots=True)
class ZondaPush:
    """One order-book push: the pair, its seqNo, venue time, and level changes (side, price, amount or None = gone,
    order count)."""

    pair: str
    seq: int
    ts_event: int
    changes: list[tuple[str, str, str | None, int | None]]


@guard("zonda ws")
def parse_zonda_ws(payload: bytes | str) -> ZondaPush | str:
    """A websocket message: a ZondaPush for an orderbook push, else its `action` (confirm, pong, errors)."""
    d = loads(payload)
    if type(d) is not dict:
        raise ParseError(f"expected an object, got {type(d).__name__}")
    action = d.get("action")
    if action != "push":
        if type(action) is not str:
            raise ParseError(f"action: expected a string, got {str(action)[:40]!r}")
        return action
    topic = d["topic"]
    if type(topic) is not str or not topic.startswith("trading/orderbook/"):
        raise ParseError(f"topic: not an order book push: {str(topic)[:60]!r}")
    pair = canon_pair(topic.rsplit("/", 1)[1].upper().replace("-", "_"))
    seq = int_id(d["seqNo"], "seqNo")
    changes = []
    for i, c in enumerate(d["message"]["changes"]):
        try:
            side = {"Buy": "bid", "Sell": "ask"}.get(c["entryType"])
            if side is None:
                raise ParseError(f"entryType: expected Buy or Sell, got {c['entryType']!r}")
            price = dec(c["rate"], "rate")
            if c["action"] == "remove":
                changes.append((side, price, None, None))
            elif c["action"] == "update":
                _, amount, co = _zonda_level(c["state"])
                changes.append((side, price, amount, co))
            else:
                raise ParseError(f"action: expected update or remove, got {str(c['action'])[:20]!r}")
        except (ParseError, KeyError, TypeError) as e:
            raise at(f"changes[{i}]", e) from None
    return ZondaPush(pair, seq, ts_ms(d["timestamp"], "timestamp"), changes)


def zonda_seqno(body: bytes | str) -> int:
    """`seqNo` of a REST order book (the push sequence number the book includes)."""
    d, _ = _zonda(body, "status")
    return int_id(d["seqNo"], "seqNo")
