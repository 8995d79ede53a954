"""`recorder run`: supervised feeds -> sink -> durable store, /metrics and /health, graceful stop on signals.

Every task is owned by one TaskGroup. A failing feed is restarted after a capped full-jitter
backoff, forever; a feed that became healthy resets its backoff. SIGTERM/SIGINT stop the feeds,
flush the sink, commit the store and return 0.
"""
from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterable

import aiohttp
import pyarrow as pa

from recorder import feeds as feeds_mod
from recorder.config import Config
from recorder.feeds import l3
from recorder.feeds.base import VenueContext, describe
from recorder.feeds.polling import Poller
from recorder.feeds.sink import Sink, Tap
from recorder.health import Check, FeedHealth, Health
from recorder.metrics import Exposition, Metrics, split_feed
from recorder.notify import Notifier
from recorder.offload import in_daemon_thread
from recorder.page import Window
from recorder.redact import Redactor
from recorder.rows import Candle
from recorder.startup import StartupError, bind, fail, check_lease, check_root, pairs_request, unlisted_pairs
from recorder.web import StatusServer
from recorder.procs import child_env
from recorder.store import DiskFull, Store, StoreError
from recorder.store.health import STALL_AFTER, store_health
from recorder.store import remote
from recorder.transport import Backoff, RateLimiter
from schemas import TABLES, files

log = logging.getLogger("recorder.daemon")
VERSION = version("booktape")
#: Venues whose book stream needs the L3 feed's compiled kernels.
L3_VENUES = ("btcalpha", "bitexbit")
#: A stop (SIGTERM) is over within STOP_BUDGET seconds whatever the store's state: feeds get FEEDS_BUDGET to wind
#: down, the sink's last flush runs until SINK_BUDGET (then what is left becomes gap rows), the store's close
#: gets the rest (a stalled store leaves its log for the next start).
STOP_BUDGET, FEEDS_BUDGET, SINK_BUDGET = 9.0, 2.0, 5.5
#: seconds a stop waits for compaction; a longer merge is stopped and redone at the next start (Store.close).
COMPACT_WAIT = 3.0
_loaded = False  # the L3 kernels are loaded in this process (a second Daemon in it skips the compile child)


class LogFormatter(logging.Formatter):
    """One JSON object (or key=value line) per record, with `extra={"fields": {...}}` merged in; redacted."""

    def __init__(self, fmt: str = "json", redact: Callable[[str], str] = lambda s: s) -> None:
        super().__init__()
        self.fmt, self.redact = fmt, redact

    def format(self, record: logging.LogRecord) -> str:
        d = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
             "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        d.update({k: v for k, v in getattr(record, "fields", {}).items() if v is not None})
        if record.exc_info:
            d["exc"] = describe(record.exc_info[1])
        if self.fmt == "json":
            line = json.dumps(d, default=str, ensure_ascii=False)
        else:
            line = " ".join(f"{k}={json.dumps(v, default=str) if isinstance(v, str) and (' ' in v or '=' in v) else v}"
                            for k, v in d.items())
        return self.redact(line)


def setup_logging(fmt: str, level: str, redact: Callable[[str], str], stream=None) -> None:
    """Route every recorder log record through the structured, redacting formatter."""
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(LogFormatter(fmt, redact))
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def secrets_of(cfg: Config) -> list[str]:
    """Every credential value in the config (to redact)."""
    out = []
    for v in cfg.venues:
        if v.credentials is not None:
            out += [v.credentials.key.reveal(), v.credentials.secret.reveal()]
    if cfg.s3_credentials is not None:
        out += [cfg.s3_credentials.key.reveal(), cfg.s3_credentials.secret.reveal()]
    return out


