"""BitoPro adapter: stream URLs, ORDER_BOOK/TRADE/TICKER messages and REST v3 bodies."""
from pathlib import Path

import orjson
import pytest

from recorder.rows import Candle, Level, ParseError, Trade
from recorder.venues import bitopro as b

FIX = Path(__file__).parent / "fixtures" / "venues"


def body(name):
    return (FIX / name).read_bytes()


def test_stream_urls():
    base = b.WS_BASE
    assert b.orderbook_stream_url(base, {"BTC_TWD": 5}) == "wss://stream.bitopro.com:443/ws/v1/pub/order-books/BTC_TWD:5"
    assert b.orderbook_stream_url(base, ["btc_twd"]) == "wss://stream.bitopro.com:443/ws/v1/pub/order-books/BTC_TWD"
    assert b.orderbook_stream_url(base, [("BTC_TWD", 1), ("ETH_TWD", 20), "BITO_ETH"]) == \
        "wss://stream.bitopro.com:443/ws/v1/pub/order-books?pairs=BTC_TWD:1,ETH_TWD:20,BITO_ETH"
    assert b.trades_stream_url(base, "BTC_TWD") == "wss://stream.bitopro.com:443/ws/v1/pub/trades/BTC_TWD"
    assert b.trades_stream_url(base + "/", ["BTC_TWD", "ETH_TWD"]) == "wss://stream.bitopro.com:443/ws/v1/pub/trades?pairs=BTC_TWD,ETH_TWD"
    assert b.tickers_stream_url(base, ["BTC_TWD"]) == "wss://stream.bitopro.com:443/ws/v1/pub/tickers/BTC_TWD"
    with pytest.raises(ValueError):
        b.orderbook_stream_url(base, {"BTC_TWD": 7})
    with pytest.raises(ValueError):
        b.trades_stream_url(base, [])


def test_ws_order_book_doc_sample():
    p = b.parse_ws(body("bitopro_ws_order_book.json"))
    assert p.pair == "BTC_TWD" and p.ts_event == 1650121915308000000
    assert p.levels == [Level("bid", 0, "1188178", "0.0425", 1), Level("ask", 0, "1190740", "0.40943964", 1)]


def test_ws_order_book_sorted_best_first():
    msg = {"event": "ORDER_BOOK", "pair": "BTC_TWD", "timestamp": 1650121915308,
           "bids": [{"price": "1", "amount": "1", "count": 1}, {"price": "3", "amount": "2", "count": 2}],
           "asks": [{"price": "5", "amount": "1", "count": 1}, {"price": "4", "amount": "3", "count": 3}]}
    p = b.parse_ws(orjson.dumps(msg))
    assert [(l.side, l.level, l.price) for l in p.levels] == [("bid", 0, "3"), ("bid", 1, "1"), ("ask", 0, "4"), ("ask", 1, "5")]


def test_ws_trade_doc_sample():
    p = b.parse_ws(body("bitopro_ws_trade.json"))
    assert p.pair == "BTC_TWD" and p.ts_event == 1650116346665000000
    assert p.trades == [Trade(1650116227000000000, "1650116227:1189429:0.0153127:true:0", "1189429", "0.0153127", "buy")]


def test_ws_ticker_is_raw_only():
    p = b.parse_ws(body("bitopro_ws_ticker.json"))
    assert p.pair == "BTC_TWD" and not (p.events or p.levels or p.trades or p.candles)
    assert b.parse_ws(b'{"event":"TICKER","lastPrice":"1"}').pair is None  # ccxt: some TICKER frames lack a pair


def test_trade_ids_stable_between_rest_and_ws_and_numbered():
    rest = b.parse_trades(body("bitopro_trades_2024_real.json"), "btc_usdt")
    assert rest.pair == "BTC_USDT"
    assert rest.trades == [Trade(1710326975000000000, "1710326975:73210.53:0.0001:true:0",
                                 "73210.53000000", "0.00010000", "buy")]
    ws = b.parse_ws(orjson.dumps({"event": "TRADE", "pair": "BTC_USDT", "timestamp": 1710326975123, "data": [
        {"timestamp": 1710326975, "price": "73210.53", "amount": "0.0001", "isBuyer": True},
        {"timestamp": 1710326975, "price": "73210.530", "amount": "0.0001", "isBuyer": True},
        {"timestamp": 1710326975, "price": "73210.53", "amount": "0.0001", "isBuyer": False}]}))
    assert [t.trade_id for t in ws.trades] == [
        "1710326975:73210.53:0.0001:true:0", "1710326975:73210.53:0.0001:true:1", "1710326975:73210.53:0.0001:false:0"]
    assert ws.trades[0].trade_id == rest.trades[0].trade_id
    assert [t.taker_side for t in ws.trades] == ["buy", "buy", "sell"]


