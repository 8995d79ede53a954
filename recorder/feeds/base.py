"""What every feed of a venue shares: config, HTTP session and rate limiter, taps, trade memories."""
from __future__ import annotations

import asyncio
import json
from typing import Callable, Protocol

import aiohttp

from recorder.config import VenueConfig
from recorder.transport import HttpClient, HttpResult, RateLimiter, StreamSilent
from recorder.rows import Candle, Level, ParseError, Parsed

from .dedup import TradeDedup
from .sink import Sink, Tap

Healthy = Callable[[], None]


class Feed(Protocol):
    """A supervised unit: `run` works until it fails (raises); the supervisor restarts it."""

    name: str

    async def run(self, healthy: Healthy) -> None: ...


class GroupedWatch(Protocol):
    """The feed tracking a pair's L3 book, told of each grouped snapshot so it can check its book against it."""

    def grouped_sent(self, pair: str) -> object | None: ...

    def grouped_done(self, token: object, levels: list[Level] | None, seq: int | None) -> None: ...


class VenueContext:
    """One venue's shared runtime: its config, HTTP plumbing (one rate-limit scope) and trade memories."""

    def __init__(self, cfg: VenueConfig, http_session: aiohttp.ClientSession, sink: Sink, limiter: RateLimiter, *,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, http_attempts: int = 4,
                 cursors: dict[str, int] | None = None,
                 time_cursors: dict[str, tuple[int, list[str]]] | None = None,
                 candles: dict[str, list[Candle]] | None = None) -> None:
        self.cfg = cfg
        self.venue = cfg.name
        self.http_session = http_session
        self.sink = sink
        self.limiter = limiter
        limiter.configure(cfg.name, cfg.rate_limit, 1)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.http_attempts = http_attempts
        self._dedup: dict[str, TradeDedup] = {}
        self.cursors = dict(cursors or {})  # pair -> highest trade id already in the dataset
        #: Zonda (UUID trade ids, polled by time): pair -> (newest recorded trade's ms, the ids recorded in that ms)
        self.time_cursors = dict(time_cursors or {})
        self.candles = dict(candles or {})  # pair -> the newest candle versions already in the dataset
        self.books: dict[str, GroupedWatch] = {}  # pair -> the L3 feed tracking its book (set by feeds.build)

    def tap(self, feed: str) -> Tap:
        """A tap for one feed of this venue."""
        return Tap(self.sink, self.venue, feed)

    def dedup(self, pair: str) -> TradeDedup:
        """The trade memory of a pair, shared by its socket and REST feeds."""
        d = self._dedup.get(pair)
        if d is None:
            d = self._dedup[pair] = TradeDedup(floor=self.cursors.get(pair))
            if pair in self.time_cursors:
                d.written(self.time_cursors[pair][1])
        return d

    def http(self, tap: Tap, session: int, stream: str) -> HttpClient:
        """An HttpClient on the venue's scope whose 429s and errors become sessions rows and whose refused
        responses (429, 5xx: retried or given up) are kept in raw as rejected."""
        def hook(kind: str, d: dict) -> None:
            what = f"{d.get('method')} {d.get('url')} attempt {d.get('attempt')}"
            if kind == "rate_limited":
                tap.event(session, stream, "rate_limited", f"{what}: HTTP 429, retry_after={d.get('retry_after')}, "
                                                           f"waiting {d.get('delay', 0):.2f}s")
            elif kind == "error":
                tap.event(session, stream, "error", f"{what}: {d.get('error')}{' (giving up)' if d.get('final') else ''}")
            if "body" in d and (kind == "retry" or (kind == "error" and d.get("final"))):
                tap.raw(session, stream, None, d["ts_recv"], d["body"], status="rejected",
                        reason=f"HTTP {d.get('status')} ({'retried' if kind == 'retry' else 'giving up'})",
                        request=f"{d.get('method')} {d.get('url')}")
        return HttpClient(self.http_session, self.limiter, max_attempts=self.http_attempts,
                          backoff_base=self.backoff_base, backoff_cap=self.backoff_cap, on_event=hook)


