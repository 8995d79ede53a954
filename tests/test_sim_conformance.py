"""Conformance: clients that know only the venues' documentation (python-socketio, raw engine.io v3, plain
websockets and HTTP) parse every simulator endpoint and get the simulator's true values (ccxt: test_sim_ccxt.py)."""
import asyncio
import json
import time
from decimal import Decimal

import aiohttp
import pytest

from recorder.sim.server import SimConfig, Simulator
from recorder.venues.signing import bitbay_body, bitbay_hash
from simfixtures import START, loads, read_frames, rest, threaded_sim, ws_url

BITOPRO_VECTOR = {
    "X-BITOPRO-APIKEY": "sim-key",
    "X-BITOPRO-PAYLOAD": "eyJpZGVudGl0eSI6ImhjbWxpbmpAZ21haWwuY29tIiwibm9uY2UiOjE1NTQzODA5MDkxMzF9",
    "X-BITOPRO-SIGNATURE": "01a85a9083db47c20da7196380598f3feacd3c76a9077aaf7ffaf08ce0091abf65b61778792607b010921adfe1c2941a",
}


@pytest.fixture(scope="module")
def tsim():
    with threaded_sim(SimConfig(seed=5, pairs=["BTC_USD", "ETH_BTC"], rate=20, warmup=300, paced=False)) as ts:
        yield ts


def _market(ts, venue, pair="BTC_USD"):
    return ts.sim.venues[venue].ctx.markets[pair]


def test_btcalpha_rest_shapes_and_styles(tsim):
    base = tsim.sim.urls["btcalpha"] + "/api/v1"
    truth = tsim.call(tsim.sim.true_book, "btcalpha", "BTC_USD")
    l3 = rest.get(f"{base}/orderbook/BTC_USD/", params={"group": 0, "limit_sell": 3}).json()
    assert len(l3["sell"]) == 3 and len(l3["buy"]) == len(truth["bids"])
    assert l3["sell"][0] == {"price": truth["asks"][0]["price"], "id": truth["asks"][0]["id"],
                             "amount": truth["asks"][0]["amount"],
                             "timestamp": f"{truth['asks'][0]['ts'] // 10**6 // 10**6}.{truth['asks'][0]['ts'] // 10**6 % 10**6:06d}"}
    grouped = rest.get(f"{base}/orderbook/BTC_USD", params={"group": 1}).json()
    assert set(grouped["buy"][0]) == {"price", "amount"}
    old = rest.get(f"{base}/orderbook/", params={"pair": "BTC_USD", "limit_bids": 2, "limit_asks": 1}).json()
    assert [o["id"] for o in old["bids"]] == [o["id"] for o in truth["asks"][:2]]  # "bids: sell orders"
    assert [o["id"] for o in old["asks"]] == [o["id"] for o in truth["bids"][:1]]
    asc = rest.get(f"{base}/exchanges/", params={"pair": "BTC_USD", "ordering": "id", "limit": 5, "offset": 2}).json()
    tape = list(_market(tsim, "btcalpha").trades)
    assert [int(t["id"]) for t in asc] == [t.tid for t in tape[2:7]]
    desc = rest.get(f"{base}/exchanges/", params={"pair": "BTC_USD"}).json()
    assert len(desc) == 100 and int(desc[0]["id"]) == tape[-1].tid
    charts = tsim.sim.urls["btcalpha"] + "/api/charts/BTC_USD/1/chart"
    rows = rest.get(charts).json()
    assert len(rows) <= 720 and int(rows[0]["time"]) > int(rows[-1]["time"])
    since = int(rows[2]["time"])
    assert [r["time"] for r in rest.get(charts + "/", params={"since": since}).json()] == [r["time"] for r in rows[:3]]
    assert rest.get(charts, params={"until": since, "limit": 1}).json() == [rows[2]]
    # bitexbit: same shapes; no 2017 form
    assert rest.get(tsim.sim.urls["bitexbit"] + "/api/v1/orderbook/", params={"pair": "BTC_USD"}).status_code == 404


