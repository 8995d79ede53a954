"""common.py: exact decimals, timestamp units, JSON errors, pair helpers, level building."""
import pytest

from recorder.rows import Level, ParseError
from recorder.venues import common as c


@pytest.mark.parametrize("x, want", [
    ("936.00", "936.00"), ("0.1", "0.1"), ("-1.5", "-1.5"), ("0", "0"), ("73210.53000000", "73210.53000000"),
    ("1e-8", "0.00000001"), ("1E+3", "1000"), ("+2.50", "2.5"), (".5", "0.5"), ("5.", "5"),
    ("0.100000000000000000000", "0.1"), ("000000000000000000000012", "12"),
    (935.23, "935.23"), (0.0, "0.0"), (1e-08, "0.00000001"), (100000000.0, "100000000.0"), (0.00010000, "0.0001"),
    (1485686507.0944622, "1485686507.0944622"), (3, "3"), (-7, "-7"),
])
def test_dec_exact(x, want):
    assert c.dec(x) == want


@pytest.mark.parametrize("x", [
    "NaN", "nan", "inf", "-Infinity", "", " 1", "1 ", "1,5", "1_000", "0x10", "abc", "1.2.3", "--1", "١٢",
    float("nan"), float("inf"), float("-inf"), True, False, None, [], {}, b"1",
    "1" * 21, 10**20, "0.0000000000000000001", "1e30", "1e-30", "1e999999999",
])
def test_dec_rejects(x):
    with pytest.raises(ParseError):
        c.dec(x, "price")


def test_dec_reason_names_field():
    with pytest.raises(ParseError, match=r"^price: expected a number, got NoneType"):
        c.dec(None, "price")


def test_ts_seconds_exact_float_and_text():
    assert c.ts_seconds(1485686507.0944622) == 1485686507094462200
    assert c.ts_seconds("1485686507.0944622") == 1485686507094462200
    assert c.ts_seconds(1710326975) == 1710326975_000_000_000
    assert c.ts_seconds("1710326975") == 1710326975_000_000_000
    assert c.ts_seconds("1570599531.4814300537") == 1570599531481430053  # sub-ns digits truncated


