"""bitexbit adapter: a BTC-Alpha fork, so every parser is btcalpha's; only hosts and a few rules differ.

Differences (shared/exchanges.md §2, seeds 000/001):
- hosts: `wss://bitexbit.com`, `https://bitexbit.com/api/v1/`, charts `https://bitexbit.com/api/charts/`,
  private gateway `https://www.bitexbit.com/api/gateway/` (X-API-Key / X-Signature / X-Nonce headers);
- cancel messages always carry `cancel_order_id` (required here; `oid` is still the cancelled order);
- `exchanges/` documents `offset` and `ordering` (`id` | `-id`, default `-id`), limit default 100;
- only the `orderbook/<PAIR>/` form exists (no 2017 `orderbook/?pair=` legacy form).
"""
from __future__ import annotations

from recorder.rows import Parsed
from recorder.venues import btcalpha as _alpha
from recorder.venues import signing
# Identical to BTC-Alpha: one code path.
from recorder.venues.btcalpha import (  # noqa: F401 (re-exported)
    CHART_TYPES, channel, chart_type, charts_url, exchanges_url, pair_in_frame, pair_of_event, pairs_url, parse_candles, parse_pairs,
    parse_trades,
)
from recorder.venues.common import SHAPE_ERRORS, shape_error

#: Cancels must carry `cancel_order_id` (the book stream scanner is told too).
CANCEL_ID_REQUIRED = True
WS_URL = "wss://bitexbit.com"
REST_BASE = "https://bitexbit.com/api/v1/"
CHARTS_BASE = "https://bitexbit.com/api/charts/"
GATEWAY_BASE = "https://www.bitexbit.com/api/gateway/"

#: v1 private headers (X-KEY / X-SIGN / X-NONCE) and gateway headers (X-API-Key / X-Signature / X-Nonce).
auth_headers = signing.btcalpha_headers
gateway_headers = signing.bitexbit_gateway_headers


def socket_url(base: str = WS_URL, eio: int = 3) -> str:
    """engine.io websocket URL of bitexbit's socket.io server (EIO version unknown; 3 assumed)."""
    return _alpha.socket_url(base, eio)


def parse_book_event(event_name: str, arg: object) -> Parsed:
    """BTC-Alpha's book event parser, with `cancel_order_id` required on cancels."""
    try:
        return _alpha._parse_book(event_name, arg, True)
    except SHAPE_ERRORS as e:
        raise shape_error("book event", e) from None


def orderbook_url(base: str, pair: str, group: int = 0, limit_sell: int | None = None,
                  limit_buy: int | None = None) -> str:
    """`orderbook/<PAIR>/?limit_sell&limit_buy&group`."""
    return _alpha.orderbook_url(base, pair, group, limit_sell, limit_buy)


def parse_orderbook(body: bytes | str, pair: str, ts_recv_ns: int, group: int = 0) -> Parsed:
    """REST book: group=0 -> `R` + `S` per order; group=1 -> levels (see btcalpha.parse_orderbook)."""
    return _alpha.parse_orderbook(body, pair, ts_recv_ns, group)
