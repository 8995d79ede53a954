"""What every transport shares: the received-frame record, the one error type, and turning a failed
connect into that error without leaking headers.

No venue knowledge lives here (or anywhere in ``recorder.transport``).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp


class TransportError(Exception):
    """The connection (or request) failed and will not deliver more data.

    Feeds catch this one type to decide whether to reconnect. Messages never
    contain header values, credentials or signatures.
    """

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class StreamSilent(TransportError):
    """The stream went quiet past its heartbeat: what the venue sent since `since_ns` (wall clock, the
    last message received) is unknown, so the gap starts there, not when the silence was noticed."""

    def __init__(self, message: str, *, since_ns: int) -> None:
        super().__init__(message)
        self.since_ns = since_ns


@dataclass(slots=True)
class Frame:
    """One frame received from a socket, kept verbatim.

    kind:
      * ``"event"``     socket.io event ``42["name", args...]``: ``name`` and ``args`` are set
      * ``"message"``   plain websocket data frame (text or binary)
      * ``"malformed"`` could not be parsed; ``error`` says why, ``raw`` is what arrived
      * ``"other"``     well-formed but not an event (ack, noop, extra namespace connect, ...)
    raw:     the frame payload bytes exactly as received (text frames: their UTF-8 bytes)
    ts_recv: ``time.time_ns()`` taken when the frame was read from the socket
    """

    kind: str
    raw: bytes
    ts_recv: int
    name: str | None = None
    args: list | None = None
    error: str | None = None
    binary: bool = False


# ---------------------------------------------------------------- aiohttp version compatibility
# aiohttp >= 3.11 takes ``timeout=ClientWSTimeout(...)`` (a float is deprecated) and newer
# releases accept ``decode_text=False`` (TEXT frames as bytes, no decode/re-encode);
# aiohttp 3.10 takes ``timeout=<close seconds>`` and always decodes TEXT to str.
try:  # pragma: no cover - depends on the installed aiohttp
    from aiohttp.client_ws import ClientWSTimeout as _ClientWSTimeout
except ImportError:  # pragma: no cover
    _ClientWSTimeout = None


def _ws_connect_params() -> frozenset[str]:
    import inspect

    import aiohttp

    try:
        return frozenset(inspect.signature(aiohttp.ClientSession.ws_connect).parameters)
    except (TypeError, ValueError):  # pragma: no cover
        return frozenset()


_WS_PARAMS = _ws_connect_params()


def ws_connect_kwargs(close_timeout: float) -> dict:
    """Version-appropriate keyword arguments for ``ClientSession.ws_connect``."""
    kw: dict = {}
    if _ClientWSTimeout is not None:
        kw["timeout"] = _ClientWSTimeout(ws_receive=None, ws_close=close_timeout)
    else:
        kw["timeout"] = close_timeout
    if "decode_text" in _WS_PARAMS:
        kw["decode_text"] = False
    return kw


def text_bytes(data: str | bytes | bytearray) -> bytes:
    """The bytes of a TEXT frame whether aiohttp handed us str or bytes (UTF-8 round-trips exactly)."""
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


# ---------------------------------------------------------------- connect failures
def close_description(ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage | None = None) -> str:
    """Close code, reason and error of a websocket that ended (never headers)."""
    code = ws.close_code
    reason = ""
    if msg is not None and msg.type == aiohttp.WSMsgType.CLOSE:
        code = msg.data if code is None else code
        if msg.extra:
            reason = f" reason={str(msg.extra)[:200]!r}"
    exc = ws.exception()
    err = f" error={type(exc).__name__}" if exc is not None else ""
    return f"close_code={code}{reason}{err}"


def connect_error(exc: BaseException) -> str:
    """Header-free description of a connect failure."""
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"{type(exc).__name__} status={exc.status}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{type(exc).__name__} {getattr(exc.os_error, 'strerror', '') or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__} status={exc.status}"
    return type(exc).__name__


async def open_or_fail(open_: Callable[[], Awaitable[None]], timeout: float, abort: Callable[[], Awaitable[None]],
                       what: str, close_code: Callable[[], int | None] = lambda: None) -> None:
    """Run `open_` within `timeout`; a failure to connect becomes one TransportError ("<what>: <reason>").

    It is raised after `abort`, outside the except block: aiohttp's handshake errors reference the
    request headers (credentials), so they must never be chained into ours. Anything else
    (cancellation) aborts and propagates.
    """
    failure: str | None = None
    try:
        async with asyncio.timeout(timeout):
            await open_()
    except TransportError as exc:
        failure = str(exc)
    except (aiohttp.ClientError, OSError) as exc:  # OSError includes TimeoutError
        failure = f"{what}: {connect_error(exc)}"
    except BaseException:
        await abort()
        raise
    if failure is not None:
        await abort()
        raise TransportError(failure, close_code=close_code())
