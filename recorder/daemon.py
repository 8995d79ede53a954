"""`recorder run`: supervised feeds -> sink -> durable store, /metrics and /health, graceful stop on signals.

Every task is owned by one TaskGroup. A failing feed is restarted after a capped full-jitter
backoff, forever; a feed that became healthy resets its backoff. SIGTERM/SIGINT stop the feeds,
flush the sink, commit the store and return 0.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
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
from recorder.procs import child_env
from recorder.store import Store
from recorder.transport import Backoff, RateLimiter
from schemas import TABLES, files

log = logging.getLogger("recorder.daemon")
#: Venues whose book stream needs the L3 feed's compiled kernels.
L3_VENUES = ("btcalpha", "bitexbit")
STOP_BUDGET = 8.0  # seconds allowed for feeds to wind down before the final flush
#: seconds a stop waits for compaction; a longer merge is stopped and redone at the next start (Store.close).
COMPACT_WAIT = 3.0


class Redactor:
    """Replaces every known secret value with *** (applied to logs and sessions details)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, "***")
        return text


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


def secrets_of(cfg: Config) -> list[str]:
    """Every credential value in the config (to redact)."""
    out = []
    for v in cfg.venues:
        if v.credentials is not None:
            out += [v.credentials.key.reveal(), v.credentials.secret.reveal()]
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

    def __init__(self, cfg: Config, *, writer: str = "recorder", snapshot_interval: float = 3600.0,
                 on_ready: Callable[["Daemon"], None] | None = None,
                 build: Callable[..., list] = feeds_mod.build) -> None:
        self.cfg = cfg
        self.build = build
        self.writer = writer
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
        self.stop_early = False  # set by a signal that arrives before the event loop handles signals

    def stop(self) -> None:
        """Ask the run to end (signal handlers call this)."""
        self.stop_event.set()

    def health(self) -> dict:
        """/health body: ok when the store works and every feed is up or retrying."""
        stats = self.store.stats if self.store is not None else {}
        feeds = {f.name: {"up": bool(self.metrics.gauges.get(("up", f.name), 0)),
                          "last_message_age_seconds": round(time.time() - self.metrics.last_seen[f.name], 3)
                          if f.name in self.metrics.last_seen else None} for f in self._feeds}
        ok = self.store is not None and not (stats or {}).get("last_error")
        return {"ok": ok, "feeds": feeds, "pending_rows": self.sink.pending if self.sink else 0,
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

    async def _warm(self) -> None:
        """Load the L3 feed's compiled kernels (compiled once per install into numba's cache, ~15 s; then ~1 s;
        `recorder run` has compiled them in a child process first: compile_kernels).

        In a daemon thread, not the loop's executor: a stop during a first compile must not wait for it
        (the executor is joined at exit; a daemon thread is not), and the stop skips straight to shutdown.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(outcome: BaseException | None) -> None:
            if not done.done():
                done.set_exception(outcome) if outcome is not None else done.set_result(None)

        def work() -> None:
            try:
                l3.warm()
                outcome: BaseException | None = None
            except BaseException as e:  # handed to the awaiting task
                outcome = e
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:
                pass  # the loop is closed: the daemon stopped meanwhile and nobody waits

        threading.Thread(target=work, name="numba-warm", daemon=True).start()
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
        self.store = await asyncio.to_thread(
            Store(cfg.root, self.writer, fsync_interval=cfg.fsync_interval,
                  max_pending_bytes=cfg.max_pending_bytes).open)
        self.sink = sink = Sink(self.store, self.metrics, max_rows=cfg.queue_max, redact=self.redact)
        self.metrics.gauge_fn("queue_rows", lambda: sink.pending)
        self.metrics.gauge_fn("store_pending_bytes", lambda: float(self.store.stats.get("pending_bytes", 0) or 0))
        self.metrics.gauge_fn("arrow_allocated_bytes", pa.total_allocated_bytes)
        self._run_session = sink.next_seq()
        server = MetricsServer(self.metrics, self.health, cfg.metrics_host, cfg.metrics_port)
        self.port = await server.start()
        log.info("metrics listening", extra={"fields": {"url": f"http://{cfg.metrics_host}:{self.port}/metrics"}})
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
                    tasks = [tg.create_task(self._supervise(f), name=f.name) for f in self._feeds]
                    if self.on_ready is not None:
                        self.on_ready(self)
                    await self.stop_event.wait()
                    log.info("stopping", extra={"fields": {"feeds": len(tasks)}})
                    for t in tasks:
                        t.cancel()
                    if tasks:
                        await asyncio.wait(tasks, timeout=STOP_BUDGET)
                    self._daemon_event("stop", "graceful stop")
                    await sink.flush()
                    writer.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await server.stop()
            if sink.pending:
                await sink.flush()
            await asyncio.to_thread(self.store.close, COMPACT_WAIT)
            log.info("stopped", extra={"fields": {"rows": sink.appended}})
        return 0


def run(cfg: Config, early: list | None = None, **kw) -> int:
    """Blocking entry point for the CLI; a SIGTERM/SIGINT from here on (or in `early`) stops it gracefully."""
    setup_logging(cfg.log_format, cfg.log_level, Redactor(secrets_of(cfg)))
    daemon = Daemon(cfg, **kw)
    daemon.stop_early = bool(early)

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
