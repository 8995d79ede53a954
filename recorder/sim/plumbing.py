"""Shared venue plumbing: rate limits, REST fault/truth middleware, and socket connections with bounded queues."""
from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from aiohttp import web

from recorder.sim.engine import Market
from recorder.sim.faults import VenueFaults
from recorder.sim.truth import TruthWriter

log = logging.getLogger(__name__)

FAULT_MESSAGES = {429: "Too many requests", 500: "Internal server error", 502: "Bad gateway"}
#: A connection whose unsent backlog passes this many frames is dropped (slow consumer policy).
MAX_BACKLOG = 500_000
#: The sender pauses while the socket's transport buffers more than this many bytes.
WRITE_HIGH_WATER = 1 << 20


class RateLimiter:
    """Token bucket per key: `n` requests per `per_s` seconds, bursts up to `n`."""

    def __init__(self, n: int, per_s: float) -> None:
        self.n, self.rate = n, n / per_s
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, t = self._buckets.get(key, (float(self.n), now))
        tokens = min(float(self.n), tokens + (now - t) * self.rate)
        if len(self._buckets) > 10_000:
            self._buckets.clear()
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


@dataclass
class VenueContext:
    """Everything a venue's API needs: its markets, faults, truth writer, credentials and limits."""

    name: str
    markets: dict[str, Market]
    faults: VenueFaults
    truth: TruthWriter | None
    api_key: str
    api_secret: str
    limits: dict[str, RateLimiter] = field(default_factory=dict)
    style: str = "2024"

    def market(self, pair: str) -> Market | None:
        return self.markets.get(pair.upper())


#: (status, message, request path) -> the venue's error answer (a venue may serve two API generations)
ErrorBody = Callable[[int, str, str], web.Response]


def rest_middleware(ctx: VenueContext, error: ErrorBody, private_paths: tuple[str, ...] = ()):
    """Injected REST faults (status, delay), the public per-IP limit, and truth capture of every body sent."""

    @web.middleware
    async def mw(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        delay = ctx.faults.take_delay()
        if delay:
            await asyncio.sleep(delay)
        status = ctx.faults.take_http_error()
        public = ctx.limits.get("public")
        if status is not None:
            resp = error(status, FAULT_MESSAGES[status], request.path)
        elif public and not request.path.startswith(private_paths or ("\0",)) and not public.allow(request.remote or "?"):
            resp = error(429, "Too many requests", request.path)
        else:
            resp = await handler(request)
        if ctx.truth is not None and isinstance(resp, web.Response) and resp.body is not None:
            body = bytes(resp.body) if isinstance(resp.body, (bytes, bytearray)) else b""
            ctx.truth.message(ctx.name, "rest", body.decode("utf-8", "replace"),
                              request=f"{request.method} {request.path_qs}", status=resp.status)
        return resp

    return mw


class Conn:
    """One socket client: frames queue up and a sender task writes them, honouring stalls; truth sees each one."""

    def __init__(self, hub: "Hub", ws: web.WebSocketResponse | None, transport: asyncio.Transport | None,
                 cid: int) -> None:
        self.hub, self.ws, self.transport, self.cid = hub, ws, transport, cid  # no ws: a polling session
        self.closed = False
        self.name = f"ws:{cid}"
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.ready = False  # receives broadcasts only once ready (EIO4: after the namespace connect)
        self.topics: frozenset = frozenset()

    def push(self, frames: list[str]) -> None:
        self.queue.extend(frames)
        self.wake.set()
        if len(self.queue) > MAX_BACKLOG:
            log.warning("%s %s: backlog over %d frames, dropping the connection", self.hub.ctx.name, self.name, MAX_BACKLOG)
            self.queue.clear()
            self.hub.closing.append(self)
            self.hub.wake_reaper()

    async def close(self, grace_s: float = 1.0) -> None:
        """Close handshake, or abort the TCP connection when the client does not answer within `grace_s`."""
        self.closed = True
        self.wake.set()
        if self.ws is None:
            return
        try:
            await asyncio.wait_for(self.ws.close(), grace_s)
        except (asyncio.TimeoutError, ConnectionError):
            if self.transport is not None:
                self.transport.abort()

    async def run_sender(self) -> None:
        """Write queued frames in order until cancelled; frames queued during a stall are discarded.

        Everything queued is encoded as websocket text frames and handed to the transport in one write per
        event-loop turn (instead of one `send_str` await per frame), waiting while the transport's buffer is full.
        """
        q, ctx, transport = self.queue, self.hub.ctx, self.transport
        truth = ctx.truth
        while True:
            if not q:
                self.wake.clear()
                await self.wake.wait()
            if ctx.faults.stalled():
                q.clear()
                continue
            if transport is None or transport.is_closing():
                return
            batch = [q.popleft() for _ in range(min(len(q), 2000))]
            transport.write(b"".join(map(ws_text_frame, batch)))
            if truth is not None:
                for f in batch:
                    truth.message(ctx.name, self.name, f)
            while transport.get_write_buffer_size() > WRITE_HIGH_WATER and not transport.is_closing():
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)


