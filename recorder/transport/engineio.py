"""socket.io over engine.io (protocol 3 and 4), or raw engine.io messages; websocket transport only.

Framing: ``socketio`` (root namespace; events ``42["name",...]``) or ``engineio`` (bare engine.io
message packets ``4<payload>``, yielded as ``Frame(kind="message")``; no namespace step).
Protocol: ``eio`` 3, 4 or ``"auto"``. Auto asks for 3 (engine.io 3 servers speak nothing else, 4+ servers
with allowEIO3 accept it) and, when the server refuses 3, connects again asking for 4. With protocol 4
the heartbeat adapts: the client answers the server's pings, and if none has come pingInterval +
pingTimeout/2 after the open packet it pings itself (a protocol 3 server, e.g. a wrong ``eio = 4``,
waits for that). Note that engine.io 4+ sends ``maxPayload`` even in protocol 3: it says nothing.

Wire format (shared/exchanges.md §5):

=================  ===========================================  =====================================
item               EIO=3                                        EIO=4
=================  ===========================================  =====================================
open               ``0{"sid","pingInterval","pingTimeout",..}``  same
heartbeat          client sends ``2`` every pingInterval,        server sends ``2``, client answers ``3``
                   server answers ``3``
namespace connect  server auto-sends ``40``                     client sends ``40``, server ``40{"sid"}``
event              ``42["name",arg...]``                        same
=================  ===========================================  =====================================

Behaviour:
  * any ``2`` (ping) is answered with ``3`` (+ the same payload); with ``client_pings`` (default:
    EIO=3) a task owned by the client sends ``2`` every pingInterval (adaptive otherwise, see above).
  * a refused or broken-off websocket handshake is repeated on a bare connection to read the server's
    reason into the error (engine.io 4+ answers protocol 3 after the 101 with
    ``HTTP/1.1 400 Bad Request ... Unsupported protocol version``).
  * v4: ``40`` is sent right after the open packet and ``40`` is awaited (``open_timeout``).
    v3: ``40`` is awaited for ``connect_wait`` s; if none came we send ``40`` ourselves (harmless).
  * after the namespace connect the caller's ``emits`` (raw frames, e.g.
    ``42["subscribe","book_X"]``) are sent in order.
  * liveness: if nothing at all arrives (no frame, no ping, no pong) for
    ``pingInterval + pingTimeout + heartbeat_grace`` seconds: ``TransportError("heartbeat timeout ...")``.
  * engine.io close ``1``, socket.io disconnect ``41``, connect error ``44``, a websocket close or
    error: ``TransportError``.
  * malformed frames (bad JSON, unknown packet type, empty, binary) never raise: they are
    yielded as ``Frame(kind="malformed", raw=..., error=...)`` and the stream continues.

Pull model: frames are read in the consumer's task (no reader task, no unbounded queue);
v4 pings are answered while the consumer is inside ``__anext__``, so iterate promptly.
"""
from __future__ import annotations

import asyncio
import collections
import collections.abc
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson

from .base import Frame, TransportError, close_description, open_or_fail, text_bytes, ws_connect_kwargs

__all__ = ["SocketIOClient", "parse_packet", "socketio_url"]

# pingInterval 0 (python-engineio reports int(seconds)*1000 for sub-second intervals): never spin
MIN_PING_INTERVAL = 0.05
DEFAULT_PING_INTERVAL_MS = 25000
DEFAULT_PING_TIMEOUT_MS = 20000
_CLOSE_TEXT_LIMIT = 200
_TEXT, _BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY  # looked up once: the receive path runs per frame
_EVENT_PREFIXES = ("42[", b"42[")  # a root-namespace event without ack id (aiohttp gives text as str or bytes)