@pytest.mark.parametrize("payload, reason", [
    (b'{"event":"DEPTH"}', "unknown event 'DEPTH'"),
    (b'{"pair":"BTC_TWD"}', "missing key 'event'"),
    (b'[1,2]', "expected an object"),
    (b'{"event":"ORDER_BOOK","pair":"BTC_TWD","timestamp":1650121915308,"bids":[],"asks":[{"price":"1","amount":"-1"}]}', "negative amount"),
    (b'{"event":"ORDER_BOOK","pair":"BTC_TWD","timestamp":1650121915308,"bids":[{"price":"1","amount":"1","count":1.5}],"asks":[]}', "count"),
    (b'{"event":"ORDER_BOOK","pair":"BTC_TWD","timestamp":1650121915,"bids":[],"asks":[]}', "absurd timestamp"),
    (b'{"event":"ORDER_BOOK","pair":"BTC_TWD","timestamp":1650121915308,"bids":[]}', "missing key 'asks'"),
    (b'{"event":"TRADE","pair":"BTC_TWD","timestamp":1650116346665,"data":[{"timestamp":1650116227,"price":"1","amount":"1","isBuyer":"true"}]}', "isBuyer"),
    (b'{"event":"TRADE","pair":"BTC_TWD","timestamp":1650116346665,"data":[{"timestamp":1650116227665,"price":"1","amount":"1","isBuyer":true}]}', "absurd timestamp"),
    (b'{"event":"TRADE","pair":"BTC_TWD","timestamp":1650116346665,"data":[{"timestamp":1650116227,"price":"NaN","amount":"1","isBuyer":true}]}', "not a decimal"),
    (b'{"event":"TRADE","pair":"BTC_TWD","timestamp":1650116346665,"data":[{"price":"1","amount":"1","isBuyer":true}]}', "missing key 'timestamp'"),
    (b'{"event":"TRADE","pair":"BTCTWD","timestamp":1650116346665,"data":[]}', "pair"),
    (b'{"event":"TRADE","pair":"BTC_TWD","timest', "bad JSON"),
])
def test_ws_malformed(payload, reason):
    with pytest.raises(ParseError, match=reason):
        b.parse_ws(payload)


def test_rest_urls():
    base = b.REST_BASE
    assert b.orderbook_url(base, "BTC_USDT", 5) == "https://api.bitopro.com/v3/order-book/btc_usdt?limit=5"
    assert b.orderbook_url(base, "BTC_USDT") == "https://api.bitopro.com/v3/order-book/btc_usdt"
    assert b.trades_url(base, "BTC_USDT") == "https://api.bitopro.com/v3/trades/btc_usdt"
    assert b.candles_url(base, "BTC_USDT", "1m", 1710327600, 1710331200) == \
        "https://api.bitopro.com/v3/trading-history/btc_usdt?resolution=1m&from=1710327600&to=1710331200"
    assert b.trading_pairs_url(base) == "https://api.bitopro.com/v3/provisioning/trading-pairs"
    with pytest.raises(ValueError):
        b.candles_url(base, "BTC_USDT", "2m", 1, 2)


def test_rest_orderbook_has_no_timestamp():
    p = b.parse_orderbook(body("bitopro_orderbook_doc.json"), "btc_twd")
    assert p.pair == "BTC_TWD" and p.ts_event is None
    assert p.levels == [Level("bid", 0, "1188178", "0.0425", 1),
                        Level("ask", 0, "1190740", "0.40943964", 1), Level("ask", 1, "1190800", "0.5", 2)]


def test_rest_candles_real_ms():
    p = b.parse_candles(body("bitopro_candles_2024_real.json"), "1h", "BTC_USDT")
    assert p.candles == [Candle("1h", 1710327600000000000, "73250", "73250", "73102.33", "73102.33", "0.00828995")]


def test_rest_trades_int_timestamp_and_errors():
    p = b.parse_trades(b'{"data":[{"timestamp":1710326975,"price":"73210.53000000","amount":"0.00010000","isBuyer":false}]}', "BTC_USDT")
    assert p.trades[0].trade_id == "1710326975:73210.53:0.0001:false:0" and p.trades[0].taker_side == "sell"
    with pytest.raises(ParseError, match="venue error"):
        b.parse_trades(b'{"error":"pair not found"}', "BTC_USDT")
    with pytest.raises(ParseError, match="missing key 'data'"):
        b.parse_trades(b'{}', "BTC_USDT")


def test_trading_pairs():
    assert b.parse_trading_pairs(body("bitopro_trading_pairs_doc.json")) == ["MV_TWD", "BTC_USDT"]
