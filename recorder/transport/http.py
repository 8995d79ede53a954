"""Rate-limited HTTP client with retries.

* ``TokenBucket``  exact rate limiter (GCRA on integer nanoseconds): over ANY window of
  T seconds it admits at most ``burst + rate_per_s * T`` calls. The admission time is the
  clock reading taken at admission, with no await between it and the return of ``acquire()``.
* ``RateLimiter``  one bucket per scope key, e.g. ``("btcalpha", "public")``.
* ``HttpClient``   ``request()`` acquires its scope, sends, reads the body, and retries
  429 (``Retry-After`` honoured, seconds or HTTP date; the whole scope is paused), 408/5xx,
  timeouts and connection errors with capped full-jitter backoff.

Secrets: header values are never put into exceptions, events or logs. Exceptions raised
here carry no chained cause (``__cause__``/``__context__`` are None) because aiohttp
exceptions may reference request headers. URLs in errors/events are the ``url`` argument
without ``params`` (callers guarantee the url holds only public parts).
"""
from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiohttp

from .backoff import Backoff
from .base import TransportError

__all__ = ["TokenBucket", "RateLimiter", "HttpClient", "HttpResult", "HttpError", "parse_retry_after"]

ClockNs = Callable[[], int]
Sleep = Callable[[float], Awaitable[Any]]
EventHook = Callable[[str, dict], None]

_NS = 1_000_000_000


class TokenBucket:
    """Token bucket of capacity ``burst`` refilled at ``rate_per_s``; starts full.

    Implemented as GCRA with an integer emission interval rounded UP to whole ns, so
    floating point can only make it (negligibly) stricter, never looser.
    Waiters are served FIFO (one asyncio.Lock); a cancelled ``acquire()`` consumes nothing.

    ``clock_ns`` (default ``time.monotonic_ns``) and ``sleep`` (default ``asyncio.sleep``)
    are injectable for tests.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        *,
        clock_ns: ClockNs = time.monotonic_ns,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be > 0")
        if int(burst) != burst or burst < 1:
            raise ValueError("burst must be an integer >= 1")
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        # exact rational arithmetic: ceil(1e9 / rate) for the float rate as given
        self._interval_ns = max(1, math.ceil(Fraction(_NS) / Fraction(self.rate_per_s)))
        self._tau_ns = (self.burst - 1) * self._interval_ns
        self._clock = clock_ns
        self._sleep = sleep
        self._tat: int | None = None  # theoretical arrival time; None = bucket full
        self._not_before = 0  # clock_ns before which nothing is admitted (429 pause)
        self._lock = asyncio.Lock()

    def _earliest(self, now: int) -> int:
        """Earliest clock_ns at which one call conforms."""
        t = now if self._tat is None else max(now, self._tat - self._tau_ns)
        return max(t, self._not_before)

    def _admit(self, now: int) -> None:
        tat = now if self._tat is None else max(self._tat, now)
        self._tat = tat + self._interval_ns

    def try_acquire(self) -> bool:
        """Admit one call now if possible (never waits; fails while someone is queued)."""
        if self._lock.locked():
            return False
        now = self._clock()
        if self._earliest(now) > now:
            return False
        self._admit(now)
        return True

    async def acquire(self) -> None:
        """Wait until one call is admitted."""
        async with self._lock:
            while True:
                now = self._clock()
                wait_ns = self._earliest(now) - now
                if wait_ns <= 0:
                    break
                await self._sleep(wait_ns / _NS)
            self._admit(now)

    def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` from now (server said 429 / Retry-After)."""
        if seconds > 0:
            self._not_before = max(self._not_before, self._clock() + math.ceil(seconds * _NS))

    def delay_ns(self) -> int:
        """How long an ``acquire()`` issued now would wait if nobody else were queued."""
        now = self._clock()
        return max(0, self._earliest(now) - now)


