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
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import aiohttp
import pyarrow as pa

from recorder import feeds as feeds_mod
from recorder.config import Config
from recorder.feeds import l3
from recorder.feeds.base import VenueContext, describe
from recorder.feeds.sink import Sink, Tap
from recorder.metrics import Metrics, MetricsServer
from recorder.offload import in_daemon_thread
from recorder.redact import Redactor
from recorder.procs import child_env
from recorder.store import Store
from recorder.store.health import STALL_AFTER, store_health
from recorder.store import remote
from recorder.transport import Backoff, RateLimiter
from schemas import TABLES, files

log = logging.getLogger("recorder.daemon")
#: Venues whose book stream needs the L3 feed's compiled kernels.
L3_VENUES = ("btcalpha", "bitexbit")
#: A stop (SIGTERM) is over within STOP_BUDGET seconds whatever the store's state: feeds get FEEDS_BUDGET to wind
#: down, the sink's last flush runs until SINK_BUDGET (then what is left becomes gap rows), the store's close
#: gets the rest (a stalled store leaves its log for the next start).
STOP_BUDGET, FEEDS_BUDGET, SINK_BUDGET = 9.0, 2.0, 5.5
#: seconds a stop waits for compaction; a longer merge is stopped and redone at the next start (Store.close).
COMPACT_WAIT = 3.0


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


def dataset_cursors(root: Path, venue: str, pairs: Iterable[str]) -> dict[str, int]:
    """Highest numeric trade id already recorded per pair (so a restart backfills what it missed)."""
    import duckdb

    out: dict[str, int] = {}
    for pair in pairs:
        d = root / "trades" / f"exchange={venue}" / f"pair={pair}"
        paths = [str(f) for date in sorted(d.glob("date=*")) for f in files.data_files(date, TABLES["trades"])]
        if not paths:
            continue
        try:
            con = duckdb.connect()
            row = con.execute("SELECT max(TRY_CAST(trade_id AS BIGINT)) FROM read_parquet(?, hive_partitioning=false)",
                              [paths]).fetchone()
            con.close()
        except duckdb.Error as e:
            log.warning("cannot read trade cursor", extra={"fields": {"venue": venue, "pair": pair, "error": str(e)}})
            continue
        if row and row[0] is not None:
            out[pair] = int(row[0])
    return out