def test_doc_style_numbers():
    async def run():
        cfg = SimConfig(seed=2, pairs=["BTC_USD"], rate=100, start=START, warmup=30, paced=False,
                        styles={"btcalpha": "doc", "bitexbit": "2024"})
        async with Simulator(cfg) as sim, aiohttp.ClientSession() as s:
            out = {}
            for v in ("btcalpha", "bitexbit"):
                async with s.get(sim.urls[v] + "/api/v1/exchanges/?limit=1") as r:
                    out[v] = loads(await r.text())[0]
                async with s.get(sim.urls[v] + "/api/v1/orderbook/BTC_USD/") as r:
                    out[v + "_book"] = loads(await r.text())["sell"][0]
            return out

    out = asyncio.run(run())
    doc, real = out["btcalpha"], out["bitexbit"]
    assert isinstance(doc["id"], int) and isinstance(doc["price"], Decimal) and doc["timestamp"] > START
    assert isinstance(real["id"], str) and isinstance(real["price"], str) and Decimal(real["timestamp"]) < START / 100
    assert isinstance(out["btcalpha_book"]["amount"], Decimal) and isinstance(out["bitexbit_book"]["amount"], str)


def test_socketio_eio4_and_raw_eio3_receive_book_events():
    import socketio  # a test extra: a missing client must fail, not skip

    async def run():
        async with Simulator(SimConfig(seed=3, pairs=["BTC_USD", "ETH_BTC"], rate=300, warmup=5,
                                       eio_ping_interval_ms=300, eio_ping_timeout_ms=2000)) as sim:
            got: list[dict] = []
            sio = socketio.AsyncClient(reconnection=False)
            sio.on("book_ETH_BTC", got.append)
            await sio.connect(sim.urls["btcalpha"], transports=["websocket"])
            await sio.emit("subscribe", "book_ETH_BTC")  # accepted and ignored
            await asyncio.sleep(1.5)  # several server pings answered by the client
            assert sio.connected
            await sio.disconnect()
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(ws_url(sim.urls["bitexbit"], "/socket.io/?EIO=3&transport=websocket")) as ws:
                    head = await read_frames(ws, lambda f: len(f) >= 2)
                    await ws.send_str("2")
                    raw = await read_frames(ws, lambda f: "3" in f and len(f) > 20)
                async with s.get(sim.urls["bitexbit"] + "/socket.io/?EIO=3&transport=polling") as r:
                    polling = await r.text()
            via = {}
            for transports in (None, ["polling"]):  # default: polling open, then upgrade to websocket
                seen: list[dict] = []
                c = socketio.AsyncClient(reconnection=False)
                c.on("book_BTC_USD", seen.append)
                await c.connect(sim.urls["btcalpha"], transports=transports)
                await asyncio.sleep(1.0)
                via[c.transport()] = len(seen)
                await c.disconnect()
            return got, head, raw, polling, via

    got, head, raw, polling, via = asyncio.run(run())
    assert len(got) > 50 and all(m["success"] is True for m in got)
    news = [m for m in got if "trades" in m]
    cancels = [m for m in got if m.get("cancelled")]
    assert news and cancels
    assert set(cancels[0]) == {"success", "date", "oid", "cancel_order_id", "price", "type", "amount", "pair", "cancelled"}
    assert isinstance(news[0]["price"], float) and isinstance(news[0]["date"], float)
    fills = [t for m in news for t in m["trades"]]
    assert fills and isinstance(fills[0]["price"], str) and set(fills[0]) == {"tid", "type", "price", "amount", "o_id"}
    opened = json.loads(head[0][1:])
    assert head[1] == "40" and opened["pingInterval"] == 300 and "maxPayload" not in opened
    assert any(f.startswith('42["book_') for f in raw)
    size, _, rest = polling.partition(":")  # EIO3 polling payload: <len>:<packet>…
    assert rest[: int(size)].startswith('0{"sid":"bitexbit-') and '"upgrades":["websocket"]' in rest
    assert rest[int(size):] == "2:40"
    assert via["websocket"] > 20 and via["polling"] > 20


