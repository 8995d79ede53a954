"""Minimal engine.io v3 + v4 server (socket.io namespace "/") on aiohttp: websocket and long-polling transports.

python-engineio's server speaks only protocol 4, and BTC-Alpha's 2017-era feed was most likely protocol 3
(exchanges.md §5), so this module implements both from the wire facts: the open packet, EIO3 client-ping /
server-pong with an automatic `40`, EIO4 server-ping / client-pong with a client `40` answered by `40{"sid"}`,
and `42[...]` events. Websocket clients (`transport=websocket`) get everything at once; polling clients open with
`transport=polling` (payloads framed `<len>:<packet>` in v3, joined by `\\x1e` in v4) and may upgrade to websocket
(`2probe`/`3probe`, `5`). Client `42` emits (e.g. subscribes) are accepted and ignored.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

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


@dataclass
class Session:
    """One engine.io session: its connection, protocol version and heartbeat times."""

    conn: Conn
    eio: str
    sid: str
    polling: bool
    seen: float = field(default_factory=time.monotonic)  # last packet from the client
    pinged: float = field(default_factory=time.monotonic)  # last server ping (EIO4)
    pong: float = field(default_factory=time.monotonic)  # last client pong (EIO4)
    getting: bool = False  # a polling GET is pending
    upgrading: bool = False


def encode_payload(eio: str, packets: list[str]) -> str:
    return "".join(f"{len(p)}:{p}" for p in packets) if eio == "3" else "\x1e".join(packets)


def decode_payload(eio: str, body: str) -> list[str]:
    if eio == "4":
        return body.split("\x1e")
    out, i = [], 0
    while i < len(body):
        colon = body.index(":", i)
        n = int(body[i:colon])
        out.append(body[colon + 1: colon + 1 + n])
        i = colon + 1 + n
    return out


class EngineIOServer:
    """Serves `/socket.io/` for one venue; connections join `hub` and get its `42["book_<PAIR>",…]` broadcasts."""

    def __init__(self, hub: Hub, ping_interval_ms: int = 25_000, ping_timeout_ms: int = 20_000) -> None:
        self.hub = hub
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.sessions: dict[str, Session] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.route(m, p, self.handle) for m in ("GET", "POST") for p in ("/socket.io/", "/socket.io")]

    @staticmethod
    def _error(code: int, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message}, status=400)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        eio, transport, sid = request.query.get("EIO"), request.query.get("transport"), request.query.get("sid")
        if eio not in ("3", "4"):
            return self._error(5, "Unsupported protocol version")
        sess = self.sessions.get(sid) if sid else None
        if sid and (sess is None or sess.eio != eio):
            return self._error(1, "Session ID unknown")
        if transport == "websocket" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await (self._upgrade(request, sess) if sess else self._websocket(request, eio))
        if transport != "polling":
            return self._error(0, "Transport unknown")
        if sess is None:
            return self._poll_open(request, eio)
        if not sess.polling:
            return self._error(3, "Bad request")
        return await (self._poll_post(request, sess) if request.method == "POST" else self._poll_get(sess))

    def _open(self, conn: Conn, eio: str, polling: bool) -> Session:
        sid = f"{self.hub.ctx.name}-{conn.cid:06d}"
        opened = {"sid": sid, "upgrades": ["websocket"] if polling else [], "pingInterval": self.ping_interval_ms,
                  "pingTimeout": self.ping_timeout_ms}
        if eio == "4":
            opened["maxPayload"] = 1_000_000
        conn.push(["0" + json.dumps(opened, separators=(",", ":"))])
        if eio == "3":
            conn.push(["40"])  # socket.io 1.x/2.x connects the default namespace itself
            conn.ready = True
        sess = self.sessions[sid] = Session(conn, eio, sid, polling)
        return sess

    def _on_packet(self, sess: Session, data: str) -> bool:
        """Handle one client packet; False when the client closes."""
        conn = sess.conn
        sess.seen = time.monotonic()
        if data == "2" and sess.eio == "3":
            conn.push(["3"])
        elif data == "3":
            sess.pong = time.monotonic()
        elif data.startswith("40") and sess.eio == "4":
            conn.push(['40{"sid":"' + sess.sid + '"}'])
            conn.ready = True
        elif data == "1" or data.startswith("41"):
            return False
        return True

    def _end(self, sess: Session) -> None:
        self.sessions.pop(sess.sid, None)
        self.hub.closing.append(sess.conn)
        self.hub.wake_reaper()

    # --- websocket transport ----------------------------------------------------------------------------
    async def _websocket(self, request: web.Request, eio: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        sess = self._open(self.hub.open(ws, request.transport), eio, polling=False)
        await self._serve_ws(sess)
        return ws

    async def _serve_ws(self, sess: Session) -> None:
        try:
            await run_tasks(self._reader(sess), sess.conn.run_sender())
        finally:
            self.sessions.pop(sess.sid, None)
            self.hub.close(sess.conn)
            await sess.conn.ws.close()

    async def _reader(self, sess: Session) -> None:
        async for msg in sess.conn.ws:
            if msg.type == WSMsgType.TEXT:
                if not self._on_packet(sess, msg.data):
                    return
            elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                return

    async def _upgrade(self, request: web.Request, sess: Session) -> web.StreamResponse:
        """Polling → websocket: `2probe`/`3probe`, then `5`; the pending poll is released with a noop."""
        if not sess.polling:
            return self._error(3, "Bad request")
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        try:
            async with asyncio.timeout(self.ping_timeout_ms / 1000):
                probe = await ws.receive()
                if probe.type != WSMsgType.TEXT or probe.data != "2probe":
                    return ws
                await ws.send_str("3probe")
                upgrade = await ws.receive()
                if upgrade.type != WSMsgType.TEXT or upgrade.data != "5":
                    return ws
                sess.upgrading = True
                sess.conn.wake.set()
                while sess.getting:
                    await asyncio.sleep(0.005)
        except TimeoutError:
            await ws.close()
            return ws
        sess.polling = False
        sess.conn.ws, sess.conn.transport = ws, request.transport
        sess.conn.wake.set()
        await self._serve_ws(sess)
        return ws

    # --- polling transport ------------------------------------------------------------------------------
    def _poll_open(self, request: web.Request, eio: str) -> web.Response:
        sess = self._open(self.hub.open(None, None), eio, polling=True)
        return self._payload(sess, list(sess.conn.queue))

    def _payload(self, sess: Session, packets: list[str]) -> web.Response:
        sess.conn.queue.clear()
        truth = self.hub.ctx.truth
        if truth is not None:
            for p in packets:
                truth.message(self.hub.ctx.name, sess.conn.name, p)
        return web.Response(text=encode_payload(sess.eio, packets), content_type="text/plain")

    async def _poll_get(self, sess: Session) -> web.Response:
        """Long poll: answer with everything queued, or a noop after pingInterval (or on upgrade)."""
        if sess.getting:
            return self._error(3, "Bad request")
        conn = sess.conn
        sess.getting = True
        try:
            deadline = time.monotonic() + self.ping_interval_ms / 1000
            while not conn.queue and not conn.closed and not sess.upgrading and time.monotonic() < deadline:
                conn.wake.clear()
                try:
                    await asyncio.wait_for(conn.wake.wait(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                if self.hub.ctx.faults.stalled():
                    conn.queue.clear()
            packets = list(conn.queue)
            if conn.closed:
                self.sessions.pop(sess.sid, None)
                packets.append("1")
            return self._payload(sess, packets or ["6"])
        finally:
            sess.getting = False

    async def _poll_post(self, request: web.Request, sess: Session) -> web.Response:
        try:
            packets = decode_payload(sess.eio, await request.text())
        except ValueError:
            return self._error(3, "Bad request")
        for p in packets:
            if not self._on_packet(sess, p):
                self._end(sess)
                break
        return web.Response(text="ok", content_type="text/plain")

    # --- heartbeats -------------------------------------------------------------------------------------
    async def run_heartbeats(self) -> None:
        """Until cancelled: EIO4 server pings; sessions whose client went silent (no ping / no pong) are closed."""
        interval, timeout = self.ping_interval_ms / 1000, self.ping_timeout_ms / 1000
        was_stalled = False
        while True:
            await asyncio.sleep(min(interval, timeout) / 4)
            if self.hub.ctx.faults.stalled():
                was_stalled = True
                continue
            now = time.monotonic()
            for sess in list(self.sessions.values()):
                if was_stalled:  # heartbeats paused with the stream: start them afresh
                    sess.seen = sess.pinged = sess.pong = now
                elif sess.eio == "3":
                    if now - sess.seen > interval + timeout:
                        self._end(sess)
                elif sess.pong < sess.pinged:  # a ping is outstanding
                    if now - sess.pinged > timeout:
                        self._end(sess)
                elif now - sess.pinged >= interval:
                    sess.pinged = now
                    sess.conn.push(["2"])
            was_stalled = False