async def fetch(http: HttpClient, tap: Tap, session: int, stream: str, pair: str | None, url: str,
                parse: Callable[[HttpResult], Parsed], *, method: str = "GET", data=None, headers=None,
                request: str | None = None) -> tuple[HttpResult, int, Parsed | None]:
    """One REST call: the body goes to raw (rejected when not 200 or unparseable); returns (result, raw seq, parsed)."""
    res = await http.request(method, url, scope=tap.exchange, data=data, headers=headers)
    tap.metrics.inc("requests", tap.feed, res.attempts)
    req = request or f"{method} {url}"
    if res.status != 200:
        said = venue_said(res.body)
        seq = tap.reject(session, stream, pair, res.ts_recv, res.body,
                         f"HTTP {res.status}: {said}" if said else f"HTTP {res.status}", request=req)
        return res, seq, None
    try:
        parsed = parse(res)
    except ParseError as e:
        seq = tap.reject(session, stream, pair, res.ts_recv, res.body, str(e), request=req)
        return res, seq, None
    seq = tap.raw(session, stream, pair, res.ts_recv, res.body, request=req)
    return res, seq, parsed


def venue_said(body: bytes) -> str | None:
    """The message of a JSON error body (`{"error": ...}` as BitoPro's 422s, or `message` / `errors`), one line."""
    try:
        d = json.loads(body[:4096]) if body and body[:1] in (b"{", b" ") else None
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    for key in ("error", "message", "errors", "detail"):
        if d.get(key):
            return " ".join(str(d[key]).split())[:200]
    return None


async def every(interval: float, step: Callable[[], "asyncio.Future | object"]) -> None:
    """Run `await step()` at a fixed cadence (skipping missed ticks, never bursting to catch up)."""
    loop = asyncio.get_running_loop()
    nxt = loop.time()
    while True:
        await step()
        nxt += interval
        now = loop.time()
        if nxt < now:
            nxt = now
        await asyncio.sleep(nxt - now)


def describe(exc: BaseException) -> str:
    """One line for sessions/logs: the leaf errors of an exception (group), never a traceback."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)[:400]
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:400]


class StreamSession:
    """Around one connection: once connected, its end is a `disconnect` row with the reason and,
    unless the daemon is stopping, a `gap` row per pair (the stream's data is lost until it resumes)."""

    def __init__(self, tap: Tap, session: int, stream: str, pairs, gap_detail: str, pair: str | None = None) -> None:
        self.tap, self.session, self.stream = tap, session, stream
        self.pairs, self.gap_detail = list(pairs), gap_detail
        self.pair = pair  # a connection of one pair: its connect/disconnect rows are that pair's, not venue-wide
        self.connected = False

    def connect(self, detail: str) -> None:
        """The connection is up: a `connect` row, and its end will be recorded."""
        self.connected = True
        self.tap.event(self.session, self.stream, "connect", detail, self.pair)

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.connected:
            if isinstance(exc, asyncio.CancelledError):
                reason = "stopping"
            else:
                reason = describe(exc) if exc is not None else "stream ended"
            self.tap.event(self.session, self.stream, "disconnect", reason, self.pair)
            held = self.tap.sink.blocked_since  # not read since then (back-pressure): that data is lost too
            if reason != "stopping" or held is not None:
                detail = self.gap_detail if held is None else (f"{self.gap_detail}; not read since the store "
                                                               f"held the stream back")
                since = min((t for t in (held, _silent_since(exc)) if t is not None), default=None)
                for p in self.pairs:
                    self.tap.event(self.session, self.stream, "gap", detail, p, ts=since)
        return False


def _silent_since(exc: BaseException | None) -> int | None:
    """When the stream went quiet, if it ended for silence (possibly inside a task group's exception group)."""
    if isinstance(exc, StreamSilent):
        return exc.since_ns
    if isinstance(exc, BaseExceptionGroup):
        found = [t for t in map(_silent_since, exc.exceptions) if t is not None]
        return min(found) if found else None
    return None
