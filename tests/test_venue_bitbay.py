"""BitBay adapter: signed Trading API orderbook (exact rates), error bodies, legacy public API."""
import json
from pathlib import Path

import pytest

from recorder.rows import Candle, Level, ParseError, Trade
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


# ------------------------------------------------------------------------------ Zonda (successor)
def test_zonda_urls():
    z = bb.ZONDA_BASE
    assert bb.zonda_orderbook_url(z, "BTC_PLN") == "https://api.zondacrypto.exchange/rest/trading/orderbook/BTC-PLN"
    assert bb.zonda_orderbook_url(z, "BTC_PLN", 10) == "https://api.zondacrypto.exchange/rest/trading/orderbook-limited/BTC-PLN/10"
    assert bb.zonda_transactions_url(z, "BTC_USDT", 300, 1710327360015, "asc") == \
        "https://api.zondacrypto.exchange/rest/trading/transactions/BTC-USDT?limit=300&fromTime=1710327360015&sort=asc"
    assert bb.zonda_candles_url(z, "BTC_USDT", "1h", 1710327600000, 1710331200000) == \
        "https://api.zondacrypto.exchange/rest/trading/candle/history/BTC-USDT/3600?from=1710327600000&to=1710331200000"
    with pytest.raises(ValueError):
        bb.zonda_candles_url(z, "BTC_USDT", "3h", 0, 1)


def test_zonda_real_transactions_and_candles():
    p = bb.parse_zonda_transactions(body("zonda_transactions_2024_real.json"), "BTC_USDT")
    assert p.trades == [Trade(1710327360016000000, "46f05178-0000-4000-8000-000000000000", "73193.357", "0.00136624", "sell")]
    p = bb.parse_zonda_candles(body("zonda_candles_2024_real.json"), "1m", "BTC_USDT")
    assert p.candles == [Candle("1m", 1710327600000000000, "73194.5", "73250.01", "73194.5", "73250.01", "0.00142076")]


def test_zonda_orderbook():
    p = bb.parse_zonda_orderbook(body("zonda_orderbook_doc.json"), "BTC_PLN")
    assert p.ts_event == 1642299886122000000
    assert p.levels == [Level("bid", 0, "27590.01", "0.1", 1),
                        Level("ask", 0, "27601.35", "0.5", 1), Level("ask", 1, "27610", "1.25", 3)]
    with pytest.raises(ParseError, match="venue error"):
        bb.parse_zonda_orderbook(b'{"status":"Fail","errors":["TICKER_NOT_FOUND"]}', "BTC_PLN")
    with pytest.raises(ParseError, match=r"items\[0\].ty: unknown side"):
        bb.parse_zonda_transactions(b'{"status":"Ok","items":[{"id":"x","t":"1710327360016","a":"1","r":"1","ty":"buy"}]}', "BTC_PLN")


def test_zonda_ws_push_and_control_messages():
    from recorder.venues import bitbay as bb

    push = bb.parse_zonda_ws(b'{"action":"push","topic":"trading/orderbook/btc-pln","message":{"changes":['
                             b'{"marketCode":"BTC-PLN","entryType":"Buy","rate":"27601.35","action":"update",'
                             b'"state":{"ra":"27601.35","ca":"0.0021","sa":"1","pa":"1","co":2}},'
                             b'{"marketCode":"BTC-PLN","entryType":"Sell","rate":"27700","action":"remove"}],'
                             b'"timestamp":"1576847016253"},"timestamp":"1576847016253","seqNo":40018807}')
    assert (push.pair, push.seq, push.ts_event) == ("BTC_PLN", 40018807, 1576847016253 * 10**6)
    assert push.changes == [("bid", "27601.35", "0.0021", 2), ("ask", "27700", None, None)]
    assert bb.parse_zonda_ws(b'{"action":"subscribe-public-confirm","module":"trading","path":"orderbook/btc-pln"}') \
        == "subscribe-public-confirm"
    assert bb.zonda_seqno(b'{"status":"Ok","sell":[],"buy":[],"timestamp":"1","seqNo":"27641254"}') == 27641254
    with pytest.raises(ParseError, match="changes"):
        bb.parse_zonda_ws(b'{"action":"push","topic":"trading/orderbook/btc-pln","message":{"changes":[{}]},'
                          b'"timestamp":"1","seqNo":1}')


def test_zonda_lists_its_markets_at_trading_ticker():
    """The current era's list of pairs (ccxt's zonda fetchMarkets): every market's ticker keyed by its code."""
    z = "https://api.zondacrypto.exchange/rest"
    assert bb.zonda_markets_url(z) == "https://api.zondacrypto.exchange/rest/trading/ticker"
    item = {"market": {"code": "BTC-USDT"}, "time": "1710328237549", "highestBid": "73236.235", "lowestAsk": "73250.01",
            "rate": "73250.01", "previousRate": "73194.5"}
    assert bb.parse_zonda_markets(json.dumps({"status": "Ok", "items": {"BTC-USDT": item, "ETH-PLN": item}})) == \
        ["BTC_USDT", "ETH_PLN"]
    with pytest.raises(ParseError, match="TICKER_NOT_FOUND"):
        bb.parse_zonda_markets(b'{"status":"Fail","errors":["TICKER_NOT_FOUND"]}')
    with pytest.raises(ParseError, match="keyed by market"):
        bb.parse_zonda_markets(b'{"status":"Ok","items":[]}')


def test_zonda_offers_every_documented_candle_resolution_and_the_config_agrees():
    from recorder.config import CURRENT_SPECS

    assert sorted(bb.ZONDA_RESOLUTION_SECONDS.values()) == [60, 180, 300, 900, 1800, 3600, 7200, 14400, 21600, 43200,
                                                           86400, 259200, 604800]  # exchanges.md §4.3
    assert set(CURRENT_SPECS["bitbay"].resolutions) == set(bb.ZONDA_RESOLUTION_SECONDS)
