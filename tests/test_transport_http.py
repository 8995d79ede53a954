"""Rate limiting (injected clock, exact counting) and the retrying HTTP client against a real
aiohttp server on 127.0.0.1 (arrival times measured server-side)."""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from fractions import Fraction

import aiohttp
import pytest
from aiohttp import web

from recorder.transport import Backoff, HttpClient, HttpError, RateLimiter, TokenBucket
from recorder.transport.http import parse_retry_after

NS = 1_000_000_000


def run(coro, timeout: float = 20.0):
    async def main():
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(main())


class FakeClock:
    """Integer-ns clock; sleep() advances it (and yields to the loop)."""

    def __init__(self, start: int = 10 * NS):
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(1, int(seconds * NS))
        await asyncio.sleep(0)


def max_excess(times: list[int], rate: float, burst: int) -> Fraction:
    """max over windows [t_i, t_j] of count - (burst + rate*(t_j - t_i)); <= 0 means the bound holds."""
    times = sorted(times)
    r = Fraction(rate)
    worst = Fraction(-10**9)
    for i in range(len(times)):
        for j in range(i, len(times)):
            count = j - i + 1
            worst = max(worst, count - (burst + r * Fraction(times[j] - times[i], NS)))
    return worst


# --------------------------------------------------------------------------- token bucket
@pytest.mark.parametrize("rate,burst", [(3.0, 4), (100.0, 100), (2.0, 1), (10.0, 3), (1 / 60, 2)])
def test_token_bucket_never_exceeds_burst_plus_rate_t(rate, burst):
    clock = FakeClock()
    rng = random.Random(42)

    async def main():
        bucket = TokenBucket(rate, burst, clock_ns=clock, sleep=clock.sleep)
        admitted: list[int] = []

        async def worker(n):
            for _ in range(n):
                # random think time, sometimes none (bursts), sometimes long (refill)
                gap = rng.choice([0, 0, 0, rng.random() / rate, 3 * burst / rate])
                clock.now += int(gap * NS)
                await bucket.acquire()
                admitted.append(clock())

        await asyncio.gather(*(worker(40) for _ in range(5)))
        return admitted

    admitted = run(main())
    assert len(admitted) == 200
    assert max_excess(admitted, rate, burst) <= 0


