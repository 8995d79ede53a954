"""BTC-Alpha adapter: doc and recorded samples parse to exact rows; malformed input raises ParseError."""
import json
from pathlib import Path

import orjson
import pytest

from recorder.rows import BookEvent, Candle, Level, ParseError, Trade
from recorder.venues import btcalpha as a

FIX = Path(__file__).parent / "fixtures" / "venues"


def body(name: str) -> bytes:
    return (FIX / name).read_bytes()


def event(name: str):
    return orjson.loads(body(name))  # what the transport hands over: orjson-decoded


T_NEW = 1485686507094462200
# 1485686413.5688234 has 17 significant digits and the double nearest to it prints back shorter as
# ...5688233: the documented float residual (common.py). The same value sent as text is exact.
T_CANCEL = 1485686413568823300


def test_float_residual_is_the_documented_one():
    from recorder.venues.common import ts_seconds
    assert repr(1485686413.5688234) == "1485686413.5688233"
    assert ts_seconds("1485686413.5688234") == 1485686413568823400


@pytest.mark.parametrize("fixture", ["btcalpha_ws_new_order_2017.json", "btcalpha_ws_new_order_2018.json"])
def test_new_order_doc_sample(fixture):
    p = a.parse_book_event("book_BTC_USD", event(fixture))
    assert p.pair == "BTC_USD" and p.ts_event == T_NEW
    assert p.events == [BookEvent(T_NEW, "F", "bid", 15201, "936.00", "0.1", 14876, 15234)]  # no A: amount 0.0
    assert p.trades == [Trade(T_NEW, "14876", "936.00", "0.1", "sell", 15201, 15234)]
    assert p.levels == [] and p.candles == []


def test_new_order_with_rest_and_several_fills_in_message_order():
    msg = {"date": "1710264.956584", "oid": "20", "type": "buy", "price": "101.5", "amount": "0.25",
           "trades": [{"tid": 7, "type": "sell", "price": "100", "amount": "1", "o_id": 3},
                      {"tid": "8", "type": "sell", "price": 101.5, "amount": 0.5, "o_id": "4"}]}
    p = a.parse_book_event("book_ETH_BTC", msg)
    ts = 1710264956584000000
    assert p.pair == "ETH_BTC"
    assert p.events == [
        BookEvent(ts, "F", "ask", 3, "100", "1", 7, 20),
        BookEvent(ts, "F", "ask", 4, "101.5", "0.5", 8, 20),
        BookEvent(ts, "A", "bid", 20, "101.5", "0.25"),
    ]
    assert [t.trade_id for t in p.trades] == ["7", "8"]
    assert all(t.taker_side == "buy" and t.taker_order_id == 20 for t in p.trades)


def test_new_order_resting_without_fills():
    p = a.parse_book_event("book_BTC_USD", {"date": 1485686507.0944622, "oid": 1, "type": "sell",
                                             "price": 935.23, "amount": 0.0123, "trades": []})
    assert p.events == [BookEvent(T_NEW, "A", "ask", 1, "935.23", "0.0123")] and p.trades == []


def test_create_order_response_shape_also_parses():
    # The private create-order response (seed 003) has the same shape, numbers everywhere.
    p = a.parse_book_event("book_BTC_USD", event("btcalpha_order_create_2017.json"))
    ts = 1483721079516320000
    assert p.events == [BookEvent(ts, "F", "ask", 11266, "870.69", "0.0001", 6049, 11268)]
    assert p.trades == [Trade(ts, "6049", "870.69", "0.0001", "buy", 11266, 11268)]


@pytest.mark.parametrize("fixture", ["btcalpha_ws_cancel_2017.json", "btcalpha_ws_cancel_2018.json"])
def test_cancel_doc_sample(fixture):
    p = a.parse_book_event("book_BTC_USD", event(fixture))
    assert p.pair == "BTC_USD" and p.ts_event == T_CANCEL
    assert p.events == [BookEvent(T_CANCEL, "C", "ask", 15235, "935.23", "0.0123")]  # oid, not cancel_order_id
    assert p.trades == []


