"""Daemon skeleton with fake feeds: supervision and capped backoff, /metrics and /health, stop, logs."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import time

import aiohttp
import duckdb

from recorder import config
from recorder.daemon import Daemon, LogFormatter, Redactor, dataset_candles, setup_logging
from recorder.feeds.columns import candle_row
from recorder.feeds.dedup import CandleVersions
from recorder.metrics import Exposition, Metrics
from recorder.rows import Candle
from recorder.store import Store
from schemas import TABLES


def cfg_for(tmp_path, **rec):
    return config.parse({"recorder": {"root": str(tmp_path / "data"), "backoff_base": 0.05, "backoff_cap": 0.2,
                                      "fsync_interval": 0.2, **rec},
                         "venues": {"btcalpha": {"pairs": ["BTC_USD"]}}}, env={})


class FlakyFeed:
    """Fails `fails` times, then reports healthy, writes a raw row per tick and runs until cancelled."""

    def __init__(self, ctx, fails: int) -> None:
        self.ctx, self.fails, self.name, self.runs = ctx, fails, "btcalpha:fake", []

    async def run(self, healthy) -> None:
        self.runs.append(time.monotonic())
        if len(self.runs) <= self.fails:
            raise ConnectionError(f"boom {len(self.runs)}")
        healthy()
        tap = self.ctx.tap(self.name)
        session = tap.new_session()
        while True:
            tap.raw(session, "fake", "BTC_USD", time.time_ns(), b"tick")
            await asyncio.sleep(0.05)


def run_daemon(cfg, seconds, build, probe=None, wait_ready=True):
    """Run a daemon for `seconds` from the start of its feeds (from its start: wait_ready=False), then stop it."""
    async def main():
        ready = asyncio.Event()
        d = Daemon(cfg, build=build, on_ready=lambda _d: ready.set())
        task = asyncio.create_task(d.run())
        if wait_ready:
            await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
        await asyncio.sleep(seconds)
        extra = await probe(d) if probe else None
        t0 = time.monotonic()
        d.stop()
        code = await task
        return d, code, time.monotonic() - t0, extra
    return asyncio.run(main())


def q(root, sql):
    return duckdb.sql(sql.replace("$R", str(root))).fetchall()


def test_failing_feed_is_restarted_with_capped_backoff_and_never_given_up(tmp_path):
    feeds = []

    def build(ctx, **_):
        feeds.append(FlakyFeed(ctx, fails=8))
        return feeds

    cfg = cfg_for(tmp_path)
    d, code, stop_s, _ = run_daemon(cfg, 3.0, build)
    assert code == 0 and stop_s < 10
    runs = feeds[0].runs
    assert len(runs) >= 9  # eight failures, then a healthy run
    gaps = [b - a for a, b in zip(runs, runs[1:])]
    assert max(gaps) < 0.2 + 0.5  # never more than the 0.2 s cap (plus scheduling slack on a loaded machine)
    assert d.metrics.value("errors", "btcalpha:fake") == 8
    assert d.metrics.value("reconnects", "btcalpha:fake") == 8
    root = cfg.root
    errors = q(root, "SELECT detail FROM read_parquet('$R/sessions/**/*.parquet') WHERE kind='error' ORDER BY seq")
    assert len(errors) == 8 and "boom 1" in errors[0][0] and "restarting in" in errors[0][0]
    kinds = [k for (k,) in q(root, "SELECT kind FROM read_parquet('$R/sessions/**/*.parquet') ORDER BY seq")]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    n_raw = q(root, "SELECT count(*) FROM read_parquet('$R/raw/**/*.parquet')")[0][0]
    assert n_raw > 10


def test_metrics_and_health_endpoints(tmp_path):
    def build(ctx, **_):
        return [FlakyFeed(ctx, fails=0)]

    async def probe(d):
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{d.port}/metrics") as r:
                metrics = (r.status, r.headers["Content-Type"], await r.text())
            async with s.get(f"http://127.0.0.1:{d.port}/health") as r:
                health = (r.status, await r.json())
        return metrics, health

    _, code, _, (metrics, health) = run_daemon(cfg_for(tmp_path), 1.0, build, probe)
    assert code == 0
    status, ctype, text = metrics
    assert status == 200 and ctype.startswith("text/plain")
    assert 'booktape_messages_total{venue="btcalpha",feed="fake"}' in text
    assert 'booktape_rows_total{venue="btcalpha",table="raw"}' in text
    assert 'booktape_up{venue="btcalpha",feed="fake"} 1' in text
    assert "booktape_queue_rows " in text
    assert health[0] == 200 and health[1]["ok"] and health[1]["feeds"]["btcalpha:fake"]["up"]
    assert health[1]["feeds"]["btcalpha:fake"]["state"] == "live"


def test_metrics_render_is_prometheus_text():
    m = Metrics(clock=lambda: 100.0)
    m.inc("rows", "v", 3, table="trades")
    m.seen('v:we"ird', 10)
    m.set("lag_seconds", "v:book", 0.25)
    text = Exposition(m).render()
    assert 'booktape_rows_total{venue="v",table="trades"} 3' in text
    assert 'booktape_messages_total{venue="v",feed="we\\"ird"} 1' in text
    assert "# TYPE booktape_lag_seconds gauge" in text and 'booktape_lag_seconds{venue="v",feed="book"} 0.25' in text


def test_log_lines_are_structured_and_redacted(monkeypatch):
    # `recorder demo` run in-process by an earlier test quiets the "recorder" logger for the process
    monkeypatch.setattr(logging.getLogger("recorder"), "level", logging.NOTSET)
    buf = io.StringIO()
    setup_logging("json", "info", Redactor(["hunter2-secret"]), buf)
    logging.getLogger("recorder.x").warning("failed", extra={"fields": {"detail": "sig hunter2-secret bad", "n": 3}})
    # logging is process-global: threads left by earlier tests may log here too, so find our line
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    (line,) = [x for x in lines if x["msg"] == "failed"]
    assert line["msg"] == "failed" and line["n"] == 3 and line["detail"] == "sig *** bad"
    kv = LogFormatter("kv", Redactor(["abc"])).format(logging.LogRecord("r", 20, "", 0, "x abc", None, None))
    assert "abc" not in kv and "level=info" in kv


def test_a_stop_while_the_kernels_compile_does_not_wait_for_them(tmp_path, monkeypatch):
    """A first start compiles the L3 kernels (~15 s); SIGTERM meanwhile must still stop within seconds."""
    import threading

    from recorder.feeds import l3

    from recorder import daemon as daemon_mod

    release = threading.Event()
    monkeypatch.setattr(l3, "warm", lambda: release.wait(60))  # a compile that outlasts the stop
    monkeypatch.setattr(daemon_mod, "_loaded", False)
    built = []

    def build(ctx, **_):
        built.append(ctx)
        return []

    async def probe(d):  # while the kernels load: served, but not ready
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{d.port}/health") as r:
            return r.status, await r.json()

    try:
        d, code, stop_s, (status, health) = run_daemon(cfg_for(tmp_path), 0.5, build, probe, wait_ready=False)
    finally:
        release.set()
    assert status == 503 and health["ready"] is False and health["components_failing"] == ["kernels"]
    assert code == 0 and stop_s < 5
    assert built == []  # stopped before any feed was started
    kinds = [k for (k,) in q(cfg_for(tmp_path).root, "SELECT kind FROM read_parquet('$R/sessions/**/*.parquet') ORDER BY seq")]
    assert kinds[0] == "start" and kinds[-1] == "stop"


def test_a_failed_compile_is_an_error_not_a_silent_fallback(tmp_path, monkeypatch):
    from recorder.feeds import l3

    def broken() -> None:
        raise RuntimeError("numba cannot compile here")

    monkeypatch.setattr(l3, "warm", broken)
    from recorder import daemon as daemon_mod

    monkeypatch.setattr(daemon_mod, "_loaded", False)
    raised = []
    try:
        run_daemon(cfg_for(tmp_path), 0.5, lambda ctx, **_: [])
    except* RuntimeError as eg:  # raised in the daemon's task group (its tasks run while the kernels load)
        raised = [str(e) for e in eg.exceptions]
    assert raised == ["numba cannot compile here"], "the daemon started without its kernels"


def test_the_kernels_compile_in_a_child_process_that_a_stop_kills(monkeypatch):
    """`recorder run` compiles the L3 kernels in a child (its LLVM memory must not stay in the recorder); a stop
    kills a compile still running, and a failed child is logged, not fatal (the in-process load reports)."""
    import subprocess
    import sys
    import time

    from recorder import daemon as daemon_mod

    daemon_mod.compile_kernels(lambda: False)  # the real one: the cache is warm under `make test`

    marker = f"booktape-compile-{time.monotonic_ns()}"
    monkeypatch.setattr(daemon_mod, "COMPILE", [sys.executable, "-c", f"import time; time.sleep(60)  # {marker}"])
    t0 = time.monotonic()
    calls = []
    daemon_mod.compile_kernels(lambda: calls.append(1) or len(calls) > 3)
    assert time.monotonic() - t0 < 5
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1  # no child left

    monkeypatch.setattr(daemon_mod, "COMPILE", [sys.executable, "-c", "raise SystemExit(3)"])
    daemon_mod.compile_kernels(lambda: False)  # logged, returns


def test_a_remote_metrics_host_is_served_with_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="recorder.daemon")
    cfg = cfg_for(tmp_path, metrics_host="0.0.0.0", allow_remote=True)
    _, code, _, _ = run_daemon(cfg, 0.5, lambda ctx, **_: [FlakyFeed(ctx, fails=0)])
    assert code == 0
    assert any("without authentication" in r.getMessage() for r in caplog.records)


def test_a_restart_writes_no_candle_version_already_recorded(tmp_path):
    """The candles poller's version memory starts from the dataset: the versions recorded before a restart are
    not written again (the venue sends "59999.230" as the dataset holds 59999.23), a changed one is."""
    minute = 60 * 10**9
    t0 = 1_796_195_340 * 10**9 // minute * minute
    recorded = [Candle("1m", t0 + i * minute, "1", "2", "0.5", f"59999.2{i}", "3") for i in range(6)]
    recorded.append(Candle("1m", t0 + 5 * minute, "1", "2", "0.5", "59999.99", "4"))  # a later version of the last
    rows = [candle_row(c, c.ts_open + 1, seq, 1) for seq, c in enumerate(recorded, 1)]
    with Store(tmp_path, "w") as s:
        s.append("candles", "btcalpha", "BTC_USD", dict(zip(TABLES["candles"].schema.names, zip(*rows))))
    known = dataset_candles(tmp_path, "btcalpha", ["BTC_USD", "ETH_BTC"])
    assert set(known) == {"BTC_USD"} and len(known["BTC_USD"]) == 4  # the newest 4 candles, latest versions
    v = CandleVersions(known=known["BTC_USD"])
    assert v.latest_open("1m") == t0 + 5 * minute
    again = [Candle("1m", t0 + 4 * minute, "1.0", "2.00", "0.50", "59999.240", "3.0"),
             Candle("1m", t0 + 5 * minute, "1", "2", "0.5", "59999.99", "4")]
    assert v.changed(again) == []
    moved = Candle("1m", t0 + 5 * minute, "1", "2", "0.5", "60000.01", "5")
    assert v.changed([moved]) == [moved]
