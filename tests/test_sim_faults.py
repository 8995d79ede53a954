"""Every fault kind, rate limits and heartbeat timeouts, observed from the client side; control endpoint and CLI."""
import asyncio
import json
import time

import aiohttp
import pytest

from recorder.sim.faults import Fault
from recorder.sim.server import SimConfig, Simulator, run_subprocess
from simfixtures import START, read_frames, rest, ws_url

EIO3 = "/socket.io/?EIO=3&transport=websocket"


def _cfg(**kw) -> SimConfig:
    base = dict(seed=9, pairs=["BTC_USD"], rate=300, start=START, warmup=5, paced=False)
    return SimConfig(**{**base, **kw})


async def _fault(s: aiohttp.ClientSession, sim: Simulator, **body) -> None:
    async with s.post(sim.urls["control"] + "/_sim/fault", json=body) as r:
        assert r.status == 200, await r.text()


async def _events(ws, n: int) -> list[str]:
    frames = await read_frames(ws, lambda f: sum(x.startswith("42") for x in f[-n:]) >= n or len(f) > 10 * n)
    return [f for f in frames if f.startswith("42")]


def test_drop_malformed_duplicate_reorder():
    async def run():
        async with Simulator(_cfg()) as sim, aiohttp.ClientSession() as s:
            ws = await s.ws_connect(ws_url(sim.urls["btcalpha"], EIO3))
            await read_frames(ws, lambda f: "40" in f)
            await _fault(s, sim, kind="malformed", venue="btcalpha", count=1)
            await _fault(s, sim, kind="duplicate", venue="btcalpha", count=2)
            await _fault(s, sim, kind="reorder", venue="btcalpha", count=1)
            sim.advance(0.2)
            frames = await read_frames(ws, lambda f: len(f) >= 20)
            await _fault(s, sim, kind="drop", venue="btcalpha")
            closed = await ws.receive(timeout=5)
            while closed.type == aiohttp.WSMsgType.TEXT:
                closed = await ws.receive(timeout=5)
            return frames, closed.type

    frames, closed = asyncio.run(run())
    bad = []
    for f in frames:
        try:
            json.loads(f[2:])
        except ValueError:
            bad.append(f)
    assert len(bad) == 1 and bad[0] == frames[0]
    assert frames[1] == frames[2] and frames[3] == frames[4]  # two duplicated frames
    dates = [json.loads(f[2:])[1]["date"] for f in frames[1:]]
    inversions = [i for i in range(len(dates) - 1) if dates[i] > dates[i + 1]]
    assert len(inversions) == 1  # one swapped pair
    assert closed in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


def test_stall_keeps_socket_but_stops_frames():
    async def run():
        async with Simulator(_cfg(paced=True, rate=400)) as sim, aiohttp.ClientSession() as s:
            ws = await s.ws_connect(ws_url(sim.urls["bitexbit"], EIO3))
            await read_frames(ws, lambda f: len(f) > 20)
            sim.inject(Fault("stall", "bitexbit", seconds=1.0))
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.2:  # drain what was already in flight
                try:
                    await ws.receive(timeout=0.05)
                except asyncio.TimeoutError:
                    break
            quiet0 = time.monotonic()
            msg = await ws.receive(timeout=5)
            return time.monotonic() - quiet0, msg.type, ws.closed

    gap, kind, closed = asyncio.run(run())
    assert gap >= 0.6 and kind == aiohttp.WSMsgType.TEXT and not closed


def test_http_errors_and_delay_with_venue_bodies():
    async def run():
        async with Simulator(_cfg(pairs=["BTC_PLN"])) as sim, aiohttp.ClientSession() as s:
            out = []
            for name, venue, path in (("btcalpha", "btcalpha", "/api/v1/pairs/"),
                                      ("bitopro", "bitopro", "/v3/order-book/btc_pln"),
                                      ("bitbay", "bitbay", "/rest/trading/orderbook/BTC-PLN"),
                                      ("legacy", "bitbay", "/API/Public/BTCPLN/trades.json")):
                for status in (429, 500, 502):
                    await _fault(s, sim, kind="http_error", venue=venue, status=status)
                    async with s.get(sim.urls[venue] + path) as r:
                        out.append((name, r.status, await r.json()))
                async with s.get(sim.urls[venue] + path) as r:
                    out.append((name, r.status, None))
            sim.inject(Fault("delay", "bitopro", seconds=0.5))
            t0 = time.monotonic()
            async with s.get(sim.urls["bitopro"] + "/v3/trades/btc_pln") as r:
                delayed = (r.status, time.monotonic() - t0)
            return out, delayed

    out, delayed = asyncio.run(run())
    by = {(v, st): body for v, st, body in out}
    assert all(st == 200 for v, st, body in out if body is None)
    assert "error" in by[("btcalpha", 502)] and "date" in by[("btcalpha", 502)]
    assert by[("bitopro", 429)] == {"error": "Too many requests"}
    # Zonda's REST answers {"status":"Fail","errors":[code]} whatever the status (exchanges.md 4.3), the legacy API
    # {"code":N,"message":...}
    assert by[("bitbay", 429)] == {"status": "Fail", "errors": ["ACTION_LIMIT_EXCEEDED"]}
    assert by[("bitbay", 500)]["status"] == "Fail"
    assert by[("legacy", 429)]["code"] == 429 and by[("legacy", 500)] == {"code": 500, "message": "Internal server error"}
    assert delayed[0] == 200 and delayed[1] >= 0.5