def test_string_encoded_cancel():
    msg = {"date": "1710264.956584", "oid": "15235", "cancel_order_id": "4535", "price": "935.23",
           "type": "buy", "amount": "0.0123", "pair": "BTC_USD", "cancelled": True}
    p = a.parse_book_event("book_BTC_USD", msg)
    assert p.events == [BookEvent(1710264956584000000, "C", "bid", 15235, "935.23", "0.0123")]


def _new():
    return event("btcalpha_ws_new_order_2017.json")


def _cancel():
    return event("btcalpha_ws_cancel_2018.json")


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m.pop("oid"), "missing key 'oid'"),
    (lambda m: m.pop("date"), "missing key 'date'"),
    (lambda m: m.pop("price"), "missing key 'price'"),
    (lambda m: m["trades"][0].pop("o_id"), r"trades\[0\]: missing key 'o_id'"),
    (lambda m: m.update(type="short"), "unknown side 'short'"),
    (lambda m: m["trades"][0].update(type="sell"), "equals the taker's type"),
    (lambda m: m.update(amount=-0.1), "negative remaining amount"),
    (lambda m: m.update(amount=float("nan")), "not a finite number"),
    (lambda m: m.update(amount="NaN"), "not a decimal number"),
    (lambda m: m["trades"][0].update(amount="0"), "fill amount must be > 0"),
    (lambda m: m["trades"][0].update(amount="-0.1"), "fill amount must be > 0"),
    (lambda m: m["trades"][0].update(price=None), r"trades\[0\].price: expected a number"),
    (lambda m: m.update(oid=1.5), "oid: expected a non-negative int64 id"),
    (lambda m: m.update(oid=True), "oid: expected a non-negative int64 id"),
    (lambda m: m.update(trades={}), "trades: expected a list"),
    (lambda m: m.update(trades=[1]), r"trades\[0\]: expected an object"),
    (lambda m: m.update(date=12.5), "absurd timestamp"),
    (lambda m: m.update(success=False), "success: expected true"),
    (lambda m: m.pop("trades"), "neither a new order"),
])
def test_new_order_malformed(mutate, reason):
    m = _new()
    mutate(m)
    with pytest.raises(ParseError, match=reason):
        a.parse_book_event("book_BTC_USD", m)


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: m.update(cancelled=False), "cancelled: expected true"),
    (lambda m: m.update(cancelled="yes"), "cancelled: expected true"),
    (lambda m: m.update(amount="-1"), "negative cancelled amount"),
    (lambda m: m.update(pair="ETH_BTC"), "differs from event pair"),
    (lambda m: m.update(trades=[]), "both trades and cancelled"),
    (lambda m: m.update(cancel_order_id="x"), "cancel_order_id"),
    (lambda m: m.pop("type"), "missing key 'type'"),
])
def test_cancel_malformed(mutate, reason):
    m = _cancel()
    mutate(m)
    with pytest.raises(ParseError, match=reason):
        a.parse_book_event("book_BTC_USD", m)


@pytest.mark.parametrize("name, arg", [
    ("ticker", {}), ("book_", {}), ("book_btc_usd", {}), ("book_BTCUSD", {}), (None, {}), (42, {}),
    ("book_BTC_USD", [1]), ("book_BTC_USD", None), ("book_BTC_USD", "x"),
])
def test_unknown_events_and_shapes(name, arg):
    with pytest.raises(ParseError):
        a.parse_book_event(name, arg)


def test_channel_and_event_pair():
    assert a.channel("btc_usd") == "book_BTC_USD"
    assert a.pair_of_event("book_ETH_BTC") == "ETH_BTC"
    assert a.socket_url() == "wss://btc-alpha.com/socket.io/?EIO=3&transport=websocket"
    assert a.socket_url("wss://btc-alpha.com/", 4) == "wss://btc-alpha.com/socket.io/?EIO=4&transport=websocket"