def test_bitopro_ws_streams_and_signed_get():
    async def run():
        cfg = SimConfig(seed=4, pairs=["BTC_USD", "ETH_BTC"], rate=300, start=START, warmup=5, paced=False)
        async with Simulator(cfg) as sim, aiohttp.ClientSession() as s:
            base = sim.urls["bitopro"]
            books = await s.ws_connect(ws_url(base, "/ws/v1/pub/order-books?pairs=BTC_USD:10,eth_btc"))
            first = await read_frames(books, lambda f: len(f) >= 2)
            async with s.get(base + "/v3/order-book/btc_usd", params={"limit": 10}) as r:
                rest = await r.json()
            trades = await s.ws_connect(ws_url(base, "/ws/v1/pub/trades/btc_usd"))
            sim.advance(2)
            pushed = await read_frames(books, lambda f: len(f) >= 4)
            tr = await read_frames(trades, lambda f: len(f) >= 3)
            async with s.get(base + "/v3/accounts/balance", headers=BITOPRO_VECTOR) as r:
                ok = r.status
            bad = dict(BITOPRO_VECTOR, **{"X-BITOPRO-SIGNATURE": "0" * 96})
            async with s.get(base + "/v3/accounts/balance", headers=bad) as r:
                rejected = (r.status, await r.json())
            async with s.get(base + "/v3/order-book/btc_usd", params={"limit": 7}) as r:
                bad_limit = r.status
            await books.close()
            await trades.close()
            return first, rest, pushed, tr, ok, rejected, bad_limit

    first, rest, pushed, tr, ok, rejected, bad_limit = asyncio.run(run())
    snap = json.loads(first[0])
    assert snap["event"] == "ORDER_BOOK" and snap["pair"] == "BTC_USD" and snap["limit"] == 10
    assert snap["bids"] == rest["bids"] and snap["asks"] == rest["asks"] and "timestamp" not in rest
    assert json.loads(first[1])["limit"] == 5
    later = [json.loads(f) for f in pushed[2:]]
    assert all(m["timestamp"] % 200 == 0 for m in later)  # on the 200 ms grid
    t = json.loads(tr[0])
    assert t["event"] == "TRADE" and t["timestamp"] > 10**12 and t["data"][0]["timestamp"] < 10**10
    assert ok == 200 and rejected == (401, {"error": "Invalid Signature"}) and bad_limit == 422


def test_bitbay_trading_api_and_public():
    async def run():
        cfg = SimConfig(seed=6, pairs=["BTC_PLN"], rate=200, warmup=20, paced=False)
        async with Simulator(cfg) as sim, aiohttp.ClientSession() as s:
            url = sim.urls["bitbay"] + "/API/Trading/tradingApi.php"

            async def call(method, params, moment=None, secret="test-secret"):
                body = bitbay_body(method, int(time.time()) if moment is None else moment, params)
                headers = {"API-Key": "sim-key", "API-Hash": bitbay_hash(secret, body),
                           "Content-Type": "application/x-www-form-urlencoded"}
                async with s.post(url, data=body, headers=headers) as r:
                    return r.status, loads(await r.text())

            out = {"book": await call("orderbook", {"order_currency": "BTC", "payment_currency": "PLN"})}
            out["fast"] = await call("info", {})
            await asyncio.sleep(1.05)
            out["info"] = await call("info", {})
            out["badsign"] = await call("info", {}, secret="nope")
            out["stale"] = await call("info", {}, moment=int(time.time()) - 30)
            out["truth"] = sim.true_book("bitbay", "BTC_PLN")
            pub = sim.urls["bitbay"] + "/API/Public/BTCPLN"
            async with s.get(pub + "/trades.json") as r:
                out["oldest"] = loads(await r.text())
            async with s.get(pub + "/trades.json", params={"sort": "desc"}) as r:
                out["latest"] = loads(await r.text())
            out["last"] = sim.venues["bitbay"].ctx.markets["BTC_PLN"].trades[-1].tid
            first = sim.venues["bitbay"].ctx.markets["BTC_PLN"].trades[0].tid
            async with s.get(pub + "/trades.json", params={"since": first + 10}) as r:
                out["page"] = loads(await r.text())
            async with s.get(pub + "/orderbook.json") as r:
                out["public_book"] = loads(await r.text())
            async with s.get(pub + "/ticker.json") as r:
                out["ticker"] = loads(await r.text())
            out["first"] = first
            return out

    out = asyncio.run(run())
    status, book = out["book"]
    assert status == 200
    truth = out["truth"]
    assert [(b["quantity"], b["price"], b["currency"]) for b in book["bids"]] == [
        (Decimal(o["amount"]), Decimal(o["price"]) * Decimal(o["amount"]), "PLN") for o in truth["bids"]]
    assert out["fast"][0] == 429
    assert out["info"][1]["success"] == 1
    assert out["badsign"][1] == {"code": 502, "message": "Invalid sign"}
    assert out["stale"][1]["code"] == 503
    page = out["page"]
    assert len(page) == 50 and [int(t["tid"]) for t in page] == list(range(out["first"] + 11, out["first"] + 61))
    assert isinstance(page[0]["tid"], str) and isinstance(page[0]["date"], int) and isinstance(page[0]["price"], Decimal)
    # the real venue (vendor docs, ccxt issue 2320): without since the OLDEST 50; sort=desc for the newest
    assert [int(t["tid"]) for t in out["oldest"]] == list(range(out["first"], out["first"] + 50))
    assert [int(t["tid"]) for t in out["latest"]] == list(range(out["last"], out["last"] - 50, -1))
    assert out["public_book"]["bids"][0][0] == Decimal(truth["bids"][0]["price"])
    assert set(out["ticker"]) == {"max", "min", "last", "bid", "ask", "vwap", "average", "volume"}