class Daemon:
    """One recorder run over a config."""

    def __init__(self, cfg: Config, *, writer: str | None = None, snapshot_interval: float = 3600.0,
                 on_ready: Callable[["Daemon"], None] | None = None,
                 build: Callable[..., list] = feeds_mod.build) -> None:
        self.cfg = cfg
        self.build = build
        self.writer = writer or cfg.writer
        self.snapshot_interval = snapshot_interval
        self.on_ready = on_ready
        self.metrics = Metrics()
        self.redact = Redactor(secrets_of(cfg))
        self.stop_event = asyncio.Event()
        self.port = 0
        self.store: Store | None = None
        self.sink: Sink | None = None
        self._feeds: list = []
        self._run_session = 0
        self._stop_at = 0.0
        self.stall_after = STALL_AFTER  # seconds without store progress before /health says 503
        self.stop_early = False  # set by a signal that arrives before the event loop handles signals

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

    def health(self) -> dict:
        """/health body: ok when the store keeps up and every feed is up or retrying; while the store is
        stalled every feed is too (nothing it receives can be kept)."""
        stats = self.store.stats if self.store is not None else {}
        sh = self.store_health()
        feeds = {f.name: {"up": bool(self.metrics.gauges.get(("up", f.name), 0)),
                          "last_message_age_seconds": round(time.time() - self.metrics.last_seen[f.name], 3)
                          if f.name in self.metrics.last_seen else None,
                          **({} if sh["ok"] else {"state": sh["state"]})} for f in self._feeds}
        ok = self.store is not None and not (stats or {}).get("last_error") and sh["ok"]
        return {"ok": ok, "feeds": feeds, "pending_rows": self.sink.pending if self.sink else 0,
                "store_health": sh,
                "store": {k: v for k, v in (stats or {}).items() if isinstance(v, (int, float, str, type(None)))}}

    def _daemon_event(self, kind: str, detail: str) -> None:
        for v in self.cfg.venues:
            Tap(self.sink, v.name, "daemon").event(self._run_session, "daemon", kind, detail)

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
        """Load the L3 feed's compiled kernels (compiled once per install into numba's cache, ~15 s; then ~1 s;
        `recorder run` has compiled them in a child process first: compile_kernels).

        In a daemon thread, not the loop's executor: a stop during a first compile must not wait for it
        (the executor is joined at exit; a daemon thread is not), and the stop skips straight to shutdown.
        """
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

    async def run(self) -> int:
        """Record until stopped; returns the process exit code."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if self.stop_early:
            self.stop()
        log.info("arrow memory pool", extra={"fields": {"pool": pa.default_memory_pool().backend_name}})
        self.store = await asyncio.to_thread(self.new_store().open)
        creds = cfg.s3_credentials
        shipper = None if cfg.remote is None else remote.Shipper(
            cfg.root, cfg.remote, self.writer, endpoint_url=cfg.s3_endpoint_url, region=cfg.s3_region,
            key=creds and creds.key.reveal(), secret=creds and creds.secret.reveal()).start()
        self.sink = sink = Sink(self.store, self.metrics, max_rows=cfg.queue_max, redact=self.redact)
        self.metrics.gauge_fn("queue_rows", lambda: sink.pending)
        self.metrics.gauge_fn("store_pending_bytes", lambda: float(self.store.stats.get("pending_bytes", 0) or 0))
        self.metrics.gauge_fn("arrow_allocated_bytes", pa.total_allocated_bytes)
        self.metrics.gauge_fn("store_stalled", lambda: float(not self.store_health()["ok"]))
        for key in ("disk_full", "fsync_age_seconds", "unsynced_seconds", "blocked_seconds", "backlog_ratio"):
            self.metrics.gauge_fn(f"store_{key}", lambda k=key: float(self.store_health()[k] or 0))
        self._run_session = sink.session = sink.next_seq()
        server = MetricsServer(self.metrics, self.health, cfg.metrics_host, cfg.metrics_port)
        self.port = await server.start()
        log.info("metrics listening", extra={"fields": {"url": f"http://{cfg.metrics_host}:{self.port}/metrics"}})
        if cfg.allow_remote and not is_loopback(cfg.metrics_host):
            log.warning("metrics and health are served to other machines, without authentication (allow_remote)",
                        extra={"fields": {"host": cfg.metrics_host, "port": self.port}})
        self._daemon_event("start", f"pid {os.getpid()} writer {self.writer} venues "
                                    f"{','.join(v.name for v in cfg.venues)} metrics port {self.port}")
        limiter = RateLimiter()
        if any(v.name in L3_VENUES for v in cfg.venues):
            await self._warm()
        try:
            async with aiohttp.ClientSession() as http:
                for v in cfg.venues if not self.stop_event.is_set() else ():  # stopped while warming: no feeds
                    cursors = await asyncio.to_thread(dataset_cursors, cfg.root, v.name, v.pairs) \
                        if "trades" in v.channels and v.name != "bitopro" else {}
                    ctx = VenueContext(v, http, sink, limiter, backoff_base=cfg.backoff_base,
                                       backoff_cap=cfg.backoff_cap, cursors=cursors)
                    self._feeds += self.build(ctx, snapshot_interval=self.snapshot_interval)
                async with asyncio.TaskGroup() as tg:
                    writer = tg.create_task(sink.run(), name="sink")
                    watch = tg.create_task(self._watch_store(), name="store-health")
                    tasks = [tg.create_task(self._supervise(f), name=f.name) for f in self._feeds]
                    if self.on_ready is not None:
                        self.on_ready(self)
                    await self.stop_event.wait()
                    log.info("stopping", extra={"fields": {"feeds": len(tasks)}})
                    for t in tasks:
                        t.cancel()
                    if tasks:
                        await asyncio.wait(tasks, timeout=self._left(FEEDS_BUDGET))
                    self._daemon_event("stop", "graceful stop")
                    await sink.close(self._left(SINK_BUDGET))
                    writer.cancel()
                    watch.cancel()
        finally:
            if not self.stop_event.is_set():
                self.stop()  # an error ends the run: the same bounded stop
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await server.stop()
            if sink.pending:
                await sink.close(self._left(SINK_BUDGET))
            left = self._left(STOP_BUDGET)
            closing = in_daemon_thread(self.store.close, COMPACT_WAIT, max(0.0, left - 0.5), name="store-close")
            try:
                await asyncio.wait_for(closing, left)
            except TimeoutError:
                log.error("store close did not finish in time: its log is recovered at the next start")
            if shipper is not None:  # the bucket gets every final file, the open hour's too
                await asyncio.to_thread(shipper.stop)
            log.info("stopped", extra={"fields": {"rows": sink.appended, "stop_seconds":
                                                  round(time.monotonic() - self._stop_at, 3)}})
        return 0


def run(cfg: Config, early: list | None = None, **kw) -> int:
    """Blocking entry point for the CLI; a SIGTERM/SIGINT from here on (or in `early`) stops it gracefully."""
    setup_logging(cfg.log_format, cfg.log_level, Redactor(secrets_of(cfg)))
    daemon = Daemon(cfg, **kw)
    daemon.stop_early = bool(early)
    daemon.new_store().check_space()  # a full disk: one line (DiskFull), before anything starts

    def on_signal(*_) -> None:
        daemon.stop_early = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    if any(v.name in L3_VENUES for v in cfg.venues):
        compile_kernels(lambda: daemon.stop_early)
    tune_gc()
    return asyncio.run(daemon.run())


#: What compiles the L3 feed's kernels into numba's cache (or finds them there).
COMPILE = [sys.executable, "-c", "from recorder.feeds import l3; l3.warm()"]


def compile_kernels(stopping: Callable[[], bool]) -> None:
    """Compile the L3 feed's kernels into numba's cache in a child process (~1 s when they are cached already).

    Compiled in the recorder itself they would leave ~110 MB of LLVM's memory in it for its whole life
    (RSS 317 MB after a cold l3.warm(), 205 MB after one from the cache); the daemon then loads them from the
    cache. Returns as soon as `stopping()` (the child is killed). A failed child is only logged: the
    daemon's own load then compiles, and reports the real error if that fails too.
    """
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(COMPILE, env=child_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                if stopping():
                    return
                time.sleep(0.05)
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
