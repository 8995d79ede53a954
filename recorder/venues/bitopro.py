"""BitoPro adapter: path-selected websocket streams (ORDER_BOOK, TRADE, TICKER) and REST v3 market data.

Pure functions. Facts and evidence tags in shared/exchanges.md §3.

Decisions:
- ORDER_BOOK pushes are full top-N snapshots: levels, bids then asks, each sorted best first here
  (the venue's order is unknown); duplicate prices are rejected; ts_event = envelope `timestamp` (ms).
- TRADE `data[].timestamp` is seconds (the envelope's is ms). `isBuyer` true is read as a buyer
  taker (taker_side "buy").
- Trades carry no id. trade_id = f"{ts_s}:{price}:{amount}:{isBuyer}:{k}" with ts_s the integer
  seconds, price/amount without trailing fractional zeros, isBuyer `true`/`false`, and k numbering
  identical (ts_s, price, amount, isBuyer) tuples within one message from 0 - so the REST and WS
  copies of one trade get the same id. Residual: identical trades in the same second that reach
  us split differently (two WS messages vs one REST page) get different k and may collide or
  duplicate in de-duplication.
- REST pair ids are lower case (`btc_usdt`); messages carry upper-case `pair`. REST books have no
  timestamp (ts_event None). TICKER frames give an empty Parsed (kept in raw only).
"""
from __future__ import annotations

from urllib.parse import urlencode

from recorder.rows import Parsed, ParseError, Trade
from recorder.venues.common import (
    RESOLUTIONS, SHAPE_ERRORS, candle, canon_pair, dec, each, guard, loads, pair_from_lower, pair_lower, shape_error,
    sides, trade_pos, ts_ms, ts_seconds,
)

WS_BASE = "wss://stream.bitopro.com:443/ws"
REST_BASE = "https://api.bitopro.com/v3"
#: Order-book depths the stream and REST accept.
BOOK_LIMITS = (1, 5, 10, 20, 30, 50)


# ------------------------------------------------------------------------------------ streams
def _stream_url(base: str, kind: str, items: list[str]) -> str:
    if not items:
        raise ValueError("at least one pair is required")
    root = f"{base.rstrip('/')}/v1/pub/{kind}"
    if len(items) == 1:
        return f"{root}/{items[0]}"
    return f"{root}?pairs={','.join(items)}"


def _limit(limit: object) -> None:
    if limit is not None and limit not in BOOK_LIMITS:
        raise ValueError(f"order-book limit must be one of {BOOK_LIMITS}, got {limit!r}")


def orderbook_stream_url(base: str, pairs_with_limits) -> str:
    """ORDER_BOOK stream: `/v1/pub/order-books/BTC_TWD:5`, or `?pairs=A:5,B` for several.

    pairs_with_limits: {pair: limit or None}, or an iterable of pairs or (pair, limit) tuples.
    """
    items = pairs_with_limits.items() if isinstance(pairs_with_limits, dict) else pairs_with_limits
    out = []
    for it in items:
        pair, limit = (it, None) if isinstance(it, str) else it
        _limit(limit)
        out.append(canon_pair(pair) + (f":{limit}" if limit is not None else ""))
    return _stream_url(base, "order-books", out)


def trades_stream_url(base: str, pairs) -> str:
    """TRADE stream: `/v1/pub/trades/BTC_TWD`, or `?pairs=A,B` for several."""
    return _stream_url(base, "trades", [canon_pair(p) for p in ([pairs] if isinstance(pairs, str) else pairs)])


def tickers_stream_url(base: str, pairs) -> str:
    """TICKER stream: `/v1/pub/tickers/BTC_TWD`, or `?pairs=A,B` for several."""
    return _stream_url(base, "tickers", [canon_pair(p) for p in ([pairs] if isinstance(pairs, str) else pairs)])


# ------------------------------------------------------------------------------------ parsing
_BIDS_ASKS = (("bid", "bids"), ("ask", "asks"))


def _level(r: dict) -> tuple[str, str, int | None]:
    price = dec(r["price"], "price")
    amount = dec(r["amount"], "amount")
    count = r.get("count")
    if count is not None and (type(count) is not int or not 0 <= count < 2**31):
        raise ParseError(f"count: expected a non-negative int, got {count!r}")
    return price, amount, count


def _canon(s: str) -> str:
    return s.rstrip("0").rstrip(".") if "." in s else s


def _trades(rows: object, label: str) -> list[Trade]:
    seen: dict[tuple, int] = {}

    def trade(t: dict) -> Trade:
        ts = ts_seconds(t["timestamp"], "timestamp")
        price = dec(t["price"], "price")
        amount = dec(t["amount"], "amount")
        buyer = t["isBuyer"]
        if type(buyer) is not bool:
            raise ParseError(f"isBuyer: expected true or false, got {buyer!r}")
        trade_pos(price, amount)
        s, frac = divmod(ts, 1_000_000_000)
        ts_s = str(s) if not frac else f"{s}.{frac:09d}".rstrip("0")
        key = (ts_s, _canon(price), _canon(amount), "true" if buyer else "false")
        k = seen.get(key, 0)
        seen[key] = k + 1
        return Trade(ts, f"{key[0]}:{key[1]}:{key[2]}:{key[3]}:{k}", price, amount, "buy" if buyer else "sell")

    return each(rows, trade, label)