def test_bitopro_behaves_like_the_captured_venue():
    """Captured from the live BitoPro (issue 13): socket books exact only in the first frame after connecting (later
    amounts rounded to amountPrecision), identical frames repeated, TRADE pushes carrying the full recent list newest
    first with 4 keys per item, the server pinging every second, and 422 {"error"} answers."""
    async def run():
        cfg = SimConfig(seed=4, pairs=["BTC_USD", "ETH_BTC"], rate=5, start=START, warmup=5, paced=False)
        async with Simulator(cfg) as sim, aiohttp.ClientSession() as s:
            base = sim.urls["bitopro"]
            out = {"ping_s": sim.venues["bitopro"].ping_s}
            books = await s.ws_connect(ws_url(base, "/ws/v1/pub/order-books/BTC_USD:10"), autoping=True)
            trades = await s.ws_connect(ws_url(base, "/ws/v1/pub/trades/btc_usd"))
            out["first"] = await read_frames(books, lambda f: len(f) >= 1)
            for _ in range(8):
                sim.advance(1)
                await asyncio.sleep(0.05)
            out["pushed"] = await read_frames(books, lambda f: len(f) >= 12)
            out["trades"] = await read_frames(trades, lambda f: len(f) >= 3)
            async with s.get(base + "/v3/provisioning/trading-pairs") as r:
                out["precision"] = {d["pair"]: int(d["amountPrecision"]) for d in (await r.json())["data"]}
            for name, path, q in (("bad_limit", "/v3/order-book/btc_usd", {"limit": 7}),
                                  ("bad_pair", "/v3/order-book/doge_xyz", {}),
                                  ("zero", "/v3/order-book/btc_usd", {"limit": 0})):
                async with s.get(base + path, params=q) as r:
                    out[name] = (r.status, await r.json())
            async with s.get(base + "/ws/v1/pub/order-books/DOGE_XYZ") as r:
                out["ws_bad_pair"] = (r.status, await r.read())
            await books.close()
            await trades.close()
            return out

    out = asyncio.run(run())
    assert out["ping_s"] == 1.0
    prec = out["precision"]["btc_usd"]
    first = json.loads(out["first"][0])
    later = [json.loads(f) for f in out["pushed"]]
    decimals = lambda x: len(x.split(".")[1].rstrip("0")) if "." in x else 0  # noqa: E731
    assert max(decimals(lv["amount"]) for lv in first["bids"] + first["asks"]) > prec  # exact
    assert all(decimals(lv["amount"]) <= prec for m in later for lv in m["bids"] + m["asks"])  # rounded
    assert any(a == b for a, b in zip(out["pushed"], out["pushed"][1:]))  # identical frames repeat
    lists = [json.loads(f)["data"] for f in out["trades"]]
    assert all(set(t) == {"timestamp", "price", "amount", "isBuyer"} for d in lists for t in d)
    assert all([t["timestamp"] for t in d] == sorted((t["timestamp"] for t in d), reverse=True) for d in lists)
    n = len(lists[1])
    assert 1 < n <= 20 and any(lists[1][k:] == lists[0][:n - k] for k in range(1, n))  # repeated across pushes
    assert out["bad_limit"][0] == 422 and set(out["bad_limit"][1]) == {"error"}
    assert out["bad_pair"][0] == 422 and set(out["bad_pair"][1]) == {"error"}
    assert out["zero"][0] == 200 and len(out["zero"][1]["bids"]) == 5
    assert out["ws_bad_pair"] == (200, b"")
