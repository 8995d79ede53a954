"""Fuzz-style: mutated, truncated and re-typed samples either parse or raise ParseError - nothing else."""
import copy
import json
import random
from pathlib import Path

import orjson
import pytest

from recorder.rows import Parsed, ParseError
from recorder.venues import bitbay, bitexbit, bitopro, btcalpha, btcalpha_alp

FIX = Path(__file__).parent / "fixtures" / "venues"

# Re-encoding uses the stdlib json: big ints and NaN tokens reach the parsers too.
BYTE_PARSERS = [
    (lambda b: btcalpha.parse_orderbook(b, "BTC_USD", 1), ["btcalpha_orderbook_group0.json", "btcalpha_error.json"]),
    (lambda b: btcalpha.parse_orderbook(b, "BTC_USD", 1, group=1), ["btcalpha_orderbook_group1.json"]),
    (lambda b: btcalpha.parse_orderbook(b, "BTC_USD", 1, legacy=True), ["btcalpha_orderbook_legacy_2017.json"]),
    (btcalpha.parse_trades, ["btcalpha_exchanges_2017.json", "btcalpha_exchanges_2024_real.json"]),
    (lambda b: btcalpha.parse_candles(b, "1h"), ["btcalpha_charts_2017.json", "btcalpha_charts_2024_real.json"]),
    (btcalpha.parse_pairs, ["btcalpha_pairs_2017.json"]),
    (bitopro.parse_ws, ["bitopro_ws_order_book.json", "bitopro_ws_trade.json", "bitopro_ws_ticker.json"]),
    (lambda b: bitopro.parse_orderbook(b, "BTC_TWD"), ["bitopro_orderbook_doc.json"]),
    (lambda b: bitopro.parse_trades(b, "BTC_USDT"), ["bitopro_trades_2024_real.json"]),
    (lambda b: bitopro.parse_candles(b, "1h"), ["bitopro_candles_2024_real.json"]),
    (bitopro.parse_trading_pairs, ["bitopro_trading_pairs_doc.json"]),
    (lambda b: bitbay.parse_trading_orderbook(b, "BTC_PLN"), ["bitbay_trading_orderbook.json", "bitbay_trading_error.json"]),
    (bitbay.parse_public_trades, ["bitbay_public_trades.json"]),
    (lambda b: bitbay.parse_public_orderbook(b, "BTC_PLN"), ["bitbay_public_orderbook.json"]),
    (lambda b: bitbay.parse_zonda_orderbook(b, "BTC_PLN"), ["zonda_orderbook_doc.json"]),
    (lambda b: bitbay.parse_zonda_transactions(b, "BTC_USDT"), ["zonda_transactions_2024_real.json"]),
    (lambda b: bitbay.parse_zonda_candles(b, "1m"), ["zonda_candles_2024_real.json"]),
    (bitbay.parse_zonda_markets, ["zonda_ticker_all.json"]),
    (lambda b: _parsed_or_none(btcalpha_alp.parse_ws(b)), ["btcalpha_alp_trade_3p.json", "btcalpha_alp_diff.json"]),
    (lambda b: btcalpha_alp.parse_snapshot(b, "BTC_USDT"), ["btcalpha_alp_depth.json"]),
]
EVENT_FIXTURES = ["btcalpha_ws_new_order_2017.json", "btcalpha_ws_new_order_2018.json",
                  "btcalpha_ws_cancel_2017.json", "btcalpha_ws_cancel_2018.json", "btcalpha_order_create_2017.json"]
ODD = [None, True, False, 0, -1, 1.5, -0.5, float("nan"), float("inf"), "", "x", "NaN", "-0.1", "1e400", "1e-400",
       [], {}, [1], {"a": 1}, 2**70, -2**70, "9" * 40, "1710264.956584", 1485686507.0944622, "buy", "sell", "book_X"]


def _parsed_or_none(r):
    """A parse_ws result the checks below know: its trade frames' Parsed, else None (diffs, control frames)."""
    return r if isinstance(r, Parsed) else None


def _ok(fn, *args):
    try:
        r = fn(*args)
    except ParseError:
        return
    assert isinstance(r, (Parsed, list, tuple)) or r is None


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate(obj, rng):
    obj = copy.deepcopy(obj)
    paths = [p for p in _paths(obj) if p]
    for _ in range(rng.randint(1, 3)):
        if not paths:
            return rng.choice(ODD)
        path = rng.choice(paths)
        parent = obj
        try:
            for k in path[:-1]:
                parent = parent[k]
            if rng.random() < 0.25 and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(ODD))
        except (KeyError, IndexError, TypeError):
            pass
    return obj


@pytest.mark.parametrize("fn, names", BYTE_PARSERS)
def test_bytes_truncated_and_flipped(fn, names):
    rng = random.Random(1234)
    for name in names:
        raw = (FIX / name).read_bytes()
        for n in range(len(raw)):
            _ok(fn, raw[:n])
        for _ in range(150):
            b = bytearray(raw)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            _ok(fn, bytes(b))
        obj = orjson.loads(raw)
        for _ in range(300):
            _ok(fn, json.dumps(_mutate(obj, rng)).encode())


@pytest.mark.parametrize("parse", [btcalpha.parse_book_event, bitexbit.parse_book_event])
def test_socket_events_mutated(parse):
    rng = random.Random(99)
    for name in EVENT_FIXTURES:
        obj = orjson.loads((FIX / name).read_bytes())
        for _ in range(400):
            _ok(parse, "book_BTC_USD", _mutate(obj, rng))
        for ev in ODD + ["book_BTC_USD_X", "book_btc_usd", "BOOK_BTC_USD", "book_BTC_USD "]:
            _ok(parse, ev, obj)


def test_trading_error_never_raises():
    rng = random.Random(5)
    raw = (FIX / "bitbay_trading_error.json").read_bytes()
    for n in range(len(raw) + 1):
        bitbay.trading_error(raw[:n])
    obj = orjson.loads(raw)
    for _ in range(200):
        r = bitbay.trading_error(json.dumps(_mutate(obj, rng)).encode())
        assert r is None or (isinstance(r, tuple) and isinstance(r[1], str))
