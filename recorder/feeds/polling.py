"""REST pollers: trades (id cursor, backfill across gaps), candles (changed versions only), book snapshots.

Each poller is one supervised feed per venue and channel, visiting every pair per tick; a failed
request is a sessions row and the pair is tried again next tick. All requests share the venue's
rate-limit scope, so the documented limit holds whatever the number of pollers.
"""
from __future__ import annotations

import time
from types import ModuleType

from recorder.transport import TransportError
from recorder.venues import bitbay

from .base import Healthy, VenueContext, every, fetch
from .dedup import CandleVersions, max_trade_id, needs_backfill

#: Seconds per candle resolution (1M approximated by 31 days: only used to size the refetch window).
RES_SECONDS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "3h": 10800,
               "4h": 14400, "6h": 21600, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800, "1M": 2678400}


class _Poller:
    """Shared loop: one session per run, `tick` every `interval` seconds, failures recorded per pair."""

    channel = ""
    interval_key = ""

    def __init__(self, ctx: VenueContext, mod: ModuleType) -> None:
        self.ctx, self.mod = ctx, mod
        self.name = f"{ctx.venue}:{self.channel}"
        self.stream = f"rest:{self.channel}"

    async def run(self, healthy: Healthy) -> None:
        """Poll forever; only a bug escapes (the supervisor restarts it)."""
        tap = self.ctx.tap(self.name)
        session = tap.new_session()
        http = self.ctx.http(tap, session, self.stream)
        interval = getattr(self.ctx.cfg, self.interval_key)
        tap.event(session, self.stream, "connect", f"polling {len(self.ctx.cfg.pairs)} pairs every {interval}s")

        async def tick() -> None:
            for pair in self.ctx.cfg.pairs:
                try:
                    await self.poll(tap, http, session, pair)
                except TransportError as e:
                    tap.event(session, self.stream, "error", str(e)[:300], pair)
                if self.ctx.sink.full:
                    await self.ctx.sink.room()
            healthy()

        try:
            await every(interval, tick)
        finally:
            tap.event(session, self.stream, "disconnect", "poller stopped")

    async def poll(self, tap, http, session: int, pair: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class TradesPoller(_Poller):
    """Public trades with an id cursor; pages back until it overlaps the cursor (backfill)."""

    channel = "trades"
    interval_key = "trades_interval"
    page = 100
    max_pages = 50

    def __init__(self, ctx: VenueContext, mod: ModuleType) -> None:
        super().__init__(ctx, mod)
        self.cursor: dict[str, int | None] = {p: ctx.cursors.get(p) for p in ctx.cfg.pairs}

    def _write(self, tap, session, pair, res, trades, source) -> None:
        fresh = self.ctx.dedup(pair).fresh(trades)
        tap.trades(pair, session, res.ts_recv, fresh, source)
        if len(fresh) < len(trades):
            tap.metrics.inc("dropped_duplicates", tap.feed, len(trades) - len(fresh))
        top = max_trade_id(trades)
        if top is not None and (self.cursor[pair] is None or top > self.cursor[pair]):
            self.cursor[pair] = top

    async def poll(self, tap, http, session: int, pair: str) -> None:
        """One poll of one pair (several requests when backfilling)."""
        venue, urls = self.ctx.venue, self.ctx.cfg.urls
        if venue == "bitopro":
            res, _, parsed = await fetch(http, tap, session, self.stream, pair, self.mod.trades_url(urls["rest_url"], pair),
                                         lambda r: self.mod.parse_trades(r.body, pair))
            if parsed is not None:
                self._write(tap, session, pair, res, parsed.trades, "rest")
            return
        start = self.cursor[pair]
        for n in range(self.max_pages):
            if venue == "bitbay":
                cur = self.cursor[pair]
                # without since the venue answers its OLDEST page: start from the newest, then page forward
                url = bitbay.public_url(urls["rest_url"], pair, "trades",
                                        since=cur, sort="asc" if cur is not None else "desc")
                parse = lambda r: bitbay.parse_public_trades(r.body, pair)  # noqa: E731
                page = 50
            else:
                url = self.mod.exchanges_url(urls["rest_url"], pair, limit=self.page, offset=n * self.page,
                                             ordering="-id")
                parse = lambda r: self.mod.parse_trades(r.body, pair)  # noqa: E731
                page = self.page
            res, _, parsed = await fetch(http, tap, session, self.stream, pair, url, parse)
            if parsed is None:
                return
            self._write(tap, session, pair, res, parsed.trades, "rest" if n == 0 else "backfill")
            more = (len(parsed.trades) >= page and start is not None) if venue == "bitbay" \
                else needs_backfill(parsed.trades, start, page)
            if not more:
                return
        tap.event(session, self.stream, "gap",
                  f"trades backfill stopped after {self.max_pages} pages; older trades than those may be missing", pair)


class CandlesPoller(_Poller):
    """Candles of every configured resolution; writes a version only when it changed."""

    channel = "candles"
    interval_key = "candles_interval"

    def __init__(self, ctx: VenueContext, mod: ModuleType) -> None:
        super().__init__(ctx, mod)
        self.versions = {p: CandleVersions() for p in ctx.cfg.pairs}

    async def poll(self, tap, http, session: int, pair: str) -> None:
        """Fetch each resolution from the candle before the newest one seen (its final version)."""
        urls = self.ctx.cfg.urls
        versions = self.versions[pair]
        now = int(time.time())
        for res_name in self.ctx.cfg.resolutions:
            step = RES_SECONDS[res_name]
            latest = versions.latest_open(res_name)
            since = (latest // 10**9 - step) if latest is not None else now - 3 * step
            if self.ctx.venue == "bitopro":
                url = self.mod.candles_url(urls["rest_url"], pair, res_name, since, now + step)
            else:
                url = self.mod.charts_url(urls["charts_url"], pair, res_name, since=since)
            res, _, parsed = await fetch(http, tap, session, self.stream, pair, url,
                                         lambda r, rn=res_name: self.mod.parse_candles(r.body, rn, pair))
            if parsed is not None:
                changed = versions.changed(parsed.candles)
                tap.candles(pair, session, res.ts_recv, changed)
                if len(changed) < len(parsed.candles):
                    tap.metrics.inc("dropped_duplicates", tap.feed, len(parsed.candles) - len(changed))


class BookPoller(_Poller):
    """L2 snapshots by REST: grouped L3 books (validation), BitoPro REST books, BitBay signed `orderbook`."""

    interval_key = "book_interval"

    def __init__(self, ctx: VenueContext, mod: ModuleType, channel: str) -> None:
        self.channel = channel
        if channel == "grouped":
            self.interval_key = "grouped_interval"
        super().__init__(ctx, mod)
        self.source = "rest_grouped" if channel == "grouped" else "rest"

    async def poll(self, tap, http, session: int, pair: str) -> None:
        """One snapshot of one pair to book_levels."""
        cfg = self.ctx.cfg
        kw = {}
        if self.ctx.venue == "bitbay":
            creds = cfg.credentials
            signed: dict = {}

            def headers() -> dict:  # fresh moment per attempt; the body is signed with it
                _, body, hdrs = bitbay.trading_request(creds.key.reveal(), creds.secret.reveal(), "orderbook",
                                                       bitbay.orderbook_params(pair), int(time.time()))
                signed["body"] = body
                return hdrs

            url = cfg.urls["trading_url"]
            kw = dict(method="POST", headers=headers, data=lambda: signed["body"],
                      request=f"POST {url} method=orderbook " + "&".join(
                          f"{k}={v}" for k, v in bitbay.orderbook_params(pair).items()))
            parse = lambda r: bitbay.parse_trading_orderbook(r.body, pair)  # noqa: E731
        elif self.ctx.venue == "bitopro":
            url = self.mod.orderbook_url(cfg.urls["rest_url"], pair, limit=cfg.book_limit)
            parse = lambda r: self.mod.parse_orderbook(r.body, pair)  # noqa: E731
        else:
            url = self.mod.orderbook_url(cfg.urls["rest_url"], pair, 1)
            parse = lambda r: self.mod.parse_orderbook(r.body, pair, r.ts_recv, 1)  # noqa: E731
        res, seq, parsed = await fetch(http, tap, session, self.stream, pair, url, parse, **kw)
        if parsed is not None:
            tap.levels(pair, session, parsed.ts_event, res.ts_recv, seq, parsed.levels, self.source)