def test_documented_rate_limits_answer_429():
    """A burst gets the bucket's size plus what refilled while it ran (timed), never more; the rest are 429s."""
    async def run():
        async with Simulator(_cfg()) as sim, aiohttp.ClientSession() as s:
            async def hit(url):
                async with s.get(url) as r:
                    return r.status, await r.json()

            async def burst(url, n):
                t0 = time.monotonic()
                out = await asyncio.gather(*(hit(url) for _ in range(n)))
                return out, time.monotonic() - t0
            bx = await burst(sim.urls["bitexbit"] + "/api/v1/currencies/", 300)
            bp = await burst(sim.urls["bitopro"] + "/v3/tickers", 700)
            return bx, bp

    (bx, t_bx), (bp, t_bp) = asyncio.run(run())
    ok = sum(st == 200 for st, _ in bx)
    assert 100 <= ok <= 100 + 100 * t_bx + 1 and any(st == 429 and "error" in b for st, b in bx)  # 100/s
    ok = sum(st == 200 for st, _ in bp)
    assert 600 <= ok <= 600 + 10 * t_bp + 1 and {"error": "Too many requests"} in [b for st, b in bp if st == 429]  # 600/min


def test_heartbeat_timeouts_disconnect_silent_clients():
    async def run():
        cfg = _cfg(eio_ping_interval_ms=200, eio_ping_timeout_ms=300, bitopro_ping_s=0.2, bitopro_pong_timeout_s=0.3)
        async with Simulator(cfg) as sim, aiohttp.ClientSession() as s:
            silent = await s.ws_connect(ws_url(sim.urls["bitopro"], "/ws/v1/pub/trades/BTC_USD"), autoping=False)
            polite = await s.ws_connect(ws_url(sim.urls["bitopro"], "/ws/v1/pub/trades/BTC_USD"))
            eio4 = await s.ws_connect(ws_url(sim.urls["btcalpha"], "/socket.io/?EIO=4&transport=websocket"))
            await eio4.send_str("40")
            eio3 = await s.ws_connect(ws_url(sim.urls["bitexbit"], EIO3))
            kinds = []
            async with asyncio.timeout(5):
                while True:
                    m = await silent.receive()
                    kinds.append(m.type)
                    if m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        break
            eio4_frames, eio3_frames = [], []
            async with asyncio.timeout(5):
                while not eio4.closed:
                    m = await eio4.receive()
                    eio4_frames.append(m.data)
                while not eio3.closed:
                    m = await eio3.receive()
                    eio3_frames.append(m.data)
            return kinds, polite.closed, eio4_frames, eio3_frames

    kinds, polite_closed, eio4_frames, eio3_frames = asyncio.run(run())
    assert aiohttp.WSMsgType.PING in kinds and kinds[-1] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert not polite_closed
    assert "2" in eio4_frames  # server pings in EIO4; no pong -> closed
    assert "2" not in eio3_frames  # EIO3: the client must ping; silence -> closed


def test_control_truth_book_and_cli_subprocess():
    with run_subprocess("--seed", "1", "--rate", "20", "--warmup", "5", "--pairs", "BTC_USD,ETH_BTC",
                        "--fault", "http_error:bitbay:429", "--fault", "delay:bitexbit:0.4") as urls:
        assert set(urls) == {"btcalpha", "bitexbit", "bitopro", "bitbay", "control"}
        first = rest.get(urls["bitbay"] + "/rest/trading/ticker", timeout=5)
        assert first.status_code == 429 and first.json() == {"status": "Fail", "errors": ["ACTION_LIMIT_EXCEEDED"]}
        assert rest.get(urls["bitbay"] + "/rest/trading/ticker", timeout=5).status_code == 200
        t0 = time.monotonic()
        assert rest.get(urls["bitexbit"] + "/api/v1/currencies/", timeout=5).status_code == 200
        assert time.monotonic() - t0 >= 0.4
        pairs = rest.get(urls["btcalpha"] + "/api/v1/pairs/", timeout=5).json()
        assert [p["name"] for p in pairs] == ["BTC_USD", "ETH_BTC"]
        book = rest.get(urls["control"] + "/_sim/truth/book", params={"venue": "bitbay", "pair": "ETH_BTC"}, timeout=5).json()
        assert book["bids"] and float(book["bids"][0]["price"]) < float(book["asks"][0]["price"])
        bad = rest.post(urls["control"] + "/_sim/fault", body={"kind": "meteor"}, timeout=5)
        assert bad.status_code == 400
        ok = rest.post(urls["control"] + "/_sim/fault", body={"kind": "http_error", "venue": "bitopro", "status": 500}, timeout=5)
        assert ok.status_code == 200
        assert rest.get(urls["bitopro"] + "/v3/tickers", timeout=5).status_code == 500


def test_drop_reaches_polling_clients():
    socketio = pytest.importorskip("socketio", reason="test extra: python-socketio>=5.11")

    async def run():
        async with Simulator(_cfg(paced=True, rate=100)) as sim:
            gone = asyncio.Event()
            c = socketio.AsyncClient(reconnection=False)
            c.on("disconnect", gone.set)
            await c.connect(sim.urls["bitexbit"], transports=["polling"])
            await asyncio.sleep(0.3)
            sim.inject(Fault("drop", "bitexbit"))
            await asyncio.wait_for(gone.wait(), 5)
            return c.connected, sim.venues["bitexbit"].eio.sessions

    connected, sessions = asyncio.run(run())
    assert not connected and not sessions
