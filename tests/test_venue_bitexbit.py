"""bitexbit reuses BTC-Alpha's parsers; only hosts and the required cancel_order_id differ."""
from pathlib import Path

import orjson
import pytest

from recorder.rows import BookEvent, ParseError, Trade
from recorder.venues import bitexbit as x, btcalpha

FIX = Path(__file__).parent / "fixtures" / "venues"


def event(name):
    return orjson.loads((FIX / name).read_bytes())


def test_seed_samples():
    # Seed 000 carries the 2018 BTC-Alpha shapes verbatim.
    p = x.parse_book_event("book_BTC_USD", event("btcalpha_ws_new_order_2018.json"))
    assert p.events == [BookEvent(1485686507094462200, "F", "bid", 15201, "936.00", "0.1", 14876, 15234)]
    assert p.trades == [Trade(1485686507094462200, "14876", "936.00", "0.1", "sell", 15201, 15234)]
    p = x.parse_book_event("book_BTC_USD", event("btcalpha_ws_cancel_2018.json"))
    assert [(e.action, e.order_id, e.side, e.amount) for e in p.events] == [("C", 15235, "ask", "0.0123")]


def test_cancel_requires_cancel_order_id():
    m = event("btcalpha_ws_cancel_2017.json")
    assert btcalpha.parse_book_event("book_BTC_USD", m).events  # fine on BTC-Alpha 2017
    with pytest.raises(ParseError, match="cancel_order_id"):
        x.parse_book_event("book_BTC_USD", m)


def test_urls():
    assert x.socket_url() == "wss://bitexbit.com/socket.io/?EIO=3&transport=websocket"
    assert x.orderbook_url(x.REST_BASE, "BTC_USD", 0, 10, 10) == \
        "https://bitexbit.com/api/v1/orderbook/BTC_USD/?limit_sell=10&limit_buy=10&group=0"
    assert x.exchanges_url(x.REST_BASE, "BTC_USD", 100, 200, "id") == \
        "https://bitexbit.com/api/v1/exchanges/?pair=BTC_USD&limit=100&offset=200&ordering=id"
    assert x.charts_url(x.CHARTS_BASE, "BTC_USD", "D", limit=720) == "https://bitexbit.com/api/charts/BTC_USD/D/chart?limit=720"


def test_rest_parsers_shared():
    ob = (FIX / "btcalpha_orderbook_group0.json").read_bytes()
    assert x.parse_orderbook(ob, "BTC_USD", 7).events == btcalpha.parse_orderbook(ob, "BTC_USD", 7).events
    assert x.parse_trades is btcalpha.parse_trades and x.parse_candles is btcalpha.parse_candles


def test_gateway_headers_are_the_seed_names():
    h = x.gateway_headers("k", "s", {"a": 1}, 5)
    assert set(h) == {"X-API-Key", "X-Signature", "X-Nonce"}
    assert set(x.auth_headers("k", "s", {}, 5)) == {"X-KEY", "X-SIGN", "X-NONCE"}
