"""REST pollers: trades (id or time cursor, backfill across gaps), candles (changed versions only), book snapshots.

Each poller is one supervised feed per venue and channel, giving every pair one turn per tick (a few
requests at most); a failed request is a sessions row and the pair is tried again next tick. All requests
share the venue's rate-limit scope, whose waiters are served in order, so the pollers of a venue take turns
within its documented limit. A pair polled completely is "caught up"; poll_lag_seconds is the time since.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType

from recorder.transport import TransportError
from recorder.venues import bitbay

from .base import Healthy, VenueContext, every, fetch
from .dedup import CandleVersions, max_trade_id, needs_backfill

#: Seconds per candle resolution (1M approximated by 31 days: only used to size the refetch window).
RES_SECONDS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200, "3h": 10800,
               "4h": 14400, "6h": 21600, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800, "1M": 2678400}


class Poller:
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
            for pair in self.ctx.cfg.pairs:  # one turn each (a few requests at most): round-robin
                try:
                    ok = await self.poll(tap, http, session, pair)
                except TransportError as e:
                    ok = False
                    tap.event(session, self.stream, "error", str(e)[:300], pair)
                if ok:
                    tap.metrics.caught_up(self.name, pair)
                if self.ctx.sink.full:
                    await self.ctx.sink.room()
            healthy()

        try:
            await every(interval, tick)
        finally:
            tap.event(session, self.stream, "disconnect", "poller stopped")

    async def poll(self, tap, http, session: int, pair: str) -> bool:  # pragma: no cover - abstract
        """One turn of one pair; True when it has everything of the pair up to now."""
        raise NotImplementedError


@dataclass
class Backfill:
    """A pair's backfill in progress (offset-paged venues): trades above `floor` down from the newest, in turns.

    `chains` are the id ranges (lo, hi) fetched contiguously; a turn resumes the newest chain at `offset`,
    shifted by the trades that arrived since (or starts a new chain when more than a page arrived)."""

    floor: int
    chains: list[list[int]]
    offset: int
    pages: int = 0

    def missing(self) -> list[tuple[int, int]]:
        """Id ranges (exclusive bounds) above the floor not covered by a fetched chain."""
        out, lo = [], self.floor
        for c_lo, c_hi in sorted(self.chains):
            if c_lo > lo + 1:
                out.append((lo, c_lo))
            lo = max(lo, c_hi)
        return out


class TradesPoller(Poller):
    """Public trades with an id cursor; pages back until it overlaps the cursor (backfill), a few pages a turn.

    Each turn fetches at most `pages_per_turn` pages of one pair, then the next pair has its turn: a pair with a
    backlog cannot starve the others, its lag (poll_lag_seconds) shows how far behind it is. A backfill longer
    than `max_pages` in all stops with a `gap` row naming the exact id ranges not fetched.
    """

    channel = "trades"
    interval_key = "trades_interval"
    page = 100
    max_pages = 50
    pages_per_turn = 3

    def __init__(self, ctx: VenueContext, mod: ModuleType) -> None:
        super().__init__(ctx, mod)
        self.zonda = ctx.venue == "bitbay" and ctx.cfg.api == "current"
        start = {p: ms for p, (ms, _) in ctx.time_cursors.items()} if self.zonda else ctx.cursors
        self.cursor: dict[str, int | None] = {p: start.get(p) for p in ctx.cfg.pairs}  # Zonda: a time (ms)
        self.backfills: dict[str, Backfill] = {}

    def _write(self, tap, session, pair, res, trades, source) -> None:
        fresh = self.ctx.dedup(pair).fresh(trades)
        tap.trades(pair, session, res.ts_recv, fresh, source)
        if len(fresh) < len(trades):
            tap.metrics.inc("dropped_duplicates", tap.feed, len(trades) - len(fresh))
        top = max_trade_id(trades)
        if top is not None and (self.cursor[pair] is None or top > self.cursor[pair]):
            self.cursor[pair] = top

    async def poll(self, tap, http, session: int, pair: str) -> bool:
        """One turn of one pair; True when the pair is caught up (nothing newer left to fetch)."""
        venue, urls = self.ctx.venue, self.ctx.cfg.urls
        if venue == "bitopro":
            res, _, parsed = await fetch(http, tap, session, self.stream, pair, self.mod.trades_url(urls["rest_url"], pair),
                                         lambda r: self.mod.parse_trades(r.body, pair))
            if parsed is not None:
                self._write(tap, session, pair, res, parsed.trades, "rest")
            return parsed is not None
        if self.zonda:
            return await self._zonda(tap, http, session, pair)
        if venue == "bitbay":
            return await self._forward(tap, http, session, pair)
        return await self._backward(tap, http, session, pair)

    async def _zonda(self, tap, http, session: int, pair: str) -> bool:
        """Zonda `transactions` (UUID ids, so the cursor is the newest trade's ms): the first poll asks for the newest
        page (sort=desc, written oldest first), later ones page forward (sort=asc) from the cursor's ms: `fromTime` is
        exclusive, so cursor - 1 asks again for that ms's trades and the trade memory drops those already written.
        A page is `backfill` when it is full (more are behind it), else `rest`."""
        limit = bitbay.ZONDA_TRADES_LIMIT
        for _ in range(self.pages_per_turn):
            cur = self.cursor[pair]
            url = bitbay.zonda_transactions_url(self.ctx.cfg.urls["rest_url"], pair, limit,
                                                None if cur is None else cur - 1, "desc" if cur is None else "asc")
            res, _, parsed = await fetch(http, tap, session, self.stream, pair, url,
                                         lambda r: bitbay.parse_zonda_transactions(r.body, pair))
            if parsed is None:
                return False
            full = len(parsed.trades) >= limit
            self._write(tap, session, pair, res, parsed.trades[::-1] if cur is None else parsed.trades,
                        "backfill" if full and cur is not None else "rest")
            if parsed.trades:
                top = max(t.ts_event for t in parsed.trades) // 1_000_000
                if cur is not None and full and top <= cur:  # a whole page in one ms: go past it, say what is lost
                    tap.event(session, self.stream, "gap", f"more than {limit} {pair} trades in ms {cur}: that "
                                                           f"millisecond's trades after the first {limit} not fetched",
                              pair)
                    top = cur + 1
                if cur is None or top > cur:
                    self.cursor[pair] = top
            if cur is None or not full:
                return True
        return False

    async def _forward(self, tap, http, session: int, pair: str) -> bool:
        """BitBay: pages of 50 forward from the cursor (`since`, ascending); the next turn goes on from there.
        Without `since` the venue answers its oldest page, so the first poll asks for the newest (sort=desc)."""
        for _ in range(self.pages_per_turn):
            cur = self.cursor[pair]
            url = bitbay.public_url(self.ctx.cfg.urls["rest_url"], pair, "trades",
                                    since=cur, sort="asc" if cur is not None else "desc")
            res, _, parsed = await fetch(http, tap, session, self.stream, pair, url,
                                         lambda r: bitbay.parse_public_trades(r.body, pair))
            if parsed is None:
                return False
            self._write(tap, session, pair, res, parsed.trades, "rest" if cur is None else "backfill")
            if cur is None or len(parsed.trades) < 50:
                return True
        return False

    async def _backward(self, tap, http, session: int, pair: str) -> bool:
        """BTC-Alpha/bitexbit: the newest page, then the pair's backfill resumed for the rest of the turn."""
        bf = self.backfills.get(pair)
        prev_top = self.cursor[pair]
        trades = await self._page(tap, http, session, pair, 0, "rest")
        if trades is None:
            return False
        ids = [i for i in (_int(t.trade_id) for t in trades) if i is not None]
        if bf is None:
            if not needs_backfill(trades, prev_top, self.page):
                return True
            bf = self.backfills[pair] = Backfill(prev_top, [[min(ids), max(ids)]], self.page, 1)
        elif not ids:  # an empty page mid-backfill (the venue had a hiccup): go on at the next turn
            return False
        else:
            bf.pages += 1
            newer = sum(1 for i in ids if prev_top is not None and i > prev_top)
            if newer >= len(trades):  # a page or more arrived since the last turn: a new chain from the top
                bf.chains.append([min(ids), max(ids)])
                bf.offset = self.page
            else:
                bf.chains[-1][1] = max(bf.chains[-1][1], max(ids))
                bf.offset += newer
        for _ in range(self.pages_per_turn - 1):
            if bf.pages >= self.max_pages:
                del self.backfills[pair]
                ranges = "; ".join(f"ids above {lo} and below {hi}" for lo, hi in bf.missing())
                tap.event(session, self.stream, "gap", f"trades backfill stopped after {bf.pages} pages; "
                                                       f"not fetched: {pair} trades with {ranges}", pair)
                return True
            page = await self._page(tap, http, session, pair, bf.offset, "backfill")
            if page is None:
                return False
            bf.pages += 1
            bf.offset += self.page
            got = [i for i in (_int(t.trade_id) for t in page) if i is not None]
            if got:
                bf.chains[-1][0] = min(bf.chains[-1][0], min(got))
            if len(bf.chains) > 1 and bf.chains[-1][0] <= bf.chains[-2][1]:  # reached the older chain: one now
                lo, hi = bf.chains.pop()
                bf.chains[-1] = [min(bf.chains[-1][0], lo), max(bf.chains[-1][1], hi)]
            if not needs_backfill(page, bf.floor, self.page):
                del self.backfills[pair]
                return True
        return False

    async def _page(self, tap, http, session: int, pair: str, offset: int, source: str):
        url = self.mod.exchanges_url(self.ctx.cfg.urls["rest_url"], pair, limit=self.page, offset=offset,
                                     ordering="-id")
        res, _, parsed = await fetch(http, tap, session, self.stream, pair, url,
                                     lambda r: self.mod.parse_trades(r.body, pair))
        if parsed is None:
            return None
        self._write(tap, session, pair, res, parsed.trades, source)
        return parsed.trades


def _int(trade_id) -> int | None:
    try:
        return int(trade_id)
    except (TypeError, ValueError):
        return None


class CandlesPoller(Poller):
    """Candles of every configured resolution; writes a version only when it changed."""

    channel = "candles"
    interval_key = "candles_interval"

    def __init__(self, ctx: VenueContext, mod: ModuleType) -> None:
        super().__init__(ctx, mod)
        self.versions = {p: CandleVersions(known=ctx.candles.get(p, ())) for p in ctx.cfg.pairs}
        self.zonda = ctx.venue == "bitbay" and ctx.cfg.api == "current"

    async def poll(self, tap, http, session: int, pair: str) -> bool:
        """Fetch each resolution from the candle before the newest one seen (its final version)."""
        urls = self.ctx.cfg.urls
        versions = self.versions[pair]
        now = int(time.time())
        ok = True
        parse = bitbay.parse_zonda_candles if self.zonda else self.mod.parse_candles
        for res_name in self.ctx.cfg.resolutions:
            step = RES_SECONDS[res_name]
            latest = versions.latest_open(res_name)
            since = (latest // 10**9 - step) if latest is not None else now - 3 * step
            if self.zonda:  # from/to in ms, both required
                url = bitbay.zonda_candles_url(urls["rest_url"], pair, res_name, since * 1000, (now + step) * 1000)
            elif self.ctx.venue == "bitopro":
                url = self.mod.candles_url(urls["rest_url"], pair, res_name, since, now + step)
            else:
                url = self.mod.charts_url(urls["charts_url"], pair, res_name, since=since)
            res, _, parsed = await fetch(http, tap, session, self.stream, pair, url,
                                         lambda r, rn=res_name: parse(r.body, rn, pair))
            ok = ok and parsed is not None
            if parsed is not None:
                changed = versions.changed(parsed.candles)
                tap.candles(pair, session, res.ts_recv, changed)
                if len(changed) < len(parsed.candles):
                    tap.metrics.inc("dropped_duplicates", tap.feed, len(parsed.candles) - len(changed))
        return ok


class BookPoller(Poller):
    """L2 snapshots by REST: grouped L3 books (validation, and each checked against the live book by the L3
    feed tracking it), BitoPro REST books, BitBay signed `orderbook`."""

    interval_key = "book_interval"

    def __init__(self, ctx: VenueContext, mod: ModuleType, channel: str) -> None:
        self.channel = channel
        if channel == "grouped":
            self.interval_key = "grouped_interval"
        super().__init__(ctx, mod)
        self.source = "rest_grouped" if channel == "grouped" else "rest"

    async def poll(self, tap, http, session: int, pair: str) -> bool:
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
        watch = self.ctx.books.get(pair) if self.channel == "grouped" else None
        token = watch.grouped_sent(pair) if watch is not None else None
        seq, parsed = None, None
        try:
            res, seq, parsed = await fetch(http, tap, session, self.stream, pair, url, parse, **kw)
            if parsed is not None:
                tap.levels(pair, session, parsed.ts_event, res.ts_recv, seq, parsed.levels, self.source)
        finally:  # the book feed checks its book against the snapshot, or forgets it (failed, or cancelled)
            if token is not None:
                watch.grouped_done(token, None if parsed is None else parsed.levels, seq)
        return parsed is not None