def test_ts_seconds_float_fast_path_equals_the_general_rule():
    import random

    r = random.Random(7)
    xs = [r.uniform(1.2e9, 4.2e9) for _ in range(20_000)] + [r.uniform(1.2e9, 2e9) // 1 for _ in range(1000)]
    xs += [float(c.TS_MIN_NS // 10**9), float(c.TS_MAX_NS // 10**9) - 1e-6, 1700000000.010002]
    for x in xs:
        try:
            want = c._ns(x, "t", 9)
        except c.ParseError:
            with pytest.raises(c.ParseError):
                c.ts_seconds(x)
            continue
        assert c.ts_seconds(x) == want, repr(x)


def test_ts_seconds_kiloseconds_rule():
    assert c.ts_seconds("1710264.956584", allow_ks=True) == 1710264956584000000
    assert c.ts_seconds("1710328.217553", allow_ks=True) == 1710328217553000000
    assert c.ts_seconds(1710264.956584, allow_ks=True) == 1710264956584000000
    assert c.ts_seconds("1637856276.264215", allow_ks=True) == 1637856276264215000  # ordinary seconds unchanged
    with pytest.raises(ParseError, match="absurd"):
        c.ts_seconds("1710264.956584")  # without the rule it is 1970


def test_ts_ms():
    assert c.ts_ms(1650121915308) == 1650121915308000000
    assert c.ts_ms("1710327600000") == 1710327600000000000
    assert c.ts_ms(1650121915308.5) == 1650121915308500000


@pytest.mark.parametrize("x", [0, -1, "-1710326975", 1e20, "1230767999", 4102444800, "abc", None, True, float("nan")])
def test_ts_rejects_absurd_and_garbage(x):
    with pytest.raises(ParseError):
        c.ts_seconds(x)


def test_ts_ms_rejects_seconds():
    with pytest.raises(ParseError, match="absurd"):
        c.ts_ms(1710326975)


def test_loads():
    assert c.loads(b'{"a":1.5}') == {"a": 1.5}
    assert c.loads('[1]') == [1]
    for bad in (b'{"a":', b"", b"NaN", b"\xff", b'{"a":1}x'):
        with pytest.raises(ParseError, match="bad JSON"):
            c.loads(bad)
    with pytest.raises(ParseError):
        c.loads(None)


def test_int_id():
    assert c.int_id(15234) == 15234
    assert c.int_id("1725465174") == 1725465174
    for bad in (-1, True, 1.0, "1.5", "", "١", None, 2**63):
        with pytest.raises(ParseError):
            c.int_id(bad, "oid")


def test_pairs():
    assert c.canon_pair("btc_usdt") == "BTC_USDT"
    assert c.pair_lower("BTC_USDT") == "btc_usdt"
    assert c.pair_from_lower("btc_usdt") == "BTC_USDT"
    assert c.pair_joined("BTC_PLN") == "BTCPLN"
    assert c.pair_joined("BTC_PLN", "-") == "BTC-PLN"
    assert c.split_market("BTCPLN") == "BTC_PLN"
    assert c.split_market("BTC-PLN") == "BTC_PLN"
    assert c.split_market("btc-pln") == "BTC_PLN"
    assert c.split_market("BTCUSDT") == "BTC_USDT"
    assert c.split_market("LSKBTC", ["LSK_BTC", "BTC_PLN"]) == "LSK_BTC"
    for bad in ("BTC", "BTC USD", "BTC_", "_USD", "BTC_USD_X", "", None, 5):
        with pytest.raises(ParseError):
            c.canon_pair(bad)
    with pytest.raises(ParseError):
        c.split_market("XYZABC")
    with pytest.raises(ParseError):
        c.split_market("BTCPLN", ["ETH_PLN"])


def test_build_levels_sorts_and_aggregates():
    bids = c.build_levels("bid", [("10", "1", None), ("10.5", "2", None), ("9.99", "3", None)])
    assert [(l.level, l.price) for l in bids] == [(0, "10.5"), (1, "10"), (2, "9.99")]
    asks = c.build_levels("ask", [("10.5", "2", 1), ("10", "1", 2)])
    assert asks == [Level("ask", 0, "10", "1", 2), Level("ask", 1, "10.5", "2", 1)]
    agg = c.build_levels("ask", [("10", "1", None), ("10.0", "0.5", None)], aggregate=True, count_entries=True)
    assert agg == [Level("ask", 0, "10", "1.5", 2)]
    with pytest.raises(ParseError, match="duplicate price"):
        c.build_levels("bid", [("10", "1", None), ("10.00", "1", None)])
    with pytest.raises(ParseError, match="negative amount"):
        c.build_levels("bid", [("10", "-1", None)])
    with pytest.raises(ParseError, match="price must be > 0"):
        c.build_levels("bid", [("0", "1", None)])


# ------------------------------------------------------------------------------------ walkers
def test_each_maps_and_anchors_item_errors():
    assert c.each([{"p": "1"}, {"p": "2"}], lambda r: c.dec(r["p"], "p"), "bids") == ["1", "2"]
    with pytest.raises(ParseError, match=r"^bids\[1\]\.p: not a decimal number"):
        c.each([{"p": "1"}, {"p": "x"}], lambda r: c.dec(r["p"], "p"), "bids")
    with pytest.raises(ParseError, match=r"^bids\[0\]: missing key 'p'"):
        c.each([{}], lambda r: r["p"], "bids")
    with pytest.raises(ParseError, match=r"^\[0\]: expected an object, got list"):
        c.each([[1]], lambda r: r, what="trades")
    assert c.each([[1]], lambda r: r[0], objects=False) == [1]
    with pytest.raises(ParseError, match=r"^trades: expected a list, got dict"):
        c.each({}, lambda r: r, what="trades")
    with pytest.raises(ParseError, match=r"^items: expected a list, got NoneType"):
        c.each(None, lambda r: r, "items")


def test_sides_walks_each_key_in_order():
    d = {"bids": [{"p": "1"}, {"p": "2"}], "asks": [{"p": "4"}, {"p": "3"}]}
    levels = c.sides(d, (("bid", "bids"), ("ask", "asks")), lambda r: (c.dec(r["p"]), "1", None))
    assert [(lv.side, lv.level, lv.price) for lv in levels] == [
        ("bid", 0, "2"), ("bid", 1, "1"), ("ask", 0, "3"), ("ask", 1, "4")]
    same = {"bids": [{"p": "1"}, {"p": "1"}], "asks": []}
    agg = c.sides(same, (("bid", "bids"), ("ask", "asks")), lambda r: (r["p"], "2", None), aggregate=True,
                  count_entries=True)
    assert agg == [Level("bid", 0, "1", "4", 2)]
    with pytest.raises(ParseError, match=r"^asks\[0\]: missing key 'p'"):
        c.sides({"bids": [], "asks": [{}]}, (("bid", "bids"), ("ask", "asks")), lambda r: (r["p"], "1", None))
    with pytest.raises(ParseError, match=r"^asks: expected a list, got str"):
        c.sides({"bids": [], "asks": "x"}, (("bid", "bids"), ("ask", "asks")), lambda r: r)


def test_taker_and_trade_pos():
    assert c.taker("buy") == "buy" and c.taker("sell", "ty") == "sell"
    with pytest.raises(ParseError, match=r"^type: unknown side 'Buy' \(expected buy or sell\)"):
        c.taker("Buy")
    c.trade_pos("2.5", "0.001")
    for price, amount in (("2", "0"), ("0.0", "1"), ("-1", "1"), ("1", "-0.5")):
        with pytest.raises(ParseError, match=rf"^trade price and amount must be > 0, got {price} x {amount}$"):
            c.trade_pos(price, amount)


def test_candle():
    row = {"o": "1", "h": "2", "l": "0.5", "c": "1.5", "v": "10", "t": 1_700_000_000}
    got = c.candle("1m", row, ("o", "h", "l", "c", "v"), lambda r: c.ts_seconds(r["t"], "t"))
    assert got.ts_open == 1_700_000_000 * 10**9 and (got.open, got.high, got.low, got.close, got.volume) == (
        "1", "2", "0.5", "1.5", "10")
    with pytest.raises(ParseError, match=r"^negative candle value"):
        c.candle("1m", {**row, "v": "-1"}, ("o", "h", "l", "c", "v"), lambda r: c.ts_seconds(r["t"], "t"))
    with pytest.raises(KeyError):
        c.candle("1m", {"o": "1"}, ("o", "h"), lambda r: 0)
