"""BTC-Alpha's current-era book (2023+, exchanges.md §1.3): the plain-websocket `alp-ws` diff channel on a REST
depth snapshot. Pure functions: frames and bodies in, level changes out.

Known from a public third-party fetcher [V-3p]: the client sends `["subscribe","diff.<PAIR>"]`; diff frames are
`["d", ?, "<PAIR>", [[price, delta], ...bids], [[price, delta], ...asks]]` with signed decimal-string deltas
("-0.176" reduces the level); `["subscribe","trade.*"]` (every pair's trades on one subscription) brings trade
frames `["t", 1683703622, 274430761, "TRX_USDT", "3921.43400516", "0.06930900", "sell"]`; the snapshot is
`GET /api/web/finance/exchange?pair=<PAIR>&depth=true` -> `{"depth": {"symbol", "bids", "asks"}}`; the same fetcher
(and ccxt) lists the pairs at `GET /api/v1/pairs/`.
Assumed [INF] (nothing public says): the diff frame's second field is an update id increasing by one per diff,
and the depth snapshot carries the `update_id` it includes (without one no exact join exists); levels are
`[price, amount]` string pairs, best first. In a trade frame: [1] is the trade time in whole unix seconds, [2] the
venue's trade id (an integer, unique per venue), [4] price and [5] amount decimal strings, [6] the taker's side
(the fetcher prints it as the trade's side, as BTC-Alpha's REST `exchanges/` `type` is). The simulator serves exactly
that.
"""
from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode, urljoin

import orjson

from recorder.rows import Parsed, ParseError, Trade
from recorder.venues.common import (
    build_levels, canon_pair, dec, guard, int_id, loads, taker, trade_pos, ts_seconds,
)

WS_URL = "wss://btc-alpha.com/alp-ws"
REST_BASE = "https://btc-alpha.com/api/web/"
#: alp-ws diffs are signed changes of a level's amount (Zonda's pushes are absolute amounts).
ABSOLUTE = False
PING = None  # no client heartbeat message is known; websocket pings only


def subscribe(pair: str) -> str:
    """`["subscribe","diff.<PAIR>"]`."""
    return orjson.dumps(["subscribe", f"diff.{canon_pair(pair)}"]).decode()


#: The one known trade subscription: every pair's trades (frames of pairs not configured are kept raw only).
TRADES_SUBSCRIBE = '["subscribe","trade.*"]'


def snapshot_url(base: str, pair: str) -> str:
    """`finance/exchange?pair=<PAIR>&depth=true`."""
    return f"{base.rstrip('/')}/finance/exchange?{urlencode([('pair', canon_pair(pair)), ('depth', 'true')])}"


def pairs_url(rest_base: str) -> str:
    """The venue's list of pairs, `api/v1/pairs/` beside the `api/web/` base (the v1 REST still lists them)."""
    return urljoin(rest_base if rest_base.endswith("/") else rest_base + "/", "../v1/pairs/")


class Diff:
    """One diff frame: pair, update id, and (side, price, signed delta, None) per level."""

    __slots__ = ("pair", "seq", "ts_event", "changes")

    def __init__(self, pair: str, seq: int, changes: list) -> None:
        self.pair, self.seq, self.ts_event, self.changes = pair, seq, None, changes


def _pairs(rows: object, side: str, what: str, signed: bool) -> list[tuple[str, str]]:
    if type(rows) is not list:
        raise ParseError(f"{what}: expected a list, got {type(rows).__name__}")
    out = []
    for i, r in enumerate(rows):
        if type(r) is not list or len(r) != 2:
            raise ParseError(f"{what}[{i}]: expected [price, amount]")
        price, amount = dec(r[0], f"{what}[{i}] price"), dec(r[1], f"{what}[{i}] amount")
        if not signed and Decimal(amount) < 0:
            raise ParseError(f"{what}[{i}]: negative amount {amount}")
        out.append((price, amount))
    return out


@guard("alp-ws")
def parse_ws(payload: bytes | str) -> Diff | Parsed | str:
    """A diff frame as a Diff, a trade frame as Parsed (its pair, one trade); any other frame as its type string."""
    d = loads(payload)
    if type(d) is not list or not d or type(d[0]) is not str:
        if type(d) is dict:
            return str(d.get("type") or d.get("event") or "message")
        raise ParseError("expected a [type, ...] array")
    if d[0] == "t":
        return _trade(d)
    if d[0] != "d":
        return d[0]
    if len(d) != 5:
        raise ParseError(f"diff frame: expected 5 items, got {len(d)}")
    pair = canon_pair(d[2])
    changes = [("bid", p, a, None) for p, a in _pairs(d[3], "bid", "bids", True)]
    changes += [("ask", p, a, None) for p, a in _pairs(d[4], "ask", "asks", True)]
    return Diff(pair, int_id(d[1], "update id"), changes)


def _trade(d: list) -> Parsed:
    """`["t", unix_s, id, pair, price, amount, taker side]` to one trade (id as decimal digits, time in ns)."""
    if len(d) != 7:
        raise ParseError(f"trade frame: expected 7 items, got {len(d)}")
    tid = str(int_id(d[2], "trade id"))
    price, amount = dec(d[4], "price"), dec(d[5], "amount")
    trade_pos(price, amount)
    ts = ts_seconds(d[1], "time")
    return Parsed(canon_pair(d[3]), ts, trades=[Trade(ts, tid, price, amount, taker(d[6], "side"))])


@guard("alp depth")
def parse_snapshot(body: bytes | str, pair: str) -> tuple[Parsed, int]:
    """The REST depth snapshot: its levels and the update id it includes."""
    d = loads(body)
    if type(d) is not dict or type(d.get("depth")) is not dict:
        raise ParseError("expected {\"depth\": {...}}")
    depth = d["depth"]
    if canon_pair(depth["symbol"]) != canon_pair(pair):
        raise ParseError(f"symbol: {depth['symbol']!r} is not {pair}")
    levels = build_levels("bid", [(p, a, None) for p, a in _pairs(depth["bids"], "bid", "bids", False)])
    levels += build_levels("ask", [(p, a, None) for p, a in _pairs(depth["asks"], "ask", "asks", False)])
    return Parsed(canon_pair(pair), None, levels=levels), int_id(depth["update_id"], "update_id")
