"""Issue 14: pollers of a venue share its budget fairly (a few pages per turn), report lag, and name exact gaps."""
from __future__ import annotations

import asyncio
import re
from collections import Counter

import aiohttp
import duckdb

from recorder import config
from recorder.daemon import Daemon
from recorder.demo import sim_doc
from recorder.feeds.polling import TradesPoller
from recorder.sim.server import SimConfig, Simulator
from recorder.venues import btcalpha


def record(tmp_path, venues, seconds, build=None, pairs=("BTC_USD", "ETH_BTC"), rate=100.0, channels=("trades",)):
    async def main():
        async with Simulator(SimConfig(seed=7, pairs=list(pairs), rate=rate, venues=venues)) as sim:
            doc = sim_doc(sim.urls, tmp_path / "data", list(pairs))
            doc["venues"] = {k: {**v, "channels": list(channels)} for k, v in doc["venues"].items() if k in venues}
            for v in doc["venues"].values():
                v.pop("api_key_env", None), v.pop("api_secret_env", None)
            cfg = config.parse(doc, env={})
            ready = asyncio.Event()
            kw = {"build": build} if build else {}
            d = Daemon(cfg, on_ready=lambda _d: ready.set(), **kw)
            task = asyncio.create_task(d.run())
            await ready.wait()
            await asyncio.sleep(seconds)
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{d.port}/metrics") as r:
                text = await r.text()
            d.stop()
            await task
            return text
    return asyncio.run(main())


def q(root, sql):
    return duckdb.sql(sql.replace("$R", str(root))).fetchall()


def test_bitbay_trades_polling_is_round_robin_across_pairs(tmp_path):
    """A busy pair used to take up to 50 pages (50 s at 1 req/s) before the next pair had one request."""
    metrics = record(tmp_path, ("bitbay",), 10.0)
    reqs = Counter(pair for pair, in q(tmp_path / "data", "SELECT pair FROM read_parquet('$R/raw/**/*.parquet', "
                                                          "hive_partitioning=true) WHERE stream = 'rest:trades'"))
    assert reqs["BTC_USD"] >= 3 and reqs["ETH_BTC"] >= 3, reqs
    assert min(reqs.values()) / max(reqs.values()) >= 0.5, reqs
    lags = dict(re.findall(r'^booktape_poll_lag_seconds\{venue="bitbay",feed="trades",pair="(\w+)"\} (\S+)$',
                           metrics, re.M))
    assert set(lags) == {"BTC_USD", "ETH_BTC"}


def test_a_backfill_too_long_stops_with_a_gap_row_naming_the_missing_id_range(tmp_path):
    polls = []

    def build(ctx, **_):
        ctx.cursors = {"BTC_USD": 1}  # a dataset that last saw trade 1: everything since is to backfill
        p = TradesPoller(ctx, btcalpha)
        p.page, p.max_pages = 10, 4
        polls.append(p)
        return [p]

    record(tmp_path, ("btcalpha",), 4.0, build=build, pairs=("BTC_USD",), rate=50.0)
    root = tmp_path / "data"
    gaps = [d for d, in q(root, "SELECT detail FROM read_parquet('$R/sessions/**/*.parquet') WHERE kind = 'gap' "
                                "ORDER BY seq")]
    detail = gaps[0]  # trades keep arriving faster than 10 a page: later turns may stop further backfills too
    assert "older trades" not in detail
    ranges = [(int(a), int(b)) for a, b in re.findall(r"ids above (\d+) and below (\d+)", detail)]
    assert detail.startswith("trades backfill stopped after 4 pages; not fetched: BTC_USD trades with ") and ranges
    ids = {i for i, in q(root, "SELECT CAST(trade_id AS BIGINT) FROM read_parquet('$R/trades/**/*.parquet')")}
    assert ranges[0][0] == 1 and ranges[0][1] == min(ids)  # from the cursor to the oldest trade fetched
    for lo, hi in ranges:  # exactly what is missing: bounded by fetched trades (or the cursor), none inside
        assert (lo == 1 or lo in ids) and hi in ids
        assert not [i for i in ids if lo < i < hi]


def test_backfill_missing_ranges_are_the_complement_of_the_fetched_chains():
    from recorder.feeds.polling import Backfill

    assert Backfill(1, [[50, 90]], 0).missing() == [(1, 50)]
    assert Backfill(1, [[50, 90], [120, 200]], 0).missing() == [(1, 50), (90, 120)]
    assert Backfill(49, [[50, 90]], 0).missing() == []  # contiguous with the cursor: nothing missing
