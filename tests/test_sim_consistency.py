"""Replaying the engine's own socket messages from an L3 REST snapshot reproduces its true book at every checkpoint;
and the same seed with the same client actions gives the same message streams."""
import asyncio
from decimal import Decimal

import aiohttp
import pyarrow.parquet as pq

from recorder.sim.reference import RefBook
from recorder.sim.server import SimConfig, Simulator
from simfixtures import START, book_events, loads, read_events, read_frames, ws_url

PAIRS = ["BTC_USD", "ETH_BTC"]


def venue_seq(sim: Simulator, venue: str) -> int:
    """Engine events produced so far by one venue (all pairs)."""
    return sum(f.market.seq for f in sim.feeds if f.venue.ctx.name == venue)


def _cfg(**kw) -> SimConfig:
    return SimConfig(seed=7, pairs=PAIRS, rate=400, start=START, warmup=10, paced=False, **kw)


def test_replay_from_snapshot_matches_every_checkpoint(tmp_path):
    async def run():
        async with Simulator(_cfg(truth_dir=str(tmp_path), checkpoint_every=250)) as sim:
            base = sim.urls["btcalpha"]
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(ws_url(base, "/socket.io/?EIO=3&transport=websocket")) as ws:
                    await read_frames(ws, lambda f: "40" in f)
                    snaps = {}
                    for p in PAIRS:
                        async with s.get(f"{base}/api/v1/orderbook/{p}/?group=0") as r:
                            snaps[p] = (loads(await r.text()), sim.venues["btcalpha"].ctx.markets[p].seq)
                    before = venue_seq(sim, "btcalpha")
                    for _ in range(4):
                        sim.advance(5)
                    n = venue_seq(sim, "btcalpha") - before
                    frames = await read_events(ws, n)
        return snaps, frames

    snaps, frames = asyncio.run(run())
    events = book_events(frames)
    sent = pq.read_table(tmp_path / "messages", columns=["venue", "conn", "seq", "request", "payload"]).to_pylist()
    ws_sent = sorted((r for r in sent if r["venue"] == "btcalpha" and r["conn"] == "ws:1"), key=lambda r: r["seq"])
    assert [r["payload"] for r in ws_sent][2: 2 + len(frames)] == frames  # truth holds every frame verbatim
    assert ws_sent[1]["payload"] == "40"
    assert any(r["conn"] == "rest" and r["request"].startswith("GET /api/v1/orderbook/BTC_USD/") for r in sent)
    book = pq.read_table(tmp_path / "book").to_pylist()
    checked = 0
    for pair in PAIRS:
        snap, seq = snaps[pair]
        ref = RefBook.from_snapshot(snap["sell"], snap["buy"])
        cps: dict[int, list] = {}
        for r in book:
            if r["venue"] == "btcalpha" and r["pair"] == pair and r["checkpoint_seq"] > seq:
                cps.setdefault(r["checkpoint_seq"], []).append(r)
        msgs = [m for name, m in events if name == f"book_{pair}"]
        assert len(msgs) >= 4 * 5 * 400 * 0.8
        for i, msg in enumerate(msgs, start=seq + 1):
            ref.apply(msg)
            assert not ref.crossed()
            if i in cps:
                for side in ("buy", "sell"):
                    want = [(r["order_id"], r["price"], r["amount"]) for r in cps[i] if r["side"] == side]
                    got = [(oid, Decimal(p), Decimal(a)) for oid, p, a in ref.side(side)]
                    assert got == want, (pair, i, side)
                checked += 1
        assert ref.problems == []
    assert checked >= 2 * 4 * 5 * 400 // 250 - 4


def _collect(seed: int) -> dict[str, list[str]]:
    async def run():
        cfg = _cfg()
        cfg.seed = seed
        async with Simulator(cfg) as sim:
            out = {}
            async with aiohttp.ClientSession() as s:
                eio3 = await s.ws_connect(ws_url(sim.urls["bitexbit"], "/socket.io/?EIO=3&transport=websocket"))
                eio4 = await s.ws_connect(ws_url(sim.urls["btcalpha"], "/socket.io/?EIO=4&transport=websocket"))
                await read_frames(eio4, lambda f: len(f) == 1)
                await eio4.send_str("40")
                await eio4.send_str('42["subscribe","book_BTC_USD"]')
                await read_frames(eio4, lambda f: f and f[-1].startswith("40{"))
                bito = await s.ws_connect(ws_url(sim.urls["bitopro"], "/ws/v1/pub/order-books/btc_usd:5"))
                trades = await s.ws_connect(ws_url(sim.urls["bitopro"], "/ws/v1/pub/trades/BTC_USD,eth_btc"))
                await read_frames(bito, lambda f: len(f) == 1)
                before = {v: venue_seq(sim, v) for v in ("btcalpha", "bitexbit")}
                for _ in range(3):
                    sim.advance(3)
                n = {v: venue_seq(sim, v) - before[v] for v in before}
                out["eio3"] = await read_events(eio3, n["bitexbit"])
                out["eio4"] = await read_events(eio4, n["btcalpha"])
                out["bitopro"] = await read_frames(bito, lambda f: len(f) >= 9)
                out["trades"] = await read_frames(trades, lambda f: len(f) >= 30)  # full recent lists, one per fill batch
                for ws in (eio3, eio4, bito, trades):
                    await ws.close()
            return out

    return asyncio.run(run())


def test_same_seed_same_client_actions_same_streams():
    a, b = _collect(3), _collect(3)
    assert a == b
    assert a["eio3"][:2] == ['0{"sid":"bitexbit-000001","upgrades":[],"pingInterval":25000,"pingTimeout":20000}', "40"]
    assert _collect(4)["eio3"][2:] != a["eio3"][2:]


def test_same_seed_same_truth(tmp_path):
    async def run(d):
        async with Simulator(_cfg(truth_dir=str(d), checkpoint_every=500)) as sim:
            sim.advance(3)

    tables = []
    for i in (1, 2):
        asyncio.run(run(tmp_path / str(i)))
        tables.append([pq.read_table(tmp_path / str(i) / t) for t in ("events", "book")])
    assert tables[0][0].num_rows > 1000 and tables[0][1].num_rows > 100
    assert tables[0][0].equals(tables[1][0]) and tables[0][1].equals(tables[1][1])