def socketio_url(base_url: str, eio: int | str, *, path: str = "socket.io", query: Mapping[str, str] | None = None) -> str:
    """``<base>/<path>/?EIO=<v>&transport=websocket`` (http(s) mapped to ws(s))."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    q = {"EIO": "3" if eio == "auto" else str(eio), "transport": "websocket"}
    if query:
        q.update(query)
    p = path.strip("/")
    return f"{base}/{p}/?{urlencode(q)}" if p else f"{base}/?{urlencode(q)}"


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        # orjson rejects integers beyond 64 bits and NaN/Infinity; the stdlib accepts them
        return json.loads(payload)


# Results of parse_packet for engine.io / socket.io control packets (kind, detail)
OPEN, CLOSE, PING, PONG, NS_CONNECT, NS_DISCONNECT, NS_ERROR = (
    "open", "close", "ping", "pong", "ns_connect", "ns_disconnect", "ns_error",
)


def parse_packet(raw: bytes, ts_recv: int, framing: str = "socketio") -> tuple[str | None, Any, Frame | None]:
    """Parse one websocket text frame.

    Returns ``(control, detail, frame)``: ``control`` is one of the constants above (and
    ``frame`` None) for transport-level packets on the root namespace, else ``control`` is
    None and ``frame`` is what to hand to the consumer. With ``framing="engineio"`` a message
    packet is ``Frame(kind="message")`` whose payload is ``raw[1:]``.
    """
    if not raw:
        return None, None, Frame(kind="malformed", raw=raw, ts_recv=ts_recv, error="empty frame")
    eio_type = raw[0]
    if eio_type == 0x34:  # '4' message
        if framing == "engineio":
            return None, None, Frame(kind="message", raw=raw, ts_recv=ts_recv)
        return _parse_socketio(raw, ts_recv)
    if eio_type == 0x32:  # '2' ping
        return PING, raw[1:], None
    if eio_type == 0x33:  # '3' pong
        return PONG, raw[1:], None
    if eio_type == 0x30:  # '0' open
        try:
            obj = _loads(raw[1:])
        except ValueError as exc:
            return None, None, Frame(kind="malformed", raw=raw, ts_recv=ts_recv, error=f"bad open packet: {exc}")
        if not isinstance(obj, dict):
            return None, None, Frame(kind="malformed", raw=raw, ts_recv=ts_recv, error="open packet is not an object")
        return OPEN, obj, None
    if eio_type == 0x31:  # '1' close
        return CLOSE, None, None
    if eio_type in (0x35, 0x36):  # '5' upgrade, '6' noop
        return None, None, Frame(kind="other", raw=raw, ts_recv=ts_recv)
    return None, None, Frame(kind="malformed", raw=raw, ts_recv=ts_recv,
                             error=f"unknown engine.io packet type {chr(eio_type)!r}")


def _parse_socketio(raw: bytes, ts_recv: int) -> tuple[str | None, Any, Frame | None]:
    if len(raw) < 2:
        return None, None, Frame(kind="malformed", raw=raw, ts_recv=ts_recv, error="empty socket.io packet")
    sio_type = raw[1]
    i = 2
    nsp = b"/"
    if i < len(raw) and raw[i] == 0x2F:  # '/' namespace
        comma = raw.find(b",", i)
        if comma < 0:
            nsp, i = raw[i:], len(raw)
        else:
            nsp, i = raw[i:comma], comma + 1
    root = nsp == b"/"
    if sio_type == 0x32:  # '2' EVENT
        j = i
        while j < len(raw) and 0x30 <= raw[j] <= 0x39:  # ack id
            j += 1
        if not root:
            return None, None, Frame(kind="other", raw=raw, ts_recv=ts_recv)
        try:
            data = _loads(raw[j:])
        except (ValueError, RecursionError) as exc:
            return None, None, Frame(kind="malformed", raw=raw, ts_recv=ts_recv, error=f"bad event JSON: {exc}"[:300])
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            return None, None, Frame(kind="malformed", raw=raw, ts_recv=ts_recv, error="event payload is not [name, ...]")
        return None, None, Frame(kind="event", raw=raw, ts_recv=ts_recv, name=data[0], args=data[1:])
    if sio_type == 0x30:  # '0' CONNECT
        if not root:
            return None, None, Frame(kind="other", raw=raw, ts_recv=ts_recv)
        detail = None
        if i < len(raw):
            try:
                detail = _loads(raw[i:])
            except ValueError:
                detail = None
        return NS_CONNECT, detail, None
    if sio_type == 0x31:  # '1' DISCONNECT
        if not root:
            return None, None, Frame(kind="other", raw=raw, ts_recv=ts_recv)
        return NS_DISCONNECT, None, None
    if sio_type == 0x34:  # '4' ERROR (v3) / CONNECT_ERROR (v4)
        if not root:
            return None, None, Frame(kind="other", raw=raw, ts_recv=ts_recv)
        return NS_ERROR, raw[i:], None
    if sio_type in (0x33, 0x35, 0x36):  # ACK, BINARY_EVENT, BINARY_ACK
        return None, None, Frame(kind="other", raw=raw, ts_recv=ts_recv)
    return None, None, Frame(kind="malformed", raw=raw, ts_recv=ts_recv,
                             error=f"unknown socket.io packet type {chr(sio_type)!r}")


def _waiting(ws: aiohttp.ClientWebSocketResponse) -> collections.abc.Sized:
    """aiohttp's queue of messages received but not yet read (empty when its internals change)."""
    return getattr(getattr(ws, "_reader", None), "_buffer", ())