def _recorded(root: Path, venue: str, pairs: Iterable[str], query: str, table: str = "trades") -> dict[str, list]:
    """Per pair, the rows `query` gives over the pair's files of `table` (`?` is the file list); pairs without
    files, or whose first row is NULL, are left out."""
    import duckdb

    out: dict[str, list] = {}
    for pair in pairs:
        d = root / table / f"exchange={venue}" / f"pair={pair}"
        paths = [str(f) for date in sorted(d.glob("date=*")) for f in files.data_files(date, TABLES[table])]
        if not paths:
            continue
        try:
            con = duckdb.connect()
            rows = con.execute(query, [paths]).fetchall()
            con.close()
        except duckdb.Error as e:
            log.warning(f"cannot read where {table} resume",
                        extra={"fields": {"venue": venue, "pair": pair, "error": str(e)}})
            continue
        if rows and rows[0][0] is not None:
            out[pair] = rows
    return out


def dataset_cursors(root: Path, venue: str, pairs: Iterable[str]) -> dict[str, int]:
    """Highest numeric trade id already recorded per pair (so a restart backfills what it missed)."""
    rows = _recorded(root, venue, pairs, "SELECT max(TRY_CAST(trade_id AS BIGINT)) FROM "
                                         "read_parquet(?, hive_partitioning=false)")
    return {pair: int(r[0][0]) for pair, r in rows.items()}


def dataset_time_cursors(root: Path, venue: str, pairs: Iterable[str]) -> dict[str, tuple[int, list[str]]]:
    """Newest recorded trade's ms per pair and the trade ids recorded in that ms (Zonda pages by time)."""
    rows = _recorded(root, venue, pairs, """WITH t AS (SELECT trade_id, epoch_ns(ts_event) // 1000000 AS ms FROM
        read_parquet(?, hive_partitioning=false)) SELECT ms, list(trade_id) FROM t WHERE ms = (SELECT max(ms) FROM t)
        GROUP BY ms""")
    return {pair: (int(r[0][0]), list(r[0][1])) for pair, r in rows.items()}


def dataset_candles(root: Path, venue: str, pairs: Iterable[str], per_resolution: int = 4) -> dict[str, list[Candle]]:
    """The latest recorded version of each pair's newest candles per resolution (so a restart writes a version
    only when it changed, and resumes polling from them)."""
    rows = _recorded(root, venue, pairs, f"""SELECT resolution, epoch_ns(ts_open), open, high, low, close, volume
        FROM (SELECT *, row_number() OVER (PARTITION BY resolution, ts_open ORDER BY seq DESC) AS version,
                     dense_rank() OVER (PARTITION BY resolution ORDER BY ts_open DESC) AS age
              FROM read_parquet(?, hive_partitioning=false))
        WHERE version = 1 AND age <= {int(per_resolution)}""", table="candles")
    return {pair: [Candle(res, ts, *(None if x is None else str(x) for x in nums)) for res, ts, *nums in r]
            for pair, r in rows.items()}


