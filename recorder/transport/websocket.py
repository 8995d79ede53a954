"""Plain websocket client (streams chosen by URL, server-side WS ping frames).

* Server ping frames are answered by aiohttp (``autoping``) inside ``receive()``.
* Liveness: if nothing arrives (no data frame, no ping, no pong) for ``idle_timeout``
  seconds while the consumer is waiting, the connection is dead: ``TransportError``.
* Every data frame (text or binary) is yielded verbatim as ``Frame(kind="message")``.
* The connection ending for any reason raises ``TransportError`` whose message carries the
  close code (and reason, if any).

Pull model: frames are read in the consumer's task (no reader task, no queue), so TCP
backpressure applies and memory is bounded. Iterate promptly: pings are answered while
the consumer is inside ``__anext__``.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from .base import Frame, TransportError, close_description, open_or_fail, text_bytes, ws_connect_kwargs

__all__ = ["WebSocketClient"]


class WebSocketClient:
    """``async with WebSocketClient(session, url) as ws: async for frame in ws: ...``

    ``send_on_open``: raw text frames sent right after connecting (subscriptions).
    ``heartbeat``: if set, we also send our own WS pings after that many idle seconds and
    drop the connection if no pong comes within half of it (aiohttp heartbeat).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        idle_timeout: float = 30.0,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        heartbeat: float | None = None,
        headers: Mapping[str, str] | None = None,
        send_on_open: Sequence[str] = (),
        max_msg_size: int = 16 * 1024 * 1024,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be > 0")
        self._session = session
        self.url = url
        self.idle_timeout = idle_timeout
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.heartbeat = heartbeat
        self._headers = headers
        self._send_on_open = list(send_on_open)
        self._max_msg_size = max_msg_size
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._dead: str | None = None

    @property
    def closed(self) -> bool:
        return self._ws is None or self._ws.closed

    async def __aenter__(self) -> "WebSocketClient":
        if self._ws is not None:
            raise RuntimeError("WebSocketClient connects once; create a new instance to reconnect")
        await open_or_fail(self._open, self.open_timeout, self._abort, "websocket connect failed")
        return self

    async def _open(self) -> None:
        self._ws = await self._session.ws_connect(
            self.url,
            autoping=True,
            autoclose=True,
            heartbeat=self.heartbeat,
            headers=self._headers,
            max_msg_size=self._max_msg_size,
            **ws_connect_kwargs(self.close_timeout),
        )
        for raw in self._send_on_open:
            await self.send_str(raw)

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the websocket (idempotent, bounded by ``close_timeout``)."""
        ws = self._ws
        if ws is None:
            return
        try:
            await ws.close()
        except Exception:
            pass

    async def _abort(self) -> None:
        ws = self._ws
        if ws is not None:
            try:
                await ws.close()
            except Exception:
                pass

    async def send_str(self, data: str) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise TransportError("websocket is closed")
        try:
            async with self._send_lock:
                await ws.send_str(data)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise TransportError(f"websocket send failed: {type(exc).__name__}") from None

    def __aiter__(self) -> "WebSocketClient":
        return self

    async def __anext__(self) -> Frame:
        return await self.recv()

    async def recv(self) -> Frame:
        """Next data frame; raises TransportError when the connection is over."""
        ws = self._ws
        if ws is None:
            raise TransportError("websocket not connected")
        if self._dead is not None:
            raise TransportError(self._dead)
        try:
            msg = await ws.receive(timeout=self.idle_timeout)
        except TimeoutError:
            self._dead = f"idle timeout: nothing received for {self.idle_timeout}s"
            await self._abort()
            raise TransportError(self._dead) from None
        ts = time.time_ns()
        t = msg.type
        if t == aiohttp.WSMsgType.TEXT:
            return Frame(kind="message", raw=text_bytes(msg.data), ts_recv=ts)
        if t == aiohttp.WSMsgType.BINARY:
            return Frame(kind="message", raw=bytes(msg.data), ts_recv=ts, binary=True)
        # CLOSE / CLOSING / CLOSED / ERROR (PING/PONG are consumed by autoping)
        if t == aiohttp.WSMsgType.ERROR:
            self._dead = f"websocket error: {type(msg.data).__name__} {close_description(ws)}"
        else:
            self._dead = f"websocket closed by peer: {close_description(ws, msg)}"
        await self._abort()
        raise TransportError(self._dead, close_code=ws.close_code)