def parse_ws(payload: bytes | str) -> Parsed:
    """One websocket message: ORDER_BOOK -> levels, TRADE -> trades, TICKER -> empty Parsed."""
    try:
        return _parse_ws(loads(payload))
    except SHAPE_ERRORS as e:  # hot path: inline guard
        raise shape_error("bitopro ws", e) from None


def _parse_ws(d: object) -> Parsed:
    if type(d) is not dict:
        raise ParseError(f"expected an object, got {type(d).__name__}")
    ev = d["event"]
    if ev == "ORDER_BOOK":
        return Parsed(canon_pair(d["pair"]), ts_ms(d["timestamp"], "timestamp"), levels=sides(d, _BIDS_ASKS, _level))
    if ev == "TRADE":
        return Parsed(canon_pair(d["pair"]), ts_ms(d["timestamp"], "timestamp"), trades=_trades(d["data"], "data"))
    if ev == "TICKER":
        pair = d.get("pair")
        ts = d.get("timestamp")
        return Parsed(canon_pair(pair) if pair else None, None if ts is None else ts_ms(ts, "timestamp"))
    raise ParseError(f"unknown event {str(ev)[:40]!r} (expected ORDER_BOOK, TRADE or TICKER)")


# --------------------------------------------------------------------------------------- REST
def _rest_error(d: object) -> None:
    if type(d) is dict and "error" in d:
        raise ParseError(f"venue error: {str(d['error'])[:200]}")


def _object(body: bytes | str, what: str) -> dict:
    d = loads(body)
    _rest_error(d)
    if type(d) is not dict:
        raise ParseError(f"{what}: expected an object, got {type(d).__name__}")
    return d


def _data(body: bytes | str, what: str) -> list:
    rows = _object(body, what)["data"]
    if type(rows) is not list:
        raise ParseError(f"{what}: data must be a list, got {type(rows).__name__}")
    return rows


def orderbook_url(base: str, pair: str, limit: int | None = None, scale: int | None = None) -> str:
    """`/order-book/btc_usdt?limit=&scale=` (limit in BOOK_LIMITS)."""
    _limit(limit)
    q = [(k, v) for k, v in (("limit", limit), ("scale", scale)) if v is not None]
    return f"{base.rstrip('/')}/order-book/{pair_lower(pair)}" + (f"?{urlencode(q)}" if q else "")


@guard("bitopro order-book")
def parse_orderbook(body: bytes | str, pair: str) -> Parsed:
    """REST book to levels (bids then asks, best first); the body has no timestamp (ts_event None)."""
    return Parsed(canon_pair(pair), None, levels=sides(_object(body, "order-book"), _BIDS_ASKS, _level))


def trades_url(base: str, pair: str) -> str:
    """`/trades/btc_usdt` (recent public trades)."""
    return f"{base.rstrip('/')}/trades/{pair_lower(pair)}"


@guard("bitopro trades")
def parse_trades(body: bytes | str, pair: str) -> Parsed:
    """REST trades (`timestamp` seconds, int or string) with the same stable ids as the stream."""
    return Parsed(canon_pair(pair), None, trades=_trades(_data(body, "trades"), "data"))


def candles_url(base: str, pair: str, resolution: str, from_s: int, to_s: int) -> str:
    """`/trading-history/btc_usdt?resolution=1m&from=<s>&to=<s>`."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}; one of {RESOLUTIONS}")
    q = urlencode([("resolution", resolution), ("from", int(from_s)), ("to", int(to_s))])
    return f"{base.rstrip('/')}/trading-history/{pair_lower(pair)}?{q}"


@guard("bitopro trading-history")
def parse_candles(body: bytes | str, resolution: str, pair: str | None = None) -> Parsed:
    """REST candles (`timestamp` ms; values as strings or numbers)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"unknown resolution {resolution!r}; one of {RESOLUTIONS}")
    out = each(_data(body, "trading-history"), lambda c: candle(resolution, c, _OHLCV, _candle_ts), "data")
    return Parsed(None if pair is None else canon_pair(pair), None, candles=out)


_OHLCV = ("open", "high", "low", "close", "volume")


def _candle_ts(c: dict) -> int:
    return ts_ms(c["timestamp"], "timestamp")


def trading_pairs_url(base: str) -> str:
    """`/provisioning/trading-pairs`."""
    return f"{base.rstrip('/')}/provisioning/trading-pairs"


@guard("bitopro trading-pairs")
def parse_trading_pairs(body: bytes | str) -> list[str]:
    """`/provisioning/trading-pairs` to canonical pairs (`mv_twd` -> `MV_TWD`)."""
    out = []
    for i, p in enumerate(_data(body, "trading-pairs")):
        if type(p) is not dict:
            raise ParseError(f"data[{i}]: expected an object, got {type(p).__name__}")
        out.append(pair_from_lower(p["pair"]))
    return out
