"""BitBay adapter: signed Trading API orderbook (exact rates), error bodies, legacy public API."""
from pathlib import Path

import pytest

from recorder.rows import Level, ParseError, Trade
from recorder.venues import bitbay as bb

FIX = Path(__file__).parent / "fixtures" / "venues"


def body(name):
    return (FIX / name).read_bytes()


def test_trading_request_matches_worked_example():
    path, form, headers = bb.trading_request("k", "test-secret", "orderbook", bb.orderbook_params("BTC_PLN"), 1500000000)
    assert path == "/API/Trading/tradingApi.php"
    assert form == "method=orderbook&moment=1500000000&order_currency=BTC&payment_currency=PLN"
    assert headers["API-Key"] == "k"
    assert headers["API-Hash"] == (
        "d8025de55952d031d263e682ca945c501157f05a1d6b964024cea6d9104c6ea1"
        "51c5a80965302491ee04aa8eb4ef423b465d3652925422f5af439ddf5323c912")


def test_trading_orderbook_exact_rates_aggregated():
    p = bb.parse_trading_orderbook(body("bitbay_trading_orderbook.json"), "BTC_PLN")
    assert p.pair == "BTC_PLN" and p.ts_event is None
    assert p.levels == [
        Level("bid", 0, "10005", "0.3", 2), Level("bid", 1, "10000", "0.05", 1),
        Level("ask", 0, "10050", "0.3", 1), Level("ask", 1, "10050.25", "1", 1),
    ]


@pytest.mark.parametrize("b, reason", [
    (b'{"bids":[{"currency":"PLN","price":"1","quantity":"3"}],"asks":[]}', "inexact rate"),
    (b'{"bids":[{"currency":"PLN","price":"0.000000000000000001","quantity":"1024"}],"asks":[]}', "inexact rate"),
    (b'{"bids":[{"currency":"EUR","price":"1","quantity":"1"}],"asks":[]}', "not the pair's quote"),
    (b'{"bids":[{"currency":"PLN","price":"1","quantity":"0"}],"asks":[]}', "must be > 0"),
    (b'{"bids":[{"currency":"PLN","price":"1"}],"asks":[]}', "missing key 'quantity'"),
    (b'{"bids":[]}', "missing key 'asks'"),
    (b'{"code":502,"message":"Invalid sign"}', "venue error 502: Invalid sign"),
    (b'{"code":503}', "venue error 503: Invalid moment"),
    (b'<html>', "bad JSON"),
])
def test_trading_orderbook_malformed(b, reason):
    with pytest.raises(ParseError, match=reason):
        bb.parse_trading_orderbook(b, "BTC_PLN")


def test_trading_error():
    assert bb.trading_error(body("bitbay_trading_error.json")) == (502, "Invalid sign")
    assert bb.trading_error(body("bitbay_trading_orderbook.json")) is None
    assert bb.trading_error(b"not json") is None
    assert bb.trading_error(b'{"success":0,"error":"x"}') == (None, "x")


def test_public_urls():
    assert bb.public_url(bb.PUBLIC_BASE, "BTC_PLN", "trades", since=1234, sort="asc") == \
        "https://bitbay.net/API/Public/BTCPLN/trades.json?since=1234&sort=asc"
    assert bb.public_url(bb.PUBLIC_BASE, "BTC-PLN", "orderbook") == "https://bitbay.net/API/Public/BTCPLN/orderbook.json"
    assert bb.public_url(bb.PUBLIC_BASE + "/", "BTCPLN", "ticker") == "https://bitbay.net/API/Public/BTCPLN/ticker.json"
    with pytest.raises(ValueError):
        bb.public_url(bb.PUBLIC_BASE, "BTC_PLN", "depth")


def test_public_trades():
    p = bb.parse_public_trades(body("bitbay_public_trades.json"), "BTC_PLN")
    assert p.pair == "BTC_PLN"
    assert p.trades == [Trade(1500000000000000000, "1234567", "9000.5", "0.01", "buy"),
                        Trade(1500000005000000000, "1234568", "9001", "0.5", "sell")]
    assert bb.parse_public_trades(b"[]").trades == []
    with pytest.raises(ParseError, match="tid"):
        bb.parse_public_trades(b'[{"date":1500000000,"price":1,"type":"buy","amount":1,"tid":"x"}]')
    with pytest.raises(ParseError, match="unknown side"):
        bb.parse_public_trades(b'[{"date":1500000000,"price":1,"type":"bid","amount":1,"tid":"1"}]')


def test_public_orderbook():
    p = bb.parse_public_orderbook(body("bitbay_public_orderbook.json"), "BTC_PLN")
    assert p.levels == [Level("bid", 0, "9001", "0.2"), Level("bid", 1, "9000.5", "0.1"),
                        Level("ask", 0, "9002", "0.3"), Level("ask", 1, "9003.25", "1")]
    with pytest.raises(ParseError, match=r"expected \[price, amount\]"):
        bb.parse_public_orderbook(b'{"bids":[[1]],"asks":[]}', "BTC_PLN")