class RateLimiter:
    """Buckets per scope key. Every request through ``HttpClient`` names its scope.

    ``limits``: ``{scope: (rate_per_s, burst)}``. ``default``: ``(rate_per_s, burst)`` for
    scopes not configured (None: unknown scopes raise KeyError, to catch typos).
    """

    def __init__(
        self,
        limits: Mapping[Hashable, tuple[float, int]] | None = None,
        *,
        default: tuple[float, int] | None = None,
        clock_ns: ClockNs = time.monotonic_ns,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock_ns
        self._sleep = sleep
        self._default = default
        self._buckets: dict[Hashable, TokenBucket] = {}
        for scope, (rate, burst) in (limits or {}).items():
            self.configure(scope, rate, burst)

    def configure(self, scope: Hashable, rate_per_s: float, burst: int = 1) -> TokenBucket:
        b = TokenBucket(rate_per_s, burst, clock_ns=self._clock, sleep=self._sleep)
        self._buckets[scope] = b
        return b

    def bucket(self, scope: Hashable) -> TokenBucket:
        b = self._buckets.get(scope)
        if b is None:
            if self._default is None:
                raise KeyError(f"no rate limit configured for scope {scope!r}")
            b = self.configure(scope, *self._default)
        return b

    async def acquire(self, scope: Hashable) -> None:
        await self.bucket(scope).acquire()

    def scopes(self) -> list[Hashable]:
        return list(self._buckets)


@dataclass(slots=True)
class HttpResult:
    status: int
    body: bytes
    ts_recv: int  # time.time_ns() after the body was read
    url: str  # final URL including query (public params only, by caller contract)
    attempts: int


class HttpError(TransportError):
    """Request failed for good. Carries status (None for network errors), url, attempts; never headers."""

    def __init__(self, message: str, *, status: int | None, url: str, attempts: int) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.attempts = attempts


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header value (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    try:
        secs = float(v)
    except ValueError:
        try:
            dt = email.utils.parsedate_to_datetime(v)
        except (TypeError, ValueError, IndexError):
            return None
        if dt is None:
            return None
        if dt.tzinfo is None:  # HTTP dates are GMT
            import datetime as _dt

            dt = dt.replace(tzinfo=_dt.timezone.utc)
        secs = dt.timestamp() - (time.time() if now is None else now)
        return max(0.0, secs)
    if math.isnan(secs) or math.isinf(secs):
        return None
    return max(0.0, secs)


_RETRY_STATUSES = frozenset({408, 500, 502, 503, 504, 520, 521, 522, 523, 524})


def _is_retryable_status(status: int) -> bool:
    return status in _RETRY_STATUSES or 500 <= status <= 599


def _describe_exc(exc: BaseException) -> str:
    """Short, header-free description of a network exception."""
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ClientResponseError):
        # its repr/request_info may hold request headers: status only
        return f"{name}(status={exc.status})"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"{name}: timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{name}: {exc.os_error.__class__.__name__} {getattr(exc.os_error, 'strerror', '') or ''}".rstrip()
    if isinstance(exc, OSError):
        return f"{name}: {exc.strerror or ''}".rstrip(": ")
    text = str(exc)
    return f"{name}: {text[:200]}" if text else name


class HttpClient:
    """HTTP requests through a ``RateLimiter``, with retries.

    Retries (each attempt re-acquires the scope's bucket):
      * 429: wait ``Retry-After`` (capped at ``max_retry_after``) if given, else backoff;
        the scope's bucket is paused for that long so concurrent callers also wait.
      * 408, 5xx, timeouts, connection/payload errors: capped full-jitter backoff.
      * any other status (2xx/3xx/4xx) is returned to the caller as is.
    After ``max_attempts`` attempts (None = forever) raises ``HttpError``.

    ``on_event(kind, detail)`` is called synchronously with kind ``"rate_limited"`` (a 429),
    ``"error"`` (a failed attempt; ``detail["final"]`` True when giving up) or ``"retry"``
    (a retry is scheduled; ``detail["delay"]``). ``detail`` holds scope, method, url (without
    params), attempt, status or error, never header values; when a response arrived (429, 408,
    5xx) also its ``body`` and ``ts_recv``. Each failed attempt ends in exactly one ``"retry"`` or
    final ``"error"``. Exceptions from the hook propagate.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        limiter: RateLimiter,
        *,
        max_attempts: int | None = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 300.0,
        rng: random.Random | None = None,
        on_event: EventHook | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be >= 1 or None")
        self._session = session
        self.limiter = limiter
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self._rng = rng if rng is not None else random.Random()
        self._on_event = on_event
        self._sleep = sleep

    def _emit(self, kind: str, detail: dict) -> None:
        if self._on_event is not None:
            self._on_event(kind, detail)

    async def request(
        self,
        method: str,
        url: str,
        *,
        scope: Hashable,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HttpResult:
        """Send until a non-retryable response arrives; return it (any status but 408/429/5xx).

        ``headers`` is a mapping or a zero-argument callable returning one (called per attempt,
        for signatures with a fresh nonce/timestamp). ``data`` likewise may be a callable.
        """
        backoff = Backoff(self.backoff_base, self.backoff_cap, self._rng)
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        attempt = 0
        last_status: int | None = None
        last_error = ""
        bucket = self.limiter.bucket(scope)
        while True:
            attempt += 1
            final = self.max_attempts is not None and attempt >= self.max_attempts
            base = {"scope": scope, "method": method, "url": url, "attempt": attempt}
            await bucket.acquire()
            hdrs = headers() if callable(headers) else headers
            body_data = data() if callable(data) else data
            status: int | None = None
            retry_after: float | None = None
            fatal: str | None = None
            try:
                async with self._session.request(
                    method, url, params=params, data=body_data, headers=hdrs, timeout=client_timeout
                ) as resp:
                    body = await resp.read()
                    ts_recv = time.time_ns()
                    status = resp.status
                    if status == 429:
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    final_url = str(resp.url)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
                last_error = _describe_exc(exc)
                last_status = None
            except aiohttp.ClientError as exc:  # invalid URL, redirects, protocol errors: not retried
                fatal = _describe_exc(exc)
            else:
                if status != 429 and not _is_retryable_status(status):
                    return HttpResult(status=status, body=body, ts_recv=ts_recv, url=final_url, attempts=attempt)
                last_status = status
                last_error = f"HTTP {status}"
                base.update(body=body, ts_recv=ts_recv)  # the refused response, for whoever keeps raw bodies

            if fatal is not None:
                # raised outside the except block so no aiohttp exception (which may
                # reference request headers) is chained as __context__
                self._emit("error", {**base, "status": None, "error": fatal, "final": True})
                raise HttpError(f"{method} {url}: {fatal}", status=None, url=url, attempts=attempt)

            # a failed attempt: decide the wait
            if last_status == 429:
                if retry_after is not None:
                    delay = min(retry_after, self.max_retry_after)
                    backoff.next()  # keep the schedule moving for a later 429 without Retry-After
                else:
                    delay = backoff.next()
                bucket.pause(delay)
                self._emit("rate_limited", {**base, "status": 429, "retry_after": retry_after, "delay": delay})
            else:
                delay = backoff.next()
            if final:
                self._emit("error", {**base, "status": last_status, "error": last_error, "final": True})
                break
            if last_status != 429:
                self._emit("error", {**base, "status": last_status, "error": last_error, "final": False})
            self._emit("retry", {**base, "status": last_status, "error": last_error, "delay": delay})
            await self._sleep(delay)

        raise HttpError(
            f"{method} {url}: giving up after {attempt} attempts, last: {last_error}",
            status=last_status,
            url=url,
            attempts=attempt,
        )

    async def get(self, url: str, *, scope: Hashable, **kw: Any) -> HttpResult:
        return await self.request("GET", url, scope=scope, **kw)

    async def post(self, url: str, *, scope: Hashable, **kw: Any) -> HttpResult:
        return await self.request("POST", url, scope=scope, **kw)