def ws_text_frame(text: str) -> bytes:
    """One unmasked, uncompressed, final websocket text frame (server to client, RFC 6455)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + data
    return struct.pack("!BBQ", 0x81, 127, n) + data


class Hub:
    """A venue's live socket connections; broadcasts apply stream faults once, then fan out."""

    def __init__(self, ctx: VenueContext) -> None:
        self.ctx = ctx
        self.conns: set[Conn] = set()
        self.closing: list[Conn] = []
        self._n = 0
        self._reap = asyncio.Event()

    def open(self, ws: web.WebSocketResponse | None, transport: asyncio.Transport | None) -> Conn:
        self._n += 1
        c = Conn(self, ws, transport, self._n)
        self.conns.add(c)
        return c

    def close(self, c: Conn) -> None:
        self.conns.discard(c)

    def broadcast(self, frames: list[str], topic: object = None) -> None:
        """Send frames to every ready connection (subscribed to `topic` when one is given)."""
        if not frames or not self.conns:
            return
        frames = self.ctx.faults.transform(frames)
        for c in list(self.conns):
            if c.ready and (topic is None or topic in c.topics):
                c.push(frames)

    def wake_reaper(self) -> None:
        self._reap.set()

    async def run_reaper(self) -> None:
        """Close connections marked for closing (overflowed backlog or a `drop` fault), until cancelled."""
        while True:
            await self._reap.wait()
            self._reap.clear()
            doomed, self.closing = self.closing, []
            for c in doomed:
                self.conns.discard(c)
            await asyncio.gather(*(c.close() for c in doomed))

    def drop_all(self) -> None:
        """Fault `drop`: close every connection of this venue."""
        self.closing.extend(self.conns)
        self.wake_reaper()


class Num(str):
    """A decimal string to be written as a bare JSON number, exactly as spelled."""


def dumps(obj: object) -> str:
    """Compact JSON where Num values are emitted as number literals (exact decimals, no float rounding)."""
    if isinstance(obj, Num):
        return str.__str__(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    return json.dumps(obj, ensure_ascii=False)


def json_response(obj: object, status: int = 200) -> web.Response:
    return web.Response(text=dumps(obj), status=status, content_type="application/json")


async def serve_ws(hub: "Hub", request: web.Request, reader) -> web.WebSocketResponse:
    """A plain websocket client of `hub`: `reader(conn)` handles what the client sends while the sender writes
    the frames queued for it; both end (and the connection closes) when the client goes."""
    from recorder.sim.engineio_server import run_tasks  # engineio_server imports this module

    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    conn = hub.open(ws, request.transport)
    conn.ready = True
    try:
        await run_tasks(reader(conn), conn.run_sender())
    finally:
        hub.close(conn)
        await ws.close()
    return ws