def test_token_bucket_is_tight_and_fifo():
    clock = FakeClock(start=0)

    async def main():
        bucket = TokenBucket(4.0, 3, clock_ns=clock, sleep=clock.sleep)
        order, times = [], []

        async def one(i):
            await bucket.acquire()
            order.append(i)
            times.append(clock())

        tasks = [asyncio.create_task(one(i)) for i in range(11)]
        await asyncio.gather(*tasks)
        return order, times

    order, times = run(main())
    assert order == list(range(11))  # FIFO
    # 3 at once, then one every 0.25 s exactly
    assert times[:3] == [0, 0, 0]
    assert times[3:] == [k * NS // 4 for k in range(1, 9)]


def test_token_bucket_try_acquire_pause_and_cancel():
    clock = FakeClock(start=0)

    async def main():
        b = TokenBucket(1.0, 2, clock_ns=clock, sleep=clock.sleep)
        assert b.try_acquire() and b.try_acquire() and not b.try_acquire()
        assert b.delay_ns() == NS
        clock.now += NS
        assert b.try_acquire()
        # cancelled waiter consumes nothing
        waiter = asyncio.create_task(b.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.wait([waiter])
        clock.now += NS
        assert b.try_acquire()
        # pause: nothing admitted for 5 s even though tokens refill
        clock.now += 10 * NS
        b.pause(5.0)
        assert not b.try_acquire()
        t0 = clock()
        await b.acquire()
        assert clock() - t0 == 5 * NS

    run(main())


def test_rate_limiter_scopes():
    clock = FakeClock(start=0)
    lim = RateLimiter({("btcalpha", "public"): (100, 100), ("btcalpha", "private"): (2, 1)},
                      clock_ns=clock, sleep=clock.sleep)
    assert lim.bucket(("btcalpha", "public")).burst == 100
    for _ in range(100):
        assert lim.bucket(("btcalpha", "public")).try_acquire()
    assert not lim.bucket(("btcalpha", "public")).try_acquire()
    assert lim.bucket(("btcalpha", "private")).try_acquire()  # independent
    with pytest.raises(KeyError):
        lim.bucket(("typo", "public"))
    lim2 = RateLimiter(default=(10, 1))
    assert lim2.bucket("anything").rate_per_s == 10
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)


def test_backoff_deterministic_bounded_and_resettable():
    a = Backoff(0.5, 30.0, random.Random(7))
    b = Backoff(0.5, 30.0, random.Random(7))
    sa = [a.next() for _ in range(20)]
    assert sa == [b.next() for _ in range(20)]
    for n, d in enumerate(sa):
        assert 0 <= d <= min(30.0, 0.5 * 2 ** n)
    assert a.attempt == 20
    a.reset()
    assert a.attempt == 0 and a.ceiling() == 0.5
    assert Backoff(0.5, 30.0).ceiling(10_000) == 30.0  # no overflow
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_parse_retry_after():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("nan") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


# --------------------------------------------------------------------------- HTTP client, real server
class Script:
    """Responses per request, in order; the last one repeats. Records server-side arrivals."""

    def __init__(self, *steps):
        self.steps = list(steps)
        self.arrivals: list[float] = []
        self.headers: list[dict] = []
        self.queries: list[dict] = []

    async def handler(self, request: web.Request):
        self.arrivals.append(time.monotonic())
        self.headers.append(dict(request.headers))
        self.queries.append(dict(request.query))
        step = self.steps[min(len(self.arrivals) - 1, len(self.steps) - 1)]
        kind = step[0]
        if kind == "sleep":
            await asyncio.sleep(step[1])
            return web.Response(status=200, body=b"late")
        if kind == "drop":
            request.transport.abort()
            await asyncio.sleep(1)
            return web.Response(status=200)
        status, body, headers = step[1], step[2] if len(step) > 2 else b"", step[3] if len(step) > 3 else {}
        return web.Response(status=status, body=body, headers=headers)


@contextlib.asynccontextmanager
async def serve(script: Script):
    app = web.Application()
    app.router.add_route("*", "/api/v1/{tail:.*}", script.handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/"
    finally:
        await runner.cleanup()


def fast_client(session, events=None, **kw):
    lim = RateLimiter({"pub": (1000, 1000)})
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    return HttpClient(session, lim, rng=random.Random(1),
                      on_event=(lambda k, d: events.append((k, d))) if events is not None else None, **kw)


def test_429_retry_after_honoured_server_side():
    script = Script(("r", 429, b"slow down", {"Retry-After": "1"}), ("r", 200, b'{"ok":1}'))
    events = []

    async def main():
        async with serve(script) as base, aiohttp.ClientSession() as session:
            http = fast_client(session, events)
            return await http.request("GET", base + "orderbook/BTC_USD/", scope="pub", params={"group": "0"})

    res = run(main())
    assert res.status == 200 and res.body == b'{"ok":1}' and res.attempts == 2
    assert res.url.endswith("/api/v1/orderbook/BTC_USD/?group=0")
    gap = script.arrivals[1] - script.arrivals[0]
    assert 1.0 <= gap < 1.6, gap
    kinds = [k for k, _ in events]
    assert kinds == ["rate_limited", "retry"]
    assert events[0][1]["retry_after"] == 1.0 and events[0][1]["status"] == 429 and events[0][1]["scope"] == "pub"
    assert abs(res.ts_recv - time.time_ns()) < 5 * NS


def test_429_pauses_the_whole_scope():
    script = Script(("r", 429, b"", {"Retry-After": "0.5"}), ("r", 200, b"ok"))

    async def main():
        async with serve(script) as base, aiohttp.ClientSession() as session:
            http = fast_client(session)
            first = asyncio.create_task(http.request("GET", base + "a", scope="pub"))
            await asyncio.sleep(0.2)  # the 429 has arrived; the scope is paused
            t0 = time.monotonic()
            await http.request("GET", base + "b", scope="pub")
            waited = time.monotonic() - t0
            await first
            return waited

    waited = run(main())
    assert waited >= 0.25  # the other caller waited for the pause too
    assert script.arrivals[1] - script.arrivals[0] >= 0.5


def test_5xx_retried_then_success():
    script = Script(("r", 503), ("r", 500), ("r", 502), ("r", 200, b"fine"))
    events = []

    async def main():
        async with serve(script) as base, aiohttp.ClientSession() as session:
            return await fast_client(session, events).request("GET", base + "exchanges/", scope="pub")

    res = run(main())
    assert res.status == 200 and res.body == b"fine" and res.attempts == 4 and len(script.arrivals) == 4
    assert [k for k, _ in events] == ["error", "retry"] * 3
    assert [d["status"] for k, d in events if k == "error"] == [503, 500, 502]
    assert all(0 <= d["delay"] <= 0.05 for k, d in events if k == "retry")


def test_timeout_and_connection_drop_retried():
    script = Script(("sleep", 1.0), ("drop",), ("r", 200, b"ok"))
    events = []

    async def main():
        async with serve(script) as base, aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            # POST: aiohttp itself re-sends idempotent requests once on a dropped connection
            res = await fast_client(session, events).request("POST", base + "x", scope="pub", timeout=0.2)
            return res, time.monotonic() - t0

    res, elapsed = run(main())
    assert res.status == 200 and res.attempts == 3 and len(script.arrivals) == 3
    errors = [d["error"] for k, d in events if k == "error"]
    assert "timed out" in errors[0] and len(errors) == 2
    assert elapsed < 1.0


def test_4xx_returned_without_retry():
    script = Script(("r", 404, b'{"error":"no pair"}'))

    async def main():
        async with serve(script) as base, aiohttp.ClientSession() as session:
            return await fast_client(session).request("GET", base + "x", scope="pub")

    res = run(main())
    assert res.status == 404 and res.attempts == 1 and len(script.arrivals) == 1


SECRET = "k3y-5ecret-SIGNATURE-0123456789abcdef"


def _assert_no_secret(err: BaseException, events):
    texts = [str(err), repr(err), repr(err.args), repr(vars(err))]
    texts += [repr(e) for e in events]
    for t in texts:
        assert SECRET not in t, t
    assert err.__cause__ is None and err.__context__ is None


def test_max_attempts_raises_http_error_without_header_values():
    script = Script(("r", 503, b"down"))
    events = []
    calls = []

    def signed_headers():
        calls.append(1)
        return {"X-KEY": "public-key-id", "X-SIGN": SECRET, "X-NONCE": str(len(calls))}

    async def main():
        async with serve(script) as base, aiohttp.ClientSession() as session:
            http = fast_client(session, events, max_attempts=3)
            with pytest.raises(HttpError) as ei:
                await http.request("POST", base + "order/", scope="pub", data={"pair": "BTC_USD"}, headers=signed_headers)
            return ei.value

    err = run(main())
    assert err.status == 503 and err.attempts == 3 and err.url.endswith("/api/v1/order/")
    assert "giving up after 3 attempts" in str(err)
    assert len(script.arrivals) == 3 and len(calls) == 3  # headers re-signed per attempt
    assert [h["X-NONCE"] for h in script.headers] == ["1", "2", "3"] and script.headers[0]["X-SIGN"] == SECRET
    assert events[-1][0] == "error" and events[-1][1]["final"] is True
    _assert_no_secret(err, events)


def test_network_errors_give_up_without_header_values():
    events = []

    async def main():
        async with aiohttp.ClientSession() as session:
            http = fast_client(session, events, max_attempts=2)
            with pytest.raises(HttpError) as ei:
                await http.request("GET", "http://127.0.0.1:9/api", scope="pub", headers={"X-SIGN": SECRET})
            return ei.value

    err = run(main())
    assert err.status is None and err.attempts == 2
    _assert_no_secret(err, events)


def test_http_client_respects_the_rate_limit_server_side():
    script = Script(("r", 200, b"ok"))

    async def main():
        async with serve(script) as base, aiohttp.ClientSession() as session:
            http = HttpClient(session, RateLimiter({("v", "public"): (20, 1)}))
            await asyncio.gather(*(http.get(base + f"t{i}", scope=("v", "public")) for i in range(6)))

    run(main())
    arr = sorted(script.arrivals)
    assert arr[-1] - arr[0] >= 5 * 0.05 - 0.01  # 6 requests at 20/s burst 1: >= 0.25 s
