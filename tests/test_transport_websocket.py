"""Plain websocket client against real aiohttp servers on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest
from aiohttp import web

from recorder.transport import TransportError, WebSocketClient


def run(coro, timeout: float = 15.0):
    async def main():
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def serve(handler):
    app = web.Application()
    app.router.add_get("/ws/v1/pub/order-books/BTC_TWD", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"ws://127.0.0.1:{runner.addresses[0][1]}/ws/v1/pub/order-books/BTC_TWD"
    finally:
        await runner.cleanup()


def test_server_pings_answered_and_idle_timer_reset_by_pings():
    state = {"pongs": 0, "pings": 0}

    async def handler(request):
        ws = web.WebSocketResponse(autoping=False)  # see the client's pongs
        await ws.prepare(request)

        async def pinger():
            for _ in range(8):  # 1.6 s of pings only, then data
                await asyncio.sleep(0.2)
                await ws.ping(b"hb")
                state["pings"] += 1
            await ws.send_str('{"event":"ORDER_BOOK","price":"1188178"}')
            await ws.send_bytes(b"\x00\xffbin")

        task = asyncio.create_task(pinger())
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.PONG:
                    state["pongs"] += 1
        finally:
            task.cancel()
            await asyncio.wait([task])
        return ws

    async def main():
        async with serve(handler) as url, aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            async with WebSocketClient(session, url, idle_timeout=0.5) as ws:
                a = await ws.recv()
                b = await ws.recv()
                elapsed = time.monotonic() - t0
        return a, b, elapsed

    a, b, elapsed = run(main())
    assert elapsed > 1.5  # much longer than idle_timeout: pings kept it alive
    assert a.kind == "message" and a.raw == b'{"event":"ORDER_BOOK","price":"1188178"}' and not a.binary
    assert b.kind == "message" and b.raw == b"\x00\xffbin" and b.binary
    assert a.ts_recv <= b.ts_recv
    assert state["pings"] == 8 and state["pongs"] >= 7


def test_idle_server_raises_within_idle_timeout():
    async def handler(request):
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_str("hello")
        async for _ in ws:
            pass
        return ws

    async def main():
        async with serve(handler) as url, aiohttp.ClientSession() as session:
            async with WebSocketClient(session, url, idle_timeout=0.3) as ws:
                first = await ws.recv()
                t0 = time.monotonic()
                with pytest.raises(TransportError) as ei:
                    await ws.recv()
                elapsed = time.monotonic() - t0
                with pytest.raises(TransportError):  # sticky
                    await ws.recv()
        return first, ei.value, elapsed

    first, err, elapsed = run(main())
    assert first.raw == b"hello"
    assert "idle timeout" in str(err)
    assert 0.25 <= elapsed < 0.8


@pytest.mark.parametrize("how,expect", [("close", "close_code=4001"), ("drop", "closed by peer")])
def test_server_close_reported(how, expect):
    async def handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("x")
        await asyncio.sleep(0.05)
        if how == "close":
            await ws.close(code=4001, message=b"bye now")
        else:
            request.transport.abort()
        return ws

    async def main():
        async with serve(handler) as url, aiohttp.ClientSession() as session:
            async with WebSocketClient(session, url, idle_timeout=5) as ws:
                frames = []
                t0 = time.monotonic()
                with pytest.raises(TransportError) as ei:
                    async for f in ws:
                        frames.append(f)
                return frames, ei.value, time.monotonic() - t0

    frames, err, elapsed = run(main())
    assert [f.raw for f in frames] == [b"x"]
    assert expect in str(err) and elapsed < 1.0
    if how == "close":
        assert "bye now" in str(err) and err.close_code == 4001


def test_send_on_open_and_handshake_failure_has_no_header_values():
    secret = "s3cr3t-signature-value"
    got = []

    async def handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            got.append(msg.data)
            await ws.send_str("ack")
        return ws

    async def main():
        async with serve(handler) as url, aiohttp.ClientSession() as session:
            async with WebSocketClient(session, url, send_on_open=['{"action":"subscribe"}'],
                                       headers={"X-SIGN": secret}) as ws:
                f = await ws.recv()
            bad = url.replace("order-books", "nope")
            with pytest.raises(TransportError) as ei:
                async with WebSocketClient(session, bad, headers={"X-SIGN": secret}):
                    pass
            return f, ei.value

    f, err = run(main())
    assert got == ['{"action":"subscribe"}'] and f.raw == b"ack"
    assert "status=404" in str(err)
    for text in (str(err), repr(err), repr(err.args)):
        assert secret not in text
    assert err.__cause__ is None and err.__context__ is None