def _queued_reader(ws: aiohttp.ClientWebSocketResponse) -> Callable[[], Awaitable[Any]] | None:
    """aiohttp's queue read (``(message, size)`` pairs since 3.11), for messages already queued: what
    ``ws.receive()`` does for a data message, without its per-message checks. Never called with the queue
    empty, so it never waits (a wait here would race ``ws.close()``). None when the internals differ."""
    reader = getattr(ws, "_reader", None)
    read = getattr(reader, "read", None)
    return read if type(reader).__name__ == "WebSocketDataQueue" and callable(read) else None


class _Refused(TransportError):
    """The server turned the websocket handshake down (HTTP error, or broke off before the open packet)."""


def _short(b: bytes) -> str:
    return b[:_CLOSE_TEXT_LIMIT].decode("utf-8", "replace")


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})([^\r\n]*)\r\n")


async def refusal_reason(ws_url: str, headers: Mapping[str, str] | None = None) -> str | None:
    """Why a server refused (or broke off) a websocket handshake, on one line: the handshake is repeated on a
    bare connection and the server's last HTTP answer read. engine.io writes its refusal *after* the 101
    (``HTTP/1.1 400 Bad Request ... Unsupported protocol version``), which aiohttp can only see as a
    protocol error. None when nothing was learned. Never raises."""
    u = urlsplit(ws_url)
    secure = u.scheme in ("wss", "https")
    port = u.port or (443 if secure else 80)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (f"GET {u.path or '/'}{'?' + u.query if u.query else ''} HTTP/1.1\r\nHost: {u.netloc}\r\n"
               "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n").encode()
    data = b""
    writer = None
    try:
        async with asyncio.timeout(2.0):
            reader, writer = await asyncio.open_connection(u.hostname, port, ssl=secure or None)
            writer.write(request)
            while len(data) < 4096:
                chunk = await reader.read(4096)
                if not chunk:
                    break
                data += chunk
    except (OSError, TimeoutError, ValueError):
        pass
    finally:
        if writer is not None:
            writer.close()
    lines = list(_STATUS_LINE.finditer(data))
    if not lines or lines[-1].group(1) == b"101":
        return None
    last = lines[-1]
    head_end = data.find(b"\r\n\r\n", last.end() - 2)
    body = data[head_end + 4:] if head_end >= 0 else b""
    text = " ".join(f"HTTP {last.group(1).decode()}{last.group(2).decode('latin-1')}: "
                    f"{body[:_CLOSE_TEXT_LIMIT].decode('utf-8', 'replace')}".split())
    return text.rstrip(":")


