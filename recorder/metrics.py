"""Per-feed counters and gauges, rendered as Prometheus text; served with /health on 127.0.0.1."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable

from aiohttp import web

COUNTERS = {
    "messages": "messages received (socket frames and REST bodies)",
    "bytes": "payload bytes received",
    "rows": "rows handed to the store, by table",
    "reconnects": "connections re-established after a loss",
    "gaps": "gaps written to sessions",
    "rejects": "messages kept raw with status rejected",
    "rate_limited": "requests answered 429 or delayed by the venue's limit",
    "errors": "errors written to sessions: feed failures (each restarts the feed) and failed requests",
    "requests": "HTTP requests sent",
    "dropped_duplicates": "trades or candle versions not written because already recorded",
    "book_anomalies": "fills/cancels of unknown orders, overfills and crossed books seen while tracking a book",
    "resyncs": "books found wrong (anomaly burst, crossed book, hourly check mismatch) and snapshotted afresh",
}
GAUGES = {
    "lag_seconds": "ts_recv minus venue ts_event of the latest message",
    "last_message_age_seconds": "seconds since the feed last received anything",
    "up": "1 while the feed's connection or poll loop is healthy",
    "queue_depth": "messages the feed holds waiting for a snapshot join",
    "book_orders": "resting orders in the books the feed tracks",
    "stalled": "1 while nothing the feed receives can be kept (the store is stalled: disk full, no fsync, backlog full)",
}


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """A small registry; feeds call inc/set, the HTTP endpoint calls render."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.counters: dict[tuple[str, str, str], float] = defaultdict(float)
        self.gauges: dict[tuple[str, str], float] = {}
        self.last_seen: dict[str, float] = {}
        self.global_gauges: dict[str, Callable[[], float]] = {}
        self.started = clock()

    def inc(self, name: str, feed: str, n: float = 1, table: str = "") -> None:
        """Add n to counter `name` of `feed` (and `table` for rows)."""
        self.counters[(name, feed, table)] += n

    def set(self, name: str, feed: str, value: float) -> None:
        """Set gauge `name` of `feed`."""
        self.gauges[(name, feed)] = value

    def seen(self, feed: str, nbytes: int) -> None:
        """One message of nbytes received by feed."""
        self.counters[("messages", feed, "")] += 1
        self.counters[("bytes", feed, "")] += nbytes
        self.last_seen[feed] = self._clock()

    def seen_many(self, feed: str, n: int, nbytes: int) -> None:
        """n messages of nbytes in total received by feed."""
        self.counters[("messages", feed, "")] += n
        self.counters[("bytes", feed, "")] += nbytes
        self.last_seen[feed] = self._clock()

    def gauge_fn(self, name: str, fn: Callable[[], float]) -> None:
        """Register a daemon-wide gauge computed on scrape (queue depth, store pending bytes)."""
        self.global_gauges[name] = fn

    def value(self, name: str, feed: str, table: str = "") -> float:
        """Current value of a counter (tests and status)."""
        return self.counters.get((name, feed, table), 0.0)

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        now = self._clock()
        for feed, t in self.last_seen.items():
            self.gauges[("last_message_age_seconds", feed)] = now - t
        out: list[str] = []
        for name, help_ in COUNTERS.items():
            rows = sorted((k, v) for k, v in self.counters.items() if k[0] == name)
            out += [f"# HELP booktape_{name}_total {help_}", f"# TYPE booktape_{name}_total counter"]
            for (_, feed, table), v in rows:
                labels = f'feed="{_escape(feed)}"' + (f',table="{_escape(table)}"' if table else "")
                out.append(f"booktape_{name}_total{{{labels}}} {v:g}")
        for name, help_ in GAUGES.items():
            out += [f"# HELP booktape_{name} {help_}", f"# TYPE booktape_{name} gauge"]
            for (n, feed), v in sorted(self.gauges.items()):
                if n == name:
                    out.append(f'booktape_{name}{{feed="{_escape(feed)}"}} {v:g}')
        for name, fn in sorted(self.global_gauges.items()):
            out += [f"# TYPE booktape_{name} gauge", f"booktape_{name} {fn():g}"]
        out += ["# TYPE booktape_uptime_seconds gauge", f"booktape_uptime_seconds {now - self.started:g}"]
        return "\n".join(out) + "\n"


class MetricsServer:
    """aiohttp app on host:port serving /metrics and /health; port 0 picks a free port (see .port)."""

    def __init__(self, metrics: Metrics, health: Callable[[], dict], host: str = "127.0.0.1", port: int = 0):
        self._metrics, self._health, self._host, self._want = metrics, health, host, port
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _get_metrics(self, _req: web.Request) -> web.Response:
        return web.Response(text=self._metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _get_health(self, _req: web.Request) -> web.Response:
        h = self._health()
        return web.json_response(h, status=200 if h.get("ok") else 503)

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/health", self._get_health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._want)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the only way aiohttp exposes a port-0 bind
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