class Daemon:
    """One recorder run over a config."""

    def __init__(self, cfg: Config, *, writer: str | None = None, snapshot_interval: float = 3600.0,
                 on_ready: Callable[["Daemon"], None] | None = None,
                 build: Callable[..., list] = feeds_mod.build, allow_unlisted: bool = False,
                 announce: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.build = build
        self.writer = writer or cfg.writer
        self.snapshot_interval = snapshot_interval
        self.on_ready = on_ready
        self.allow_unlisted = allow_unlisted
        self.announce = announce  # also told the one-off lines an operator must see (e.g. "compiling...")
        self.metrics = Metrics()
        self.health_state = Health(self.metrics, cfg.health_grace)
        self.exposition = Exposition(self.metrics)
        self.window = Window(self.metrics)
        self.redact = Redactor(secrets_of(cfg))
        self.stop_event = asyncio.Event()
        self.port = 0
        self.store: Store | None = None
        self.sink: Sink | None = None
        self.kernels_ready = not any(v.name in L3_VENUES for v in cfg.venues)
        self.disk: dict = {}
        self._feeds: list = []
        self._unlisted: dict[str, list[str]] = {}
        self._pair_checks: dict = {}  # venue -> startup.PairCheck with the response to keep in raw
        self._run_session = 0
        self._stop_at = 0.0
        self.stall_after = STALL_AFTER  # seconds without store progress before /health says 503
        self._lease_info: Path | None = None
        self.stop_early = False  # set by a signal that arrives before the event loop handles signals
        self.health_state.component("kernels", lambda: Check(
            self.kernels_ready, "loaded" if self.kernels_ready else "compiling or loading the L3 kernels"))
        self.health_state.component("store", self._store_check)

    def new_store(self) -> Store:
        """The store this run writes to (not opened)."""
        return Store(self.cfg.root, self.writer, fsync_interval=self.cfg.fsync_interval,
                     max_pending_bytes=self.cfg.max_pending_bytes, seq_namespace=self.cfg.seq_namespace)

    def stop(self) -> None:
        """Ask the run to end (signal handlers call this)."""
        if not self.stop_event.is_set():
            self._stop_at = time.monotonic()
        self.stop_event.set()

    def _left(self, until: float) -> float:
        """Seconds left until `until` seconds after the stop was asked for."""
        return max(0.0, self._stop_at + until - time.monotonic())

    def store_health(self) -> dict:
        """The store's part of /health (and of /metrics): see recorder.store.health."""
        return store_health(self.store.stats if self.store is not None else {}, stall_after=self.stall_after)

    def _store_check(self) -> Check:
        """The store component of /health: failing on a store error, or while the store is stalled (disk full,
        data waiting for its fsync, backlog full: store_health), with its stats, fsync age and backlog."""
        if self.store is None:
            return Check(False, "not open yet")
        stats = self.store.stats
        sh = store_health(stats, stall_after=self.stall_after)
        data = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, type(None)))}
        data.update({k: v for k, v in sh.items() if k != "ok"})
        data["pending_rows"] = self.sink.pending if self.sink else 0
        err = stats.get("last_error")
        return Check(not err and sh["ok"], err or ("" if sh["ok"] else sh["state"]), data)

    def health(self) -> dict:
        """/health body (recorder/health.py): 503 when a feed is not live past the grace, or a component fails."""
        return self.health_state.report()

    def page_data(self) -> dict:
        """What the status page shows (recorder/page.py)."""
        h = self.health()
        feeds = []
        for name, f in h["feeds"].items():
            venue, feed = split_feed(name)
            lag = self.metrics.gauges.get(("lag_seconds", name))
            if "poll_lag_seconds" in f and f["poll_lag_seconds"]:
                lag = max(f["poll_lag_seconds"].values())
            feeds.append({"name": name, "venue": venue, "feed": feed, "state": f["state"], "reason": f["reason"],
                          "msg_rate": self.window.rate("messages", name), "age": f["last_message_age_seconds"],
                          "lag": lag, **{f"{k}_1h": self.window.last_hour(k, name)
                                         for k in ("reconnects", "gaps", "rejects")}})
        rows: dict[str, int] = {}
        for (n, _, table), v in self.metrics.counters.items():
            if n == "rows":
                rows[table] = rows.get(table, 0) + v
        store = h["components"].get("store", {})
        shown = {k: store[k] for k in ("ok", "detail", "pending_rows", "pending_bytes", "sealed_segments",
                                       "rows_appended", "segments_converted", "files_written") if k in store}
        shown.update({k: v for k, v in store.items() if k not in shown and k.startswith(("fsync", "backlog"))})
        return {"ok": h["ok"], "ready": h["ready"], "faults": h["faults"],
                "components_failing": h["components_failing"], "version": VERSION, "pid": os.getpid(),
                "root": str(self.cfg.root), "uptime_s": time.time() - self.metrics.started, "feeds": feeds,
                "store": shown, "rows": dict(sorted(rows.items())), "disk": self.disk}

    def _daemon_event(self, kind: str, detail: str) -> None:
        for v in self.cfg.venues:
            Tap(self.sink, v.name, "daemon").event(self._run_session, "daemon", kind, detail, log=False)

    def _track(self, feed) -> None:
        """Health and zeroed metrics series for a feed, with its threshold (per venue and channel)."""
        v = feed.ctx.cfg
        interval = getattr(v, feed.interval_key, None) if isinstance(feed, Poller) else None
        if interval is not None:
            stale = max(3 * interval, interval + 10.0)
        else:
            stale = v.heartbeat or 60.0
            if feed.name.endswith("trades"):
                stale *= 5  # a quiet market has no trades for a while; the book stream shows the connection
        self.health_state.add_feed(FeedHealth(feed.name, tuple(v.pairs), stale, polls=interval is not None,
                                              unlisted=tuple(self._unlisted.get(v.name, ()))))

    async def _supervise(self, feed) -> None:
        cfg = self.cfg
        backoff = Backoff(cfg.backoff_base, cfg.backoff_cap)
        tap = feed.ctx.tap(feed.name)
        while True:
            def healthy() -> None:
                backoff.reset()
                self.metrics.set("up", feed.name, 1)
            try:
                await feed.run(healthy)
                err = "returned"
            except asyncio.CancelledError:
                self.metrics.set("up", feed.name, 0)
                raise
            except Exception as e:  # every failure is retried: the supervisor never gives up
                err = describe(e)
            self.metrics.set("up", feed.name, 0)
            delay = backoff.next()
            tap.event(self._run_session, "supervisor", "error",
                      f"{feed.name} failed: {err}; restarting in {delay:.2f}s (attempt {backoff.attempt})")
            await asyncio.sleep(delay)
            self.metrics.inc("reconnects", feed.name)

    async def _watch_store(self) -> None:
        """Every second: each feed's `stalled` gauge from the store's health, and one log line per change."""
        state = "ok"
        while True:
            h = self.store_health()
            for f in self._feeds:
                self.metrics.set("stalled", f.name, float(not h["ok"]))
            if re.sub(r"[\d.]+s", "", h["state"]) != re.sub(r"[\d.]+s", "", state):  # not every second's age
                log.log(logging.INFO if h["ok"] else logging.ERROR, "store " + ("recovered" if h["ok"] else
                        "stalled"), extra={"fields": {"state": h["state"], "backlog_bytes": h["backlog_bytes"]}})
                state = h["state"]
            await asyncio.sleep(1.0)

    async def _warm(self) -> None:
        """Compile the L3 feed's kernels into numba's cache in a child process (compile_kernels), then load
        them here (~1 s from the cache); /health says not ready meanwhile.

        The load runs in a daemon thread, not the loop's executor: a stop during a first compile must not
        wait for it (the executor is joined at exit; a daemon thread is not), and the stop skips to shutdown.
        """
        global _loaded
        if _loaded:
            self.kernels_ready = True
            return
        await asyncio.to_thread(compile_kernels, self.stop_event.is_set, self._say)
        if self.stop_event.is_set():
            return
        done = in_daemon_thread(l3.warm, name="numba-warm")
        stopping = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait([done, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not done.done():
            done.cancel()  # stopping: the thread's result is not wanted
            return
        done.result()
        self.kernels_ready = _loaded = True

    def _say(self, line: str) -> None:
        log.info(line)
        if self.announce is not None:
            self.announce(line)

    async def _check_pairs(self) -> None:
        """Configured pairs against each venue's list: unknown ones fail the start (or, allowed, fail loudly)."""
        async with aiohttp.ClientSession() as http:
            results = await asyncio.gather(*(unlisted_pairs(v, http) for v in self.cfg.venues))
        for v, check in zip(self.cfg.venues, results):
            missing = check.missing
            if check.body is not None:
                self._pair_checks[v.name] = check
            if check.why and pairs_request(v) is not None:
                log.warning("pairs not checked against the venue's list",
                            extra={"fields": {"venue": v.name, "reason": check.why}})
            if not missing:
                continue
            if not self.allow_unlisted:
                raise StartupError(f"venues.{v.name}.pairs: {', '.join(missing)} not listed by {v.name} "
                                   f"(its list of pairs says so); fix the config, or pass --allow-unlisted to "
                                   f"record the others and report these as failing")
            self._unlisted[v.name] = missing
            log.error("recording pairs the venue does not list (--allow-unlisted): their feeds report failing",
                      extra={"fields": {"venue": v.name, "pairs": ",".join(missing)}})

    async def _chores(self) -> None:
        """Page samples every 10 s, disk usage of the root every 10 s for the first minute then every 60 s (a walk
        of the root's files), sd_notify watchdog pings."""
        loop = asyncio.get_running_loop()
        next_disk = 0.0
        ping = self.notifier.watchdog_interval
        step = min(10.0, ping) if ping else 10.0
        while True:
            if loop.time() >= next_disk:
                self.disk = await asyncio.to_thread(disk_usage, self.cfg.root)
                next_disk = loop.time() + (10.0 if time.time() - self.metrics.started < 60 else 60.0)
            self.window.sample()
            if ping:
                self.notifier.send(WATCHDOG="1")
            await asyncio.sleep(step)

    def _write_lease_info(self) -> None:
        """Who holds the writer lease, for `recorder status`: pid, start, and where /health is served."""
        info = {"pid": os.getpid(), "writer": self.writer, "started": self.metrics.started, "version": VERSION,
                "host": self.cfg.metrics_host, "port": self.port}
        self._lease_info = lease_info_path(self.cfg.root, self.writer)
        tmp = self._lease_info.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self._lease_info)

    async def run(self) -> int:
        """Record until stopped; returns the process exit code (StartupError: nothing was written to the root)."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self.notifier = Notifier()
        check_root(cfg.root)
        check_lease(cfg.root, self.writer)
        try:
            self.new_store().check_space()  # a full disk: one line, before anything starts
        except DiskFull as e:
            raise StartupError(str(e)) from None
        sock = bind(cfg.metrics_host, cfg.metrics_port)
        server = StatusServer(self.exposition, self.health, self.page_data, sock)
        self.port = server.port
        try:
            await self._check_pairs()
        except BaseException:
            sock.close()
            raise
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if self.stop_early:
            self.stop()
        log.info("starting", extra={"fields": {"root": str(cfg.root), "writer": self.writer, "version": VERSION,
                                               "venues": ",".join(v.name for v in cfg.venues),
                                               "pool": pa.default_memory_pool().backend_name}})
        sink = shipper = None
        try:
            self.port = await server.start()
            log.info("metrics listening", extra={"fields": {"url": f"http://{cfg.metrics_host}:{self.port}/"}})
            if cfg.allow_remote and not is_loopback(cfg.metrics_host):
                log.warning("metrics, health and the status page are served to other machines, without "
                            "authentication (allow_remote)", extra={"fields": {"host": cfg.metrics_host,
                                                                               "port": self.port}})
            store = self.new_store()
            try:
                self.store = await asyncio.to_thread(store.open)
            except StoreError as e:  # e.g. a second recorder that took the lease since check_lease
                raise StartupError(str(e)) from None
            if store.recovered["segments"]:
                log.info("recovered after an unclean stop", extra={"fields": dict(store.recovered)})
            self._write_lease_info()
            creds = cfg.s3_credentials
            shipper = None if cfg.remote is None else remote.Shipper(
                cfg.root, cfg.remote, self.writer, endpoint_url=cfg.s3_endpoint_url, region=cfg.s3_region,
                key=creds and creds.key.reveal(), secret=creds and creds.secret.reveal()).start()
            self.sink = sink = Sink(self.store, self.metrics, max_rows=cfg.queue_max, redact=self.redact)
            self.metrics.gauge_fn("queue_rows", lambda: sink.pending)
            self.metrics.gauge_fn("store_pending_bytes", lambda: self.store.stats.get("pending_bytes", 0) or 0)
            self.metrics.gauge_fn("arrow_allocated_bytes", pa.total_allocated_bytes)
            self.metrics.gauge_fn("kernels_ready", lambda: int(self.kernels_ready))
            self.metrics.gauge_fn("store_stalled", lambda: float(not self.store_health()["ok"]))
            for key in ("disk_full", "fsync_age_seconds", "unsynced_seconds", "blocked_seconds", "backlog_ratio"):
                self.metrics.gauge_fn(f"store_{key}", lambda k=key: float(self.store_health()[k] or 0))
            for v in cfg.venues:
                self.metrics.register_tables(v.name)
            self._run_session = sink.session = sink.next_seq()
            rec = store.recovered
            self._daemon_event("start", f"pid {os.getpid()} writer {self.writer} venues "
                                        f"{','.join(v.name for v in cfg.venues)} metrics port {self.port}"
                               + (f"; recovered {rec['segments']} log segments, {rec['rows']} rows"
                                  if rec["segments"] else ""))
            for v in cfg.venues:
                tap = Tap(sink, v.name, "daemon")
                check = self._pair_checks.get(v.name)
                if check is not None:  # the start-up pairs request, received before the store could take it
                    ok = check.status == 200 and not check.why
                    tap.raw(self._run_session, "rest:pairs", None, check.ts_recv, check.body,
                            status="ok" if ok else "rejected", reason=None if ok else check.why[:500],
                            request=f"GET {check.url}")
                for p in self._unlisted.get(v.name, ()):
                    tap.event(self._run_session, "daemon", "error", f"pair {p} is not listed by {v.name} "
                                                                     f"(--allow-unlisted)", p)
            self.notifier.send(STATUS="starting: loading kernels")
            limiter = RateLimiter()
            async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as tg:
                writer = tg.create_task(sink.run(), name="sink")
                chores = tg.create_task(self._chores(), name="chores")
                watch = tg.create_task(self._watch_store(), name="store-health")
                if not self.kernels_ready:
                    await self._warm()
                for v in cfg.venues if not self.stop_event.is_set() else ():  # stopped while warming: no feeds
                    cursors, time_cursors, candles = {}, {}, {}  # where the pollers resume (sockets need none)
                    if "candles" in v.channels:
                        candles = await asyncio.to_thread(dataset_candles, cfg.root, v.name, v.pairs)
                    if "trades" in v.channels and v.api == "current" and v.name == "bitbay":
                        time_cursors = await asyncio.to_thread(dataset_time_cursors, cfg.root, v.name, v.pairs)
                    elif "trades" in v.channels and v.name != "bitopro" and v.api == "legacy":
                        cursors = await asyncio.to_thread(dataset_cursors, cfg.root, v.name, v.pairs)
                    ctx = VenueContext(v, http, sink, limiter, backoff_base=cfg.backoff_base,
                                       backoff_cap=cfg.backoff_cap, cursors=cursors, time_cursors=time_cursors,
                                       candles=candles)
                    self._feeds += self.build(ctx, snapshot_interval=self.snapshot_interval)
                for f in self._feeds:
                    self._track(f)
                self.health_state.restart()
                tasks = [tg.create_task(self._supervise(f), name=f.name) for f in self._feeds]
                self.notifier.send(READY="1", STATUS=f"recording {len(tasks)} feeds")
                if self.on_ready is not None:
                    self.on_ready(self)
                await self.stop_event.wait()
                log.info("stopping", extra={"fields": {"feeds": len(tasks)}})
                self.notifier.send(STOPPING="1", STATUS="stopping")
                for t in tasks:
                    t.cancel()
                if tasks:
                    await asyncio.wait(tasks, timeout=self._left(FEEDS_BUDGET))
                self.health_state.stop_all()
                self._daemon_event("stop", "graceful stop")
                await sink.close(self._left(SINK_BUDGET))
                writer.cancel()
                chores.cancel()
                watch.cancel()
        finally:
            if not self.stop_event.is_set():
                self.stop()  # an error ends the run: the same bounded stop
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await server.stop()
            if sink is not None and sink.pending:
                await sink.close(self._left(SINK_BUDGET))
            if self.store is not None:
                if self._lease_info is not None:  # before the lease goes: the next holder writes its own
                    self._lease_info.unlink(missing_ok=True)
                left = self._left(STOP_BUDGET)
                closing = in_daemon_thread(self.store.close, COMPACT_WAIT, max(0.0, left - 0.5), name="store-close")
                try:
                    await asyncio.wait_for(closing, left)
                except TimeoutError:
                    log.error("store close did not finish in time: its log is recovered at the next start")
            if shipper is not None:  # the bucket gets every final file, the open hour's too
                await asyncio.to_thread(shipper.stop)
            log.info("stopped", extra={"fields": {"rows": sink.appended if sink else 0, "stop_seconds":
                                                  round(time.monotonic() - self._stop_at, 3)}})
        return 0


def lease_info_path(root: Path, writer: str) -> Path:
    """`_state/writer-<id>.json`: the running recorder's pid and address, beside its lease file."""
    return Path(root) / "_state" / f"writer-{writer}.json"


def disk_usage(root: Path) -> dict:
    """Bytes used by the files under the root, and free/total on its file system."""
    used = 0
    for dirpath, _, names in os.walk(root):
        for f in names:
            try:
                used += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass  # renamed or removed meanwhile (conversion, compaction)
    du = shutil.disk_usage(root)
    return {"used_bytes": used, "free_bytes": du.free, "total_bytes": du.total}


def main(cfg: Config, early: list | None = None, **kw) -> int:
    """`recorder run`: run(), with a start-up failure as one line on stderr and exit code 2."""
    try:
        return run(cfg, early, **kw)
    except StartupError as e:
        fail(str(e), cfg.log_format)


def run(cfg: Config, early: list | None = None, **kw) -> int:
    """Blocking entry point for the CLI; a SIGTERM/SIGINT from here on (or in `early`) stops it gracefully."""
    setup_logging(cfg.log_format, cfg.log_level, Redactor(secrets_of(cfg)))
    daemon = Daemon(cfg, **kw)
    daemon.stop_early = bool(early)

    def on_signal(*_) -> None:
        daemon.stop_early = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    tune_gc()
    return asyncio.run(daemon.run())


#: What compiles the L3 feed's kernels into numba's cache (or finds them there).
COMPILE = [sys.executable, "-c", "from recorder.feeds import l3; l3.warm()"]


#: Seconds after which a kernel load that is still running is a compile (a cached load takes ~1-2 s, a compile
#: >= 25 s on 2 cores): the start then says so.
COMPILE_NOTICE = 5.0


def kernel_cache_dir() -> str:
    """Where numba keeps the compiled kernels: $NUMBA_CACHE_DIR, else beside the installed sources
    (falling back to ~/.cache/numba when those are read-only). See docs/recorder.md, "Kernel cache"."""
    return os.environ.get("NUMBA_CACHE_DIR") or str(Path(l3.__file__).parent / "__pycache__")


def compile_kernels(stopping: Callable[[], bool], say: Callable[[str], None] = log.info) -> None:
    """Compile the L3 feed's kernels into numba's cache in a child process (~1 s when they are cached already).

    Compiled in the recorder itself they would leave ~110 MB of LLVM's memory in it for its whole life
    (RSS 317 MB after a cold l3.warm(), 205 MB after one from the cache); the daemon then loads them from the
    cache. A child still running after COMPILE_NOTICE seconds is compiling: `say` is told so, once.
    Returns as soon as `stopping()` (the child is killed). A failed child is only logged: the
    daemon's own load then compiles, and reports the real error if that fails too.
    """
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(COMPILE, env=child_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        t0, told = time.monotonic(), False
        try:
            while proc.poll() is None:
                if stopping():
                    return
                if not told and time.monotonic() - t0 > COMPILE_NOTICE:
                    told = True
                    say(f"compiling the L3 kernels (first start after an install: ~25 s on 2 cores; "
                        f"nothing is recorded meanwhile; cache: {kernel_cache_dir()})…")
                time.sleep(0.05)
            if told:
                say(f"kernels compiled in {time.monotonic() - t0:.1f}s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            out.seek(0)
            log.warning("compiling the kernels in a child process failed; compiling them here",
                        extra={"fields": {"exit": proc.returncode,
                                          "output": out.read()[-500:].decode("utf-8", "replace")}})


def tune_gc() -> None:
    """Fewer, cheaper cyclic collections for a process that allocates millions of short-lived objects.

    Everything imported so far is frozen out of the collector's view, and the young generation is
    collected every 50,000 allocations instead of 700: the hot path creates no reference cycles,
    and rows waiting up to `linger` in the sink would otherwise be rescanned on every young pass.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