class SocketIOClient:
    """``async with SocketIOClient(session, "wss://host", eio=3) as sio: async for f in sio: ...``

    ``__aiter__``/``__anext__`` (or ``recv()``) yield ``Frame`` objects and raise
    ``TransportError`` when the connection ends for any reason (never StopAsyncIteration).
    ``handshake`` is the decoded open packet; ``namespace_sid`` the sid from ``40{"sid"}`` (v4).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        eio: int | str = 3,
        framing: str = "socketio",
        emits: Sequence[str] = (),
        heartbeat_grace: float = 5.0,
        open_timeout: float = 10.0,
        connect_wait: float = 1.0,
        close_timeout: float = 2.0,
        client_pings: bool | None = None,
        path: str = "socket.io",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_msg_size: int = 16 * 1024 * 1024,
    ) -> None:
        if eio not in (3, 4, "auto"):
            raise ValueError("eio must be 3, 4 or 'auto'")
        if framing not in ("socketio", "engineio"):
            raise ValueError("framing must be 'socketio' or 'engineio'")
        self._session = session
        self.configured_eio = eio
        self.eio: int = 3 if eio == "auto" else eio  # the protocol in use (auto: 3, or 4 when 3 is refused)
        self.framing = framing
        self._base_url, self._path, self._query = base_url, path, query
        self.url = socketio_url(base_url, self.eio, path=path, query=query)
        self.emits = list(emits)
        self.heartbeat_grace = heartbeat_grace
        self.open_timeout = open_timeout
        self.connect_wait = connect_wait
        self.close_timeout = close_timeout
        self._pings_fixed = client_pings is not None
        self.client_pings = (eio == 3) if client_pings is None else client_pings
        self._headers = headers
        self._max_msg_size = max_msg_size

        self.handshake: dict = {}
        self.namespace_sid: str | None = None
        self.ping_interval = DEFAULT_PING_INTERVAL_MS / 1000
        self.ping_timeout = DEFAULT_PING_TIMEOUT_MS / 1000
        self.idle_limit = self.ping_interval + self.ping_timeout + heartbeat_grace

        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._pending: collections.deque[Frame] = collections.deque()
        self._ns_connected = False
        self._last_rx = 0.0
        self._clock = time.monotonic  # replaced by the running loop's clock in _open
        self._dead: str | None = None
        self._close_code: int | None = None
        self.pings_sent = 0
        self.pongs_received = 0
        self.pings_answered = 0
        self.detected = ""  # how the protocol was chosen / the heartbeat adapted (for the connect row)
        self._opened_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> "SocketIOClient":
        if self._ws is not None:
            raise RuntimeError("SocketIOClient connects once; create a new instance to reconnect")
        await open_or_fail(self._open, self.open_timeout, self.close, f"socket.io connect failed ({self.url})",
                           lambda: self._close_code)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def _open(self) -> None:
        if self.configured_eio != "auto":
            await self._open_as(self.configured_eio)
            return
        try:
            await self._open_as(3)
            self.detected = "auto: protocol 3 accepted"
            return
        except _Refused as exc:
            refused = str(exc)
        await self._abort()
        self._ws, self._dead, self._close_code = None, None, None
        await self._open_as(4)
        self.detected = f"auto: protocol 3 refused ({refused[-160:]})"

    async def _open_as(self, eio: int) -> None:
        """Connect speaking protocol `eio`; `_Refused` when the server turns the handshake down."""
        loop = asyncio.get_running_loop()
        self.eio = eio
        self.url = socketio_url(self._base_url, eio, path=self._path, query=self._query)
        try:
            self._ws = await self._session.ws_connect(
                self.url,
                autoping=True,
                autoclose=True,
                heartbeat=None,
                headers=self._headers,
                max_msg_size=self._max_msg_size,
                **ws_connect_kwargs(self.close_timeout),
            )
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
        else:
            status = None
        if status is not None:  # outside the except block: the handshake error must not be chained (headers)
            reason = await refusal_reason(self.url, self._headers)
            raise _Refused(f"socket.io connect failed ({self.url}): refused, {reason or f'HTTP {status}'}")
        # open packet
        msg = await self._ws.receive()
        ts = time.time_ns()
        if msg.type != aiohttp.WSMsgType.TEXT:
            err = self._msg_error(msg, "waiting for the open packet")
            reason = await refusal_reason(self.url, self._headers)
            raise _Refused(f"{err}; the server said {reason}" if reason else str(err), close_code=err.close_code)
        raw = text_bytes(msg.data)
        control, detail, _ = parse_packet(raw, ts)
        if control != OPEN:
            raise TransportError(f"expected engine.io open packet, got {_short(raw)!r}")
        self.handshake = detail
        pi = detail.get("pingInterval", DEFAULT_PING_INTERVAL_MS)
        pt = detail.get("pingTimeout", DEFAULT_PING_TIMEOUT_MS)
        self.ping_interval = float(pi) / 1000 if isinstance(pi, (int, float)) else DEFAULT_PING_INTERVAL_MS / 1000
        self.ping_timeout = float(pt) / 1000 if isinstance(pt, (int, float)) else DEFAULT_PING_TIMEOUT_MS / 1000
        self.idle_limit = self.ping_interval + self.ping_timeout + self.heartbeat_grace
        self._clock = loop.time
        self._last_rx = loop.time()
        self._opened_at = loop.time()
        self._idle_task = asyncio.create_task(self._idle_loop(), name=f"eio-idle {self.url}")
        if self.framing == "socketio":
            await self._namespace_connect()
        if not self._pings_fixed:
            self.client_pings = eio == 3
        if self.client_pings:
            self._ping_task = asyncio.create_task(self._ping_loop(), name=f"eio-ping {self.url}")
        elif not self._pings_fixed:  # protocol 4, or so we were told: the server should ping
            self._ping_task = asyncio.create_task(self._adaptive_ping(), name=f"eio-ping? {self.url}")
        for raw_emit in self.emits:
            await self._send(raw_emit)

    async def _namespace_connect(self) -> None:
        """Join the root namespace: v4 asks at once; v3 first waits for the server's own ``40``."""
        if self.eio == 4:
            await self._send("40")
            while not self._ns_connected:
                await self._buffer_one()
            return
        try:
            async with asyncio.timeout(self.connect_wait):
                while not self._ns_connected:
                    await self._buffer_one()
        except TimeoutError:
            await self._send("40")  # server did not auto-connect: ask (harmless if ignored)

    async def _buffer_one(self) -> None:
        frame = await self._next_frame()
        if frame is not None:
            self._pending.append(frame)

    async def close(self) -> None:
        """Stop the heartbeat and idle tasks and close the socket (idempotent, cancellation-safe,
        bounded by close_timeout)."""
        tasks = [t for t in (self._ping_task, self._idle_task) if t is not None]
        self._ping_task = self._idle_task = None
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                try:
                    await asyncio.wait(tasks)  # raises only our own cancellation
                finally:
                    for task in tasks:
                        if task.done() and not task.cancelled():
                            task.exception()  # retrieve: a failure was already surfaced via the socket
        finally:
            await self._close_ws()

    async def _close_ws(self) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        try:
            if self._dead is None and self._ns_connected:
                async with asyncio.timeout(self.close_timeout):
                    async with self._send_lock:
                        await ws.send_str("41")  # leave the namespace (best effort)
        except (TimeoutError, aiohttp.ClientError, ConnectionError, RuntimeError):
            pass
        try:
            await ws.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ sending
    async def _send(self, text: str) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise TransportError("socket.io connection is closed")
        try:
            async with self._send_lock:
                await ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise TransportError(f"socket.io send failed: {type(exc).__name__}") from None

    async def emit_raw(self, raw: str) -> None:
        """Send a raw socket.io frame, e.g. ``42["subscribe","book_BTC_USD"]``."""
        await self._send(raw)

    async def emit(self, name: str, *args: Any) -> None:
        """Send ``42[name, *args]``."""
        await self._send("42" + orjson.dumps([name, *args]).decode())

    async def _ping_loop(self, first: float | None = None) -> None:
        """EIO=3 heartbeat: send ``2`` every pingInterval (owned by this client; cancelled in close())."""
        interval = max(self.ping_interval, MIN_PING_INTERVAL)
        await asyncio.sleep(interval if first is None else first)
        while True:
            await self._send("2")
            self.pings_sent += 1
            await asyncio.sleep(interval)

    async def _adaptive_ping(self) -> None:
        """Protocol unknown or 4: if the server has not pinged by pingInterval + pingTimeout/2 after the open
        packet, it waits for the client's pings (protocol 3, whatever was configured): ping from then on."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(self._opened_at + self.ping_interval + self.ping_timeout / 2 - loop.time(), 0.0))
        if self.pings_answered:
            return
        self.eio, self.client_pings = 3, True
        self.detected = (self.detected + "; " if self.detected else "") + "server never pinged (protocol 3): client pings"
        await self._ping_loop(first=0.0)

    async def _idle_loop(self) -> None:
        """Heartbeat watchdog (owned by this client; cancelled in close()): a connection silent for
        ``idle_limit`` is declared dead and closed, which ends the pending receive.

        One timer per idle period instead of one per frame: the receive path only stamps ``_last_rx``.
        """
        loop = asyncio.get_running_loop()
        while True:
            wait = self._last_rx + self.idle_limit - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            ws = self._ws
            if ws is not None and _waiting(ws):  # frames arrived that the consumer has not read yet
                self._last_rx = loop.time()  # (held back by its own back-pressure): not silence
                continue
            self._die(
                f"heartbeat timeout: nothing received for {self.idle_limit:.3f}s "
                f"(pingInterval {self.ping_interval:.3f}s + pingTimeout {self.ping_timeout:.3f}s "
                f"+ grace {self.heartbeat_grace:.3f}s)"
            )
            await self._abort()
            return

    # ------------------------------------------------------------------ receiving
    def __aiter__(self) -> "SocketIOClient":
        return self

    async def __anext__(self) -> Frame:
        return await self.recv()

    async def recv(self) -> Frame:
        """Next frame for the consumer; raises TransportError when the connection is over."""
        while True:
            if self._pending:
                return self._pending.popleft()
            frame = await self._next_frame()
            if frame is not None:
                return frame

    def _die(self, reason: str) -> TransportError:
        if self._dead is None:
            self._dead = reason
        return TransportError(self._dead, close_code=self._close_code)

    def _msg_error(self, msg: aiohttp.WSMessage, when: str = "") -> TransportError:
        ws = self._ws
        assert ws is not None
        self._close_code = ws.close_code if ws.close_code is not None else self._close_code
        where = f" while {when}" if when else ""
        if msg.type == aiohttp.WSMsgType.ERROR:
            return self._die(f"websocket error{where}: {type(msg.data).__name__} {close_description(ws)}")
        return self._die(f"connection closed by server{where}: {close_description(ws, msg)}")

    def _check_alive(self) -> aiohttp.ClientWebSocketResponse:
        if self._dead is not None:
            raise TransportError(self._dead, close_code=self._close_code)
        ws = self._ws
        if ws is None:
            raise TransportError("socket.io client not connected")
        return ws

    async def _next_frame(self) -> Frame | None:
        """Read one websocket message; handle control packets; return a consumer frame or None."""
        ws = self._check_alive()
        if not _waiting(ws):  # what was received is delivered before a failed heartbeat ends the stream
            await self._check_pings()
        msg = await ws.receive()
        if self._dead is not None:  # the idle watchdog closed the socket while we waited
            raise TransportError(self._dead, close_code=self._close_code)
        return await self._handle(msg, time.time_ns())

    async def _check_pings(self) -> None:
        task = self._ping_task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            await self._abort()
            raise self._die(f"heartbeat send failed: {task.exception()}")

    async def recv_batch(self, texts: list, stamps: list[int], limit: int) -> Frame | None:
        """Read a burst: event frames (``42[...``, undecoded) are appended to texts (their receive times
        to stamps) until none is waiting in the socket's buffer or ``limit`` are held; a frame of any
        other kind ends the burst and is returned (it came after the texts). Raises as ``recv``."""
        if self._pending:
            return self._pending.popleft()
        if self.framing != "socketio":
            return await self.recv()
        ws = self._check_alive()
        waiting = _waiting(ws)
        read = _queued_reader(ws)
        while True:
            if not waiting:
                await self._check_pings()
            msg = await ws.receive()
            if self._dead is not None:
                raise TransportError(self._dead, close_code=self._close_code)
            ts = time.time_ns()
            data = msg.data
            if msg.type is _TEXT and data[:3] in _EVENT_PREFIXES:
                self._last_rx = self._clock()
                texts.append(data)
                stamps.append(ts)
                if read is not None:  # the event frames queued behind it
                    held, take = len(texts), texts.append
                    while waiting and len(texts) < limit:
                        head = waiting[0][0]
                        data = head.data
                        if head.type is not _TEXT or data[:3] not in _EVENT_PREFIXES:
                            break
                        await read()  # pops `head` at once (it is queued), with aiohttp's flow-control bookkeeping
                        take(data)
                    stamps += [ts] * (len(texts) - held)
            else:
                frame = await self._handle(msg, ts)
                if frame is not None:
                    return frame
            if len(texts) >= limit or (texts and not waiting):
                return None

    async def _handle(self, msg: aiohttp.WSMessage, ts: int) -> Frame | None:
        """One websocket message: a consumer frame, or None for a control packet handled here."""
        t = msg.type
        if t is not _TEXT:
            if t is _BINARY:
                self._last_rx = self._clock()
                return Frame(kind="malformed", raw=bytes(msg.data), ts_recv=ts, binary=True,
                             error="binary frame (binary attachments are not supported)")
            err = self._msg_error(msg)
            await self._abort()
            raise err
        self._last_rx = self._clock()
        raw = text_bytes(msg.data)
        control, detail, frame = parse_packet(raw, ts, self.framing)
        if control is None:
            return frame
        if control == PING:
            self.pings_answered += 1
            await self._send("3" + detail.decode("utf-8", "replace") if detail else "3")
            return None
        if control == PONG:
            self.pongs_received += 1
            return None
        if control == NS_CONNECT:
            if self._ns_connected:
                return Frame(kind="other", raw=raw, ts_recv=ts)
            self._ns_connected = True
            if isinstance(detail, dict) and isinstance(detail.get("sid"), str):
                self.namespace_sid = detail["sid"]
            return None
        if control == OPEN:
            return Frame(kind="other", raw=raw, ts_recv=ts)
        await self._abort()
        if control == CLOSE:
            raise self._die("engine.io close packet from server")
        if control == NS_DISCONNECT:
            raise self._die("socket.io disconnect (41) from server")
        raise self._die(f"socket.io error packet from server: {_short(raw)!r}")

    async def _abort(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            self._close_code = ws.close_code
            try:
                await ws.close()
            except Exception:
                pass
