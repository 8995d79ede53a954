"""Types shared by every transport: the received-frame record and the one error type.

No venue knowledge lives here (or anywhere in ``recorder.transport``).
"""
from __future__ import annotations

from dataclasses import dataclass


class TransportError(Exception):
    """The connection (or request) failed and will not deliver more data.

    Feeds catch this one type to decide whether to reconnect. Messages never
    contain header values, credentials or signatures.
    """

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


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