# ------------------------------------------------------------------------------- REST
def test_orderbook_urls():
    assert a.orderbook_url(a.REST_BASE, "BTC_USD", 0) == "https://btc-alpha.com/api/v1/orderbook/BTC_USD/?group=0"
    assert a.orderbook_url(a.REST_BASE, "BTC_USD", 1, limit_sell=5, limit_buy=6) == \
        "https://btc-alpha.com/api/v1/orderbook/BTC_USD/?limit_sell=5&limit_buy=6&group=1"
    assert a.orderbook_url("https://btc-alpha.com/api/v1", "BTC_USD", 0, 1, 1, legacy=True) == \
        "https://btc-alpha.com/api/v1/orderbook/?pair=BTC_USD&limit_bids=1&limit_asks=1&group=0"
    with pytest.raises(ValueError):
        a.orderbook_url(a.REST_BASE, "BTC_USD", 2)


def test_orderbook_group0_l3_snapshot():
    p = a.parse_orderbook(body("btcalpha_orderbook_group0.json"), "BTC_USD", 1_700_000_000_000_000_000)
    assert p.pair == "BTC_USD" and p.levels == []
    assert p.events == [
        BookEvent(1_700_000_000_000_000_000, "R"),
        BookEvent(1485777324410015000, "S", "ask", 44667, "911.519", "0.000446"),
        BookEvent(1485777124415542000, "S", "bid", 44647, "911.122", "0.001233"),
    ]


def test_orderbook_legacy_2017_swapped_names():
    # "bids: sell orders, asks: buy orders" (seed 003): same book as the group0 sample.
    legacy = a.parse_orderbook(body("btcalpha_orderbook_legacy_2017.json"), "BTC_USD", 5, legacy=True)
    modern = a.parse_orderbook(body("btcalpha_orderbook_group0.json"), "BTC_USD", 5)
    assert legacy.events == modern.events


def test_orderbook_group0_ordering_is_deterministic():
    b = json.dumps({
        "sell": [{"id": 5, "price": "11", "amount": "1", "timestamp": "1710264.000001"},
                 {"id": 4, "price": "10", "amount": "1", "timestamp": "1710264.000002"},
                 {"id": 3, "price": "10", "amount": "1", "timestamp": "1710264.000001"},
                 {"id": 2, "price": "10.0", "amount": "1", "timestamp": "1710264.000001"}],
        "buy": [{"id": 9, "price": "9", "amount": "1", "timestamp": 1710264001.0},
                {"id": 8, "price": "9.5", "amount": "2", "timestamp": 1710264002.0}],
    })
    p = a.parse_orderbook(b, "BTC_USD", 1)
    assert [(e.action, e.side, e.order_id) for e in p.events] == [
        ("R", None, None), ("S", "ask", 2), ("S", "ask", 3), ("S", "ask", 4), ("S", "ask", 5),
        ("S", "bid", 8), ("S", "bid", 9)]


def test_orderbook_group1_levels():
    p = a.parse_orderbook(body("btcalpha_orderbook_group1.json"), "BTC_USD", 1, group=1)
    assert p.events == []
    assert p.levels == [Level("ask", 0, "911.519", "0.000446"), Level("bid", 0, "911.122", "0.001233")]


