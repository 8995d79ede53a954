"""The Simulator: engines per venue and pair, the four venue servers and the control endpoint, on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterator

from aiohttp import web

from recorder.sim import VENUES
from recorder.sim.bitbay import BitBayVenue
from recorder.sim.bitopro import BitoProVenue
from recorder.sim.btcalpha import BtcAlphaVenue
from recorder.sim.clock import SimClock
from recorder.sim.engine import Market, fmt, pair_spec
from recorder.sim.faults import Fault, VenueFaults
from recorder.sim.plumbing import RateLimiter, VenueContext
from recorder.sim.traders import Traders
from recorder.sim.truth import TruthWriter

#: Documented limits as (requests, per seconds): "public" per IP, "private" per API key.
DEFAULT_LIMITS = {
    "btcalpha.public": (100, 1.0), "btcalpha.private": (2, 1.0),
    "bitexbit.public": (100, 1.0), "bitexbit.private": (2, 1.0),
    "bitopro.public": (600, 60.0), "bitopro.private": (600, 60.0),
    "bitbay.public": (60, 60.0), "bitbay.private": (1, 1.0),
}
DEFAULT_CREDENTIALS = {
    "btcalpha": ("sim-key", "test-secret"), "bitexbit": ("sim-key", "test-secret"),
    "bitopro": ("sim-key", "bitopro"), "bitbay": ("sim-key", "test-secret"),
}


@dataclass
class SimConfig:
    """Simulator settings; `port=0` binds every server on a free port, `port=N` uses N, N+1, … in `venues` order then control."""

    seed: int = 1
    pairs: list[str] = field(default_factory=lambda: ["BTC_USD", "ETH_BTC"])
    rate: float = 50.0  # messages per second per venue and pair
    port: int = 0
    host: str = "127.0.0.1"
    start: float | None = None  # epoch seconds of logical time zero; None: now - warmup
    warmup: float = 60.0  # logical seconds of history generated before serving
    paced: bool = True  # False: engines move only on `advance()` (tests)
    truth_dir: str | None = None
    checkpoint_every: int = 1000  # engine events between truth book checkpoints
    styles: dict[str, str] = field(default_factory=lambda: {"btcalpha": "2024", "bitexbit": "2024"})
    limits: dict[str, tuple[int, float]] = field(default_factory=dict)  # overrides of DEFAULT_LIMITS
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)  # venue -> (key, secret) overrides
    eio_ping_interval_ms: int = 25_000
    eio_ping_timeout_ms: int = 20_000
    bitopro_ping_s: float = 1.0  # the live venue pings every second (its docs: 20 s)
    bitopro_pong_timeout_s: float = 5.0
    faults: list[Fault] = field(default_factory=list)  # injected at startup
    venues: tuple[str, ...] = VENUES  # which venues to serve


@dataclass
class _Feed:
    """One venue+pair engine with its traders, and the next logical tick for venues that push on a timer."""

    venue: object
    market: Market
    traders: Traders
    next_tick: int | None


class Simulator:
    """`async with Simulator(cfg) as sim:` serves every venue; `sim.urls`, `true_book`, `inject`, `advance`."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        warm_ns = int(cfg.warmup * 1e9)
        start_ns = int(cfg.start * 1e9) if cfg.start is not None else time.time_ns() // 10**9 * 10**9 - warm_ns
        self.clock = SimClock(start_ns, warm_ns)
        self.truth = TruthWriter(cfg.truth_dir) if cfg.truth_dir else None
        self.faults = {v: VenueFaults() for v in cfg.venues}
        self.venues: dict[str, object] = {}
        self.feeds: list[_Feed] = []
        self.urls: dict[str, str] = {}
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task] = []
        limits = {**DEFAULT_LIMITS, **cfg.limits}
        for v in cfg.venues:
            markets = {p: Market(pair_spec(p), id_base=(i + 1) * 10_000_000) for i, p in enumerate(cfg.pairs)}
            key, secret = cfg.credentials.get(v, DEFAULT_CREDENTIALS[v])
            ctx = VenueContext(v, markets, self.faults[v], self.truth, key, secret,
                               {k.split(".")[1]: RateLimiter(*lim) for k, lim in limits.items() if k.startswith(v + ".")},
                               cfg.styles.get(v, "2024"))
            if v in ("btcalpha", "bitexbit"):
                venue = BtcAlphaVenue(ctx, v, cfg.eio_ping_interval_ms, cfg.eio_ping_timeout_ms)
            elif v == "bitopro":
                venue = BitoProVenue(ctx, cfg.bitopro_ping_s, cfg.bitopro_pong_timeout_s)
            else:
                venue = BitBayVenue(ctx)
            self.venues[v] = venue
            for p, m in markets.items():
                tick = venue.tick_ns
                self.feeds.append(_Feed(venue, m, Traders(m, f"{cfg.seed}:{v}:{p}", cfg.rate, start_ns),
                                        None if tick is None else (start_ns // tick + 1) * tick))
        for f in cfg.faults:
            self.inject(f)

    # --- engines ----------------------------------------------------------------------------------------
    def _run_feed(self, feed: _Feed, upto_ns: int, max_events: int = 1 << 62) -> int:
        """Run one feed's engine to logical `upto_ns` (at most `max_events`), publishing, ticking and checkpointing."""
        venue, m, every, done = feed.venue, feed.market, self.cfg.checkpoint_every, 0
        name = venue.ctx.name
        while done < max_events:
            stop = upto_ns if feed.next_tick is None else min(upto_ns, feed.next_tick)
            room = min(every - m.seq % every, max_events - done)
            events = feed.traders.run_until(stop, room)
            if events:
                done += len(events)
                venue.publish(m, events)
                if self.truth is not None:
                    self.truth.events(name, m, events)
                    if m.seq % every == 0:
                        self.truth.checkpoint(name, m)
            if len(events) == room:
                continue
            if feed.next_tick is not None and feed.next_tick <= upto_ns:
                venue.on_tick(m, feed.next_tick)
                feed.next_tick += venue.tick_ns
                continue
            break
        return done

    async def _drive(self, feed: _Feed) -> None:
        """Pace one feed by the wall clock until cancelled, yielding to the loop between batches."""
        while True:
            n = self._run_feed(feed, self.clock.target_ns(), 20_000)
            due = feed.traders.next_ts if feed.next_tick is None else min(feed.traders.next_ts, feed.next_tick)
            await asyncio.sleep(0 if n >= 20_000 else max(0.0, min(self.clock.wall_delay_s(due), 0.5)))

    def advance(self, seconds: float) -> int:
        """Unpaced mode: run every engine `seconds` of logical time further now; returns events produced."""
        self.clock.lead_ns += int(seconds * 1e9)
        upto = self.clock.start_ns + self.clock.lead_ns
        return sum(self._run_feed(f, upto) for f in self.feeds)

    # --- lifecycle --------------------------------------------------------------------------------------
    async def __aenter__(self) -> "Simulator":
        upto = self.clock.start_ns + self.clock.lead_ns
        for f in self.feeds:
            self._run_feed(f, upto)
        names = [*self.cfg.venues, "control"]
        apps = [self.venues[v].app for v in self.cfg.venues] + [self._control_app()]
        for i, (name, app) in enumerate(zip(names, apps)):
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.cfg.host, self.cfg.port + i if self.cfg.port else 0))
            site = web.SockSite(runner, sock)
            await site.start()
            self.urls[name] = f"http://{self.cfg.host}:{sock.getsockname()[1]}"
        for v in self.venues.values():
            self._tasks += [asyncio.create_task(c) for c in v.background()]
        self.clock.restart_pacing()
        if self.cfg.paced:
            self._tasks += [asyncio.create_task(self._drive(f)) for f in self.feeds]
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for v in self.venues.values() for c in list(v.hub.conns)))
        await asyncio.sleep(0)  # let released polls answer before the runners stop
        for r in reversed(self._runners):
            await r.cleanup()
        if self.truth is not None:
            for f in self.feeds:
                self.truth.checkpoint(f.venue.ctx.name, f.market)
            self.truth.close()

    # --- control ----------------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        """Apply a fault now to one venue or to all."""
        for v in self.cfg.venues if fault.venue == "all" else (fault.venue,):
            if fault.kind == "drop":
                self.venues[v].hub.drop_all()
            else:
                self.faults[v].add(fault)

    def true_book(self, venue: str, pair: str) -> dict:
        """The exact current book: every resting order (id, price, amount as decimal strings, ts ns), best first."""
        m = self.venues[venue].ctx.markets[pair]
        pdp, adp = m.spec.price_dp, m.spec.amount_dp

        def side(s: str) -> list[dict]:
            return [{"id": o.oid, "price": fmt(o.price, pdp), "amount": fmt(o.lots, adp), "ts": o.ts}
                    for o in m.book.depth_orders(s)]

        return {"venue": venue, "pair": pair, "seq": m.seq, "ts": m.last_ts, "bids": side("buy"), "asks": side("sell")}

    def _control_app(self) -> web.Application:
        async def fault(request: web.Request) -> web.Response:
            try:
                body = await request.json()
                self.inject(Fault(**body))
            except (ValueError, TypeError, KeyError) as e:
                return web.json_response({"error": str(e)}, status=400)
            return web.json_response({"ok": True})

        async def book(request: web.Request) -> web.Response:
            try:
                return web.json_response(self.true_book(request.query["venue"], request.query["pair"]))
            except KeyError:
                return web.json_response({"error": "unknown venue or pair"}, status=404)

        async def urls(request: web.Request) -> web.Response:
            return web.json_response(self.urls)

        app = web.Application()
        app.add_routes([web.post("/_sim/fault", fault), web.get("/_sim/truth/book", book), web.get("/_sim/urls", urls)])
        return app


@contextlib.contextmanager
def run_subprocess(*args: str, timeout: float = 20.0) -> Iterator[dict[str, str]]:
    """Run `recorder simulate --port 0 <args>` in a child process; yields its URLs, terminates it on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = os.path.join(tmp, "urls.json")
        proc = subprocess.Popen([sys.executable, "-m", "recorder.sim.cli", "--port", "0", "--ready-file", ready, *args],
                                stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while not os.path.exists(ready):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"simulator did not start (exit code {proc.poll()})")
                time.sleep(0.05)
            with open(ready) as fh:
                yield json.load(fh)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
