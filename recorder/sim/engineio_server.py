"""Minimal engine.io v3 + v4 websocket server (socket.io namespace "/") on aiohttp.

python-engineio's server speaks only protocol 4, and BTC-Alpha's 2017-era feed was most likely protocol 3
(exchanges.md §5), so this handler implements both from the wire facts: the open packet, EIO3 client-ping /
server-pong with an automatic `40`, EIO4 server-ping / client-pong with a client `40` answered by `40{"sid"}`,
and `42[...]` events. Only the websocket transport is served (clients must pass `transport=websocket`); a
polling request gets engine.io's "Transport unknown" error. Client `42` emits (e.g. subscribes) are ignored.
"""
from __future__ import annotations

import asyncio
import json
import time

from aiohttp import WSMsgType, web

from recorder.sim.plumbing import Conn, Hub


async def run_tasks(main, *background) -> None:
    """Await `main` with `background` coroutines running beside it; they are cancelled and awaited when it ends."""
    tasks = [asyncio.create_task(c) for c in background]
    try:
        await main
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class EngineIOServer:
    """Serves `/socket.io/` for one venue; connections join `hub` and get its `42["book_<PAIR>",…]` broadcasts."""

    def __init__(self, hub: Hub, ping_interval_ms: int = 25_000, ping_timeout_ms: int = 20_000) -> None:
        self.hub = hub
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/socket.io/", self.handle), web.get("/socket.io", self.handle)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        eio = request.query.get("EIO")
        if eio not in ("3", "4"):
            return web.json_response({"code": 5, "message": "Unsupported protocol version"}, status=400)
        if request.query.get("transport") != "websocket" or request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"code": 0, "message": "Transport unknown"}, status=400)
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = self.hub.open(ws, request.transport)
        sid = f"{self.hub.ctx.name}-{conn.cid:06d}"
        opened = {"sid": sid, "upgrades": [], "pingInterval": self.ping_interval_ms, "pingTimeout": self.ping_timeout_ms}
        if eio == "4":
            opened["maxPayload"] = 1_000_000
        conn.push(["0" + json.dumps(opened, separators=(",", ":"))])
        if eio == "3":
            conn.push(["40"])  # socket.io 1.x/2.x connects the default namespace itself
            conn.ready = True
        state = {"seen": time.monotonic(), "pong": time.monotonic()}
        watchdog = self._eio3_watchdog(ws, state) if eio == "3" else self._eio4_pinger(conn, state)
        try:
            await run_tasks(self._reader(conn, eio, sid, state), conn.run_sender(), watchdog)
        finally:
            self.hub.close(conn)
            await ws.close()
        return ws

    async def _reader(self, conn: Conn, eio: str, sid: str, state: dict) -> None:
        async for msg in conn.ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    return
                continue
            data: str = msg.data
            state["seen"] = time.monotonic()
            if data == "2" and eio == "3":
                conn.push(["3"])
            elif data == "2probe":
                conn.push(["3probe"])
            elif data == "3":
                state["pong"] = time.monotonic()
            elif data.startswith("40") and eio == "4":
                conn.push(['40{"sid":"' + sid + '"}'])
                conn.ready = True
            elif data == "1" or data.startswith("41"):
                return

    async def _eio3_watchdog(self, ws: web.WebSocketResponse, state: dict) -> None:
        """EIO3: close when the client has been silent (no ping) for pingInterval + pingTimeout."""
        limit = (self.ping_interval_ms + self.ping_timeout_ms) / 1000
        while True:
            await asyncio.sleep(limit / 4)
            if time.monotonic() - state["seen"] > limit and not self.hub.ctx.faults.stalled():
                await ws.close()
                return

    async def _eio4_pinger(self, conn: Conn, state: dict) -> None:
        """EIO4: send `2` every pingInterval; close if no `3` comes back within pingTimeout."""
        while True:
            await asyncio.sleep(self.ping_interval_ms / 1000)
            sent = time.monotonic()
            conn.push(["2"])
            await asyncio.sleep(self.ping_timeout_ms / 1000)
            if state["pong"] < sent and not self.hub.ctx.faults.stalled():
                await conn.ws.close()
                return
