"""Network transports for the collectors: socket.io/engine.io (v3, v4), plain websocket,
rate-limited HTTP with retries, and the shared backoff schedule. No venue knowledge."""
from .backoff import Backoff
from .base import Frame, StreamSilent, TransportError
from .engineio import SocketIOClient
from .http import HttpClient, HttpError, HttpResult, RateLimiter, TokenBucket
from .websocket import WebSocketClient

__all__ = [
    "Backoff",
    "Frame",
    "StreamSilent",
    "TransportError",
    "SocketIOClient",
    "WebSocketClient",
    "HttpClient",
    "HttpError",
    "HttpResult",
    "RateLimiter",
    "TokenBucket",
]
