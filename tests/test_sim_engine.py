"""Matching engine and trader flow: price-time priority, sweeps, cancels, exact integers, determinism, rates."""
from recorder.sim.engine import BUY, SELL, Cancel, Market, fmt, fmt_num, pair_spec
from recorder.sim.traders import Traders

T0 = 1_700_000_000 * 10**9


def test_price_time_priority_and_partial_fill():
    m = Market(pair_spec("BTC_USD"))
    a = m.submit(SELL, 100, 5, T0)
    b = m.submit(SELL, 100, 5, T0 + 1)
    c = m.submit(SELL, 99, 2, T0 + 2)
    taker = m.submit(BUY, 100, 8, T0 + 3)
    assert [(f.maker_oid, f.price, f.lots, f.maker_side) for f in taker.fills] == [(c.oid, 99, 2, SELL), (a.oid, 100, 5, SELL), (b.oid, 100, 1, SELL)]
    assert taker.remaining == 0
    assert [(o.oid, o.lots) for o in m.book.depth_orders(SELL)] == [(b.oid, 4)]
    assert [t.taker_side for t in m.trades] == [BUY] * 3


def test_remainder_rests_and_cancel_reports_what_remained():
    m = Market(pair_spec("BTC_USD"))
    m.submit(BUY, 100, 3, T0)
    sweep = m.submit(SELL, 100, 5, T0 + 1)
    assert sweep.remaining == 2 and m.book.best(SELL) == 100 and m.book.best(BUY) is None
    c = m.cancel(sweep.oid, T0 + 2)
    assert isinstance(c, Cancel) and c.lots == 2 and c.oid == sweep.oid and c.cancel_id >= 1000
    assert len(m.book) == 0 and m.book.prices[SELL] == []


def test_fmt_exact():
    assert fmt(93523, 2) == "935.23" and fmt(5, 6) == "0.000005" and fmt(-5, 2) == "-0.05" and fmt(7, 0) == "7"
    assert fmt_num(93520, 2) == "935.2" and fmt_num(0, 6) == "0.0"


def _flow(seed: str, rate: float, seconds: float):
    m = Market(pair_spec("BTC_USD"))
    t = Traders(m, seed, rate, T0)
    return m, t.run_until(T0 + int(seconds * 1e9))


def test_flow_deterministic_and_never_crossed():
    m1, e1 = _flow("1:x:BTC_USD", 500, 20)
    m2, e2 = _flow("1:x:BTC_USD", 500, 20)
    assert e1 == e2
    assert _flow("2:x:BTC_USD", 500, 20)[1] != e1
    assert m1.book.best(BUY) < m1.book.best(SELL)
    kinds = {"cancel": 0, "rest": 0, "sweep": 0}
    depth = []
    for e in e1:
        if isinstance(e, Cancel):
            kinds["cancel"] += 1
        elif e.fills:
            kinds["sweep"] += 1
            depth.append(len({f.price for f in e.fills}))
        else:
            kinds["rest"] += 1
    assert all(v > 0.05 * len(e1) for v in kinds.values()), kinds
    assert max(depth) >= 3
    ts = [e.ts for e in e1]
    assert ts == sorted(ts) and ts[0] >= T0


def test_rate_is_messages_per_second_from_1_to_firehose():
    for rate, secs in ((1, 400), (50, 20), (20_000, 2)):
        _, ev = _flow("r", rate, secs)
        assert 0.85 * rate * secs <= len(ev) <= 1.15 * rate * secs, (rate, len(ev))


def test_candles_from_trades():
    m, _ = _flow("c", 200, 180)
    rows = m.candles.query(60, None, None)
    assert sum(r[5] for r in rows) == sum(t.lots for t in m.trades)
    assert sum(r[6] for r in rows) == len(m.trades)
    hour = m.candles.query(3600, None, None)
    assert sum(r[5] for r in hour) == sum(r[5] for r in rows)
