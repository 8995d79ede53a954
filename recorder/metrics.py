"""Per-feed counters and gauges, exposed through prometheus-client; served with /health and the status page.

The hot path only adds to plain dicts (`inc`, `seen`); a custom collector turns them into metric families
when /metrics is scraped. Labels are the same everywhere: `venue` and `feed` (the channel: book, trades...)
for per-feed series, plus `pair` for per-pair ones and `table` for rows. Every configured feed's series
exist at 0 from start-up (`register`).
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, ProcessCollector, PlatformCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

COUNTERS = {
    "messages": "messages received (socket frames and REST bodies)",
    "useful_messages": "messages that carried data: a parsed book, trade or candle message (never an error body)",
    "bytes": "payload bytes received",
    "reconnects": "connections re-established after a loss",
    "gaps": "gaps written to sessions",
    "rejects": "messages kept raw with status rejected",
    "rate_limited": "requests answered 429 or delayed by the venue's limit",
    "errors": "errors written to sessions: feed failures (each restarts the feed) and failed requests",
    "requests": "HTTP requests sent",
    "dropped_duplicates": "trades or candle versions not written because already recorded",
    "book_anomalies": "fills/cancels of unknown orders, overfills and crossed books seen while tracking a book",
    "resyncs": "books found wrong (anomaly burst, crossed book, grouped snapshot fitting no cut, hourly check "
               "mismatch) and snapshotted afresh",
}
#: The counters every feed has (the others are per table or daemon-wide).
FEED_COUNTERS = tuple(COUNTERS)
GAUGES = {
    "lag_seconds": "how far behind the feed is: ts_recv minus venue ts_event of the latest socket message; "
                   "for a poller, the largest poll_lag_seconds of its pairs",
    "last_message_age_seconds": "seconds since the feed last received a useful message (-1: none yet)",
    "up": "1 while the feed's connection or poll loop runs (see feed_state for whether it records)",
    "queue_depth": "messages the feed holds waiting for a snapshot join",
    "book_orders": "resting orders in the books the feed tracks",
    "stalled": "1 while nothing the feed receives can be kept (the store is stalled: disk full, no fsync, backlog full)",
}
#: Daemon-wide gauges registered by the daemon (gauge_fn), with their help.
GLOBAL_HELP = {
    "queue_rows": "rows waiting in the sink for the store",
    "store_pending_bytes": "bytes in the durable log not yet converted to Parquet (store backlog)",
    "arrow_allocated_bytes": "bytes allocated from Arrow's memory pool",
    "kernels_ready": "1 once the L3 feed's compiled kernels are loaded (or none are needed)",
    "store_stalled": "1 while the store keeps nothing it is given (disk full, no fsync, backlog full for 10 s)",
    "store_disk_full": "1 while the root's file system is full",
    "store_fsync_age_seconds": "seconds since the store's last fsync",
    "store_unsynced_seconds": "seconds the oldest row not yet fsynced has waited",
    "store_blocked_seconds": "seconds an append has waited for room in the store's backlog",
    "store_backlog_ratio": "store backlog (log bytes not yet in Parquet) over its cap, max_pending_bytes",
}
ROW_TABLES = ("raw", "book_events", "book_levels", "trades", "candles", "sessions")


def split_feed(name: str) -> tuple[str, str]:
    """`venue:channel` -> (venue, channel); a daemon-wide name ("sink") has no venue."""
    venue, _, feed = name.rpartition(":")
    return venue, feed


class Metrics:
    """The daemon's counters; feeds call inc/set/seen, the collector reads them on scrape."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.counters: dict[tuple[str, str, str], int] = defaultdict(int)
        self.gauges: dict[tuple[str, str], float] = {}
        self.last_seen: dict[str, float] = {}
        self.last_useful: dict[str, float] = {}
        self.last_fault: dict[str, tuple[float, str]] = {}
        self.polled: dict[tuple[str, str], float] = {}  # (feed, pair) -> when the pair was last caught up
        self.global_gauges: dict[str, Callable[[], float]] = {}
        self.started = clock()

    def register(self, feed: str, pairs: Iterable[str] = ()) -> None:
        """Make a feed's series exist at 0 before its first event (and its pairs' poll lag, if it polls)."""
        for name in FEED_COUNTERS:
            self.counters[(name, feed, "")] += 0
        self.gauges.setdefault(("up", feed), 0)
        self.gauges.setdefault(("lag_seconds", feed), 0.0)
        for p in pairs:
            self.polled.setdefault((feed, p), self._clock())

    def register_tables(self, venue: str) -> None:
        """rows_total of every recorded table of a venue at 0."""
        for table in ROW_TABLES:
            self.counters[("rows", venue, table)] += 0

    def inc(self, name: str, feed: str, n: int = 1, table: str = "") -> None:
        """Add n to counter `name` of `feed` (and `table` for rows)."""
        self.counters[(name, feed, table)] += n

    def set(self, name: str, feed: str, value: float) -> None:
        """Set gauge `name` of `feed`."""
        self.gauges[(name, feed)] = value

    def seen(self, feed: str, nbytes: int, useful: bool = True) -> None:
        """One message of nbytes received by feed; `useful` when it carried data (not an error body)."""
        c = self.counters
        c[("messages", feed, "")] += 1
        c[("bytes", feed, "")] += nbytes
        now = self.last_seen[feed] = self._clock()
        if useful:
            c[("useful_messages", feed, "")] += 1
            self.last_useful[feed] = now

    def seen_many(self, feed: str, n: int, nbytes: int) -> None:
        """n useful messages of nbytes in total received by feed."""
        c = self.counters
        c[("messages", feed, "")] += n
        c[("useful_messages", feed, "")] += n
        c[("bytes", feed, "")] += nbytes
        self.last_seen[feed] = self.last_useful[feed] = self._clock()

    def fault(self, feed: str, detail: str) -> None:
        """The feed met an error or a rejected message (health: failing unless useful messages follow)."""
        self.last_fault[feed] = (self._clock(), detail)

    def caught_up(self, feed: str, pair: str) -> None:
        """A poller has everything of `pair` up to now."""
        self.polled[(feed, pair)] = self._clock()

    def poll_lag(self, feed: str) -> dict[str, float]:
        """Seconds since each pair of a poller was last caught up."""
        now = self._clock()
        return {p: now - t for (f, p), t in self.polled.items() if f == feed}

    def gauge_fn(self, name: str, fn: Callable[[], float]) -> None:
        """Register a daemon-wide gauge computed on scrape (queue depth, store pending bytes)."""
        self.global_gauges[name] = fn

    def value(self, name: str, feed: str, table: str = "") -> int:
        """Current value of a counter (tests and status)."""
        return self.counters.get((name, feed, table), 0)

    def age(self, feed: str) -> float | None:
        """Seconds since the feed's last useful message (None: none yet)."""
        t = self.last_useful.get(feed)
        return None if t is None else self._clock() - t

    def collect(self) -> list[Metric]:
        """Metric families of every booktape series (called on scrape)."""
        now = self._clock()
        out: list[Metric] = []
        for name, help_ in COUNTERS.items():
            fam = CounterMetricFamily(f"booktape_{name}", help_, labels=("venue", "feed"))
            for (n, feed, _), v in sorted(self.counters.items()):
                if n == name:
                    fam.add_metric(split_feed(feed), v)
            out.append(fam)
        rows = CounterMetricFamily("booktape_rows", "rows handed to the store, by table", labels=("venue", "table"))
        for (n, venue, table), v in sorted(self.counters.items()):
            if n == "rows":
                rows.add_metric((venue, table), v)
        out.append(rows)
        polled = defaultdict(dict)
        for (feed, pair), t in self.polled.items():
            polled[feed][pair] = now - t
        lag = dict(self.gauges)
        for feed, pairs in polled.items():
            lag[("lag_seconds", feed)] = max(pairs.values())
        for feed in {f for (_, f, _) in self.counters if ":" in f}:
            t = self.last_useful.get(feed)
            lag[("last_message_age_seconds", feed)] = -1.0 if t is None else now - t
        for name, help_ in GAUGES.items():
            fam = GaugeMetricFamily(f"booktape_{name}", help_, labels=("venue", "feed"))
            for (n, feed), v in sorted(lag.items()):
                if n == name:
                    fam.add_metric(split_feed(feed), v)
            out.append(fam)
        fam = GaugeMetricFamily("booktape_poll_lag_seconds", "seconds since a poller last had everything of the pair "
                                "(grows while it pages a backlog or its requests fail)", labels=("venue", "feed", "pair"))
        for feed, pairs in sorted(polled.items()):
            for pair, v in sorted(pairs.items()):
                fam.add_metric((*split_feed(feed), pair), v)
        out.append(fam)
        for name, fn in sorted(self.global_gauges.items()):
            out.append(GaugeMetricFamily(f"booktape_{name}", GLOBAL_HELP.get(name, name.replace("_", " ")), value=fn()))
        out.append(GaugeMetricFamily("booktape_uptime_seconds", "seconds since the daemon started",
                                     value=now - self.started))
        return out


