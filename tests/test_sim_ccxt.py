"""Conformance with real third-party clients: ccxt 4.4.50's `btcalpha`, `bitopro` and `zonda`, pointed at the
simulator, fetch order book, trades and OHLCV without error and get the simulator's true values.

ccxt 4.4.50 is the last release with btcalpha and zonda and still has bitopro, so one version covers all three
(4.5.x dropped btcalpha/zonda). It pins aiohttp<=3.10.11, so install it with `pip install --no-deps ccxt==4.4.50`
(its sync client needs only requests, certifi, cryptography and typing-extensions).
"""
from decimal import Decimal

import ccxt  # make test installs ccxt==4.4.50 (--no-deps): a missing client must fail, not skip
import pytest

from recorder.sim.server import SimConfig
from simfixtures import threaded_sim


@pytest.fixture(scope="module")
def tsim():
    # Logical time follows the wall clock (start = now - warmup) because ccxt asks for candles "until now".
    with threaded_sim(SimConfig(seed=5, pairs=["BTC_USD", "ETH_BTC"], rate=20, warmup=900, paced=False)) as ts:
        yield ts


def _levels(book: dict, side: str) -> list[list[float]]:
    agg: dict[str, Decimal] = {}
    for o in book[side]:
        agg[o["price"]] = agg.get(o["price"], Decimal(0)) + Decimal(o["amount"])
    return [[float(p), float(a)] for p, a in agg.items()]


def _market(ts, venue, pair="BTC_USD"):
    return ts.sim.venues[venue].ctx.markets[pair]


def test_ccxt_btcalpha(tsim):
    ex = ccxt.btcalpha({"urls": {"api": {"rest": tsim.sim.urls["btcalpha"] + "/api"}}, "enableRateLimit": False})
    ex.load_markets()
    assert {"BTC/USD", "ETH/BTC"} <= set(ex.symbols)
    truth = tsim.call(tsim.sim.true_book, "btcalpha", "BTC_USD")
    ob = ex.fetch_order_book("BTC/USD")
    assert ob["bids"] == [[float(o["price"]), float(o["amount"])] for o in truth["bids"]]
    assert ob["asks"] == [[float(o["price"]), float(o["amount"])] for o in truth["asks"]]
    m = _market(tsim, "btcalpha")
    trades = ex.fetch_trades("BTC/USD", limit=50)
    tape = list(m.trades)[-50:]
    assert [t["id"] for t in trades] == [str(t.tid) for t in tape]
    assert [t["timestamp"] for t in trades] == [t.ts // 10**6 for t in tape]
    assert [t["side"] for t in trades] == [t.taker_side for t in tape]
    candles = ex.fetch_ohlcv("BTC/USD", "5m", limit=3)
    want = m.candles.query(300, None, None)[-3:]
    assert [c[0] for c in candles] == [w[0] * 1000 for w in want]
    assert [c[4] for c in candles] == [w[4] / 100 for w in want]
    ex.apiKey, ex.secret = "sim-key", "test-secret"
    assert ex.fetch_balance()["BTC"]["total"] == 0
    ex.secret = "wrong"
    with pytest.raises(ccxt.BaseError):
        ex.fetch_balance()


def test_ccxt_bitopro(tsim):
    ex = ccxt.bitopro({"urls": {"api": {"rest": tsim.sim.urls["bitopro"] + "/v3"}}, "enableRateLimit": False})
    ex.load_markets()
    truth = tsim.call(tsim.sim.true_book, "bitopro", "ETH_BTC")
    ob = ex.fetch_order_book("ETH/BTC", limit=20)
    assert ob["bids"] == _levels(truth, "bids")[:20] and ob["asks"] == _levels(truth, "asks")[:20]
    m = _market(tsim, "bitopro")
    trades = ex.fetch_trades("BTC/USD")
    tape = list(m.trades)[::-1][:1000]
    assert sorted((t["timestamp"], t["price"], t["amount"]) for t in trades) == sorted(
        (t.ts // 10**9 * 1000, t.price / 100, t.lots / 10**6) for t in tape)
    candles = ex.fetch_ohlcv("BTC/USD", "1m", limit=5)
    want = {w[0] * 1000: w for w in m.candles.query(60, None, None)}
    assert candles and all(c[4] == want[c[0]][4] / 100 and c[5] == want[c[0]][5] / 10**6 for c in candles)
    ex.apiKey, ex.secret = "sim-key", "bitopro"
    assert "BTC" in ex.fetch_balance()


def test_ccxt_zonda(tsim):
    base = tsim.sim.urls["bitbay"]
    ex = ccxt.zonda({"urls": {"api": {"public": base + "/API/Public", "private": base + "/API/Trading/tradingApi.php",
                                      "v1_01Public": base + "/rest", "v1_01Private": base + "/rest"}},
                     "enableRateLimit": False})
    ex.load_markets()
    truth = tsim.call(tsim.sim.true_book, "bitbay", "BTC_USD")
    ob = ex.fetch_order_book("BTC/USD")
    assert ob["bids"] == _levels(truth, "bids")[:300] and ob["asks"] == _levels(truth, "asks")[:300]
    m = _market(tsim, "bitbay")
    trades = ex.fetch_trades("BTC/USD", limit=100)
    assert sorted(t["timestamp"] for t in trades) == sorted(t.ts // 10**6 for t in list(m.trades)[-100:])
    candles = ex.fetch_ohlcv("BTC/USD", "1m", limit=5)
    want = {w[0] * 1000: w for w in m.candles.query(60, None, None)}
    assert candles and all(c[1] == want[c[0]][1] / 100 for c in candles)