@pytest.mark.parametrize("b, reason", [
    (b'{"sell": [], "buy": [{"id": 1, "price": 1, "amount": 0, "timestamp": 1485777324}]}', "resting amount must be > 0"),
    (b'{"sell": [{"id": 1, "price": 1, "amount": 1, "timestamp": 1485777324}], "buy": [{"id": 1, "price": 1, "amount": 1, "timestamp": 1485777324}]}', "duplicate order id"),
    (b'{"sell": [], "buy": [{"id": 1, "price": 1, "amount": 1}]}', "missing key 'timestamp'"),
    (b'{"sell": []}', "missing key 'buy'"),
    (b'{"sell": {}, "buy": []}', "must be lists"),
    (b'[]', "expected an object"),
    (b'{"sell": [], "buy": [', "bad JSON"),
    (body("btcalpha_error.json"), "venue error: Out of balance"),
])
def test_orderbook_malformed(b, reason):
    with pytest.raises(ParseError, match=reason):
        a.parse_orderbook(b, "BTC_USD", 1)


def test_exchanges_url():
    assert a.exchanges_url(a.REST_BASE) == "https://btc-alpha.com/api/v1/exchanges/"
    assert a.exchanges_url(a.REST_BASE, "BTC_USDT", 100, 0, "-id") == \
        "https://btc-alpha.com/api/v1/exchanges/?pair=BTC_USDT&limit=100&offset=0&ordering=-id"
    with pytest.raises(ValueError):
        a.exchanges_url(a.REST_BASE, ordering="id desc")


def test_exchanges_doc_sample_numbers():
    p = a.parse_trades(body("btcalpha_exchanges_2017.json"))
    assert p.pair == "BTC_USD"
    assert p.trades == [Trade(1483705817735508000, "6030", "839.36", "0.00281167", "sell")]


def test_exchanges_2024_real_strings_and_kiloseconds():
    p = a.parse_trades(body("btcalpha_exchanges_2024_real.json"), "BTC_USDT")
    assert p.pair == "BTC_USDT"
    assert p.trades == [Trade(1710264956584000000, "1725465174", "69817.52", "0.019", "buy")]


def test_exchanges_mixed_pairs_rejected():
    b = orjson.dumps([{"id": 1, "price": "1", "amount": "1", "timestamp": 1485777324, "pair": "BTC_USD", "type": "buy"},
                      {"id": 2, "price": "1", "amount": "1", "timestamp": 1485777324, "pair": "ETH_USD", "type": "buy"}])
    with pytest.raises(ParseError, match="differs"):
        a.parse_trades(b)
    with pytest.raises(ParseError, match="differs"):
        a.parse_trades(body("btcalpha_exchanges_2024_real.json"), "BTC_USD")


def test_charts_url():
    assert a.charts_url(a.CHARTS_BASE, "BTC_USD", 60, limit=1) == "https://btc-alpha.com/api/charts/BTC_USD/60/chart?limit=1"
    assert a.charts_url(a.CHARTS_BASE, "BTC_USD", "1d", since=1485777600, until=1485864000) == \
        "https://btc-alpha.com/api/charts/BTC_USD/D/chart?since=1485777600&until=1485864000"
    assert {a.CHART_TYPES[k] for k in ("1", "5", "15", "30", "60", "240", "D")} == {"1m", "5m", "15m", "30m", "1h", "4h", "1d"}
    with pytest.raises(ValueError):
        a.charts_url(a.CHARTS_BASE, "BTC_USD", 7)


def test_candles_doc_and_real():
    p = a.parse_candles(body("btcalpha_charts_2017.json"), "1h", "BTC_USD")
    assert p.pair == "BTC_USD"
    assert p.candles == [Candle("1h", 1485777600_000_000_000, "910.424", "912.236", "910.086", "911.915", "0.262929")]
    p = a.parse_candles(body("btcalpha_charts_2024_real.json"), "60")
    assert p.candles == [Candle("1h", 1710327600_000_000_000, "73303.56", "73444.44", "73250.01", "73400.07", "16.446269")]


def test_pairs():
    assert a.parse_pairs(body("btcalpha_pairs_2017.json")) == ["BTC_USD"]
    assert a.pairs_url(a.REST_BASE) == "https://btc-alpha.com/api/v1/pairs/"
    with pytest.raises(ParseError):
        a.parse_pairs(b'[{"name": "BTCUSD"}]')