class Exposition:
    """A prometheus-client registry over a Metrics (custom collector) plus the process and platform metrics."""

    def __init__(self, metrics: Metrics, extra: Callable[[], list[Metric]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(metrics, extra))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def render(self) -> str:
        """Prometheus text format 0.0.4 with integers written as integers (see `_value`)."""
        out: list[str] = []
        for fam in self.registry.collect():
            name = fam.name + ("_total" if fam.type == "counter" else "")
            out += [f"# HELP {name} {_escape_help(fam.documentation)}", f"# TYPE {name} {fam.type}"]
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
                out.append(f"{s.name}{{{labels}}} {_value(s.value)}" if labels else f"{s.name} {_value(s.value)}")
        return "\n".join(out) + "\n"


class _Collector:
    def __init__(self, metrics: Metrics, extra: Callable[[], list[Metric]] | None) -> None:
        self.metrics, self.extra = metrics, extra

    def collect(self):
        yield from self.metrics.collect()
        if self.extra is not None:
            yield from self.extra()


def _value(v) -> str:
    """An int as all its digits (prometheus-client's own writer turns 2576981 into 2.576981e+06); floats as Go does."""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float) and v.is_integer() and math.isfinite(v) and abs(v) < 2 ** 53:
        return str(int(v))
    return floatToGoString(v)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")
