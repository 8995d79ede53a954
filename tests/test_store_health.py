"""Store health: time since the last fsync, the backlog, and 503 once the store makes no progress."""
from __future__ import annotations

import asyncio
import json
import time

import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from tickers import StreamTicker, ticker_config  # noqa: E402

from recorder.store import FREEZE_ENV, Store  # noqa: E402
from recorder.store.health import store_health  # noqa: E402

STATS = {"pending_bytes": 0, "max_pending_bytes": 1000, "last_fsync_ts": 100.0, "disk_full_since": None,
         "unsynced_since": None, "blocked_since": None}


def test_health_is_ok_while_the_store_keeps_up():
    h = store_health(dict(STATS, pending_bytes=250, unsynced_since=109.5), now=110.0)
    assert h["ok"] and h["state"] == "ok"
    assert h["fsync_age_seconds"] == 10.0 and h["unsynced_seconds"] == 0.5 and h["backlog_ratio"] == 0.25


def test_no_fsync_or_a_full_backlog_past_the_threshold_is_a_stall():
    h = store_health(dict(STATS, unsynced_since=95.0), now=110.0, stall_after=10.0)
    assert not h["ok"] and h["state"].startswith("stalled: data waiting 15s for fsync")
    h = store_health(dict(STATS, blocked_since=90.0, pending_bytes=990), now=110.0, stall_after=10.0)
    assert not h["ok"] and h["state"] == "stalled: backlog full for 20s" and h["backlog_ratio"] == 0.99


def test_a_frozen_store_thread_shows_in_its_stats(tmp_path, monkeypatch):
    flag = tmp_path / "freeze"
    monkeypatch.setenv(FREEZE_ENV, str(flag))
    s = Store(tmp_path / "d", "w", fsync_interval=0.05).open()
    try:
        flag.touch()
        time.sleep(0.3)
        s.append("sessions", "btcalpha", "BTC_USD", {"ts": [1], "seq": [1], "session": [1], "stream": ["s"],
                                                     "kind": ["gap"], "detail": [None]})
        time.sleep(1.0)
        h = store_health(s.stats, stall_after=0.5)
        assert not h["ok"] and "fsync" in h["state"] and h["unsynced_seconds"] >= 0.9
        flag.unlink()
        time.sleep(0.5)
        assert store_health(s.stats, stall_after=0.5)["ok"]
    finally:
        flag.unlink(missing_ok=True)
        s.close()


def test_health_endpoint_says_503_while_the_store_is_frozen(tmp_path, monkeypatch):
    from recorder.daemon import Daemon

    flag = tmp_path / "freeze"
    monkeypatch.setenv(FREEZE_ENV, str(flag))
    cfg = ticker_config(tmp_path / "data")

    async def main():
        d = Daemon(cfg, build=lambda ctx, **_: [StreamTicker(ctx)])
        d.stall_after = 1.0
        task = asyncio.create_task(d.run())
        out = []
        async with aiohttp.ClientSession() as http:
            for pause, then in ((1.0, flag.touch), (2.5, flag.unlink), (1.5, None)):
                await asyncio.sleep(pause)
                async with http.get(f"http://127.0.0.1:{d.port}/health") as r:
                    out.append((r.status, json.loads(await r.text())))
                async with http.get(f"http://127.0.0.1:{d.port}/metrics") as r:
                    out[-1] += (await r.text(),)
                if then is not None:
                    then()
        d.stop()
        await asyncio.wait_for(task, 15)
        return out

    try:
        (s0, h0, m0), (s1, h1, m1), (s2, h2, m2) = asyncio.run(main())
    finally:
        flag.unlink(missing_ok=True)
    assert s0 == 200 and h0["components"]["store"]["fsync_age_seconds"] is not None
    assert s1 == 503 and "fsync" in h1["components"]["store"]["detail"], h1["components"]["store"]
    assert "booktape_store_stalled 1" in m1 and "booktape_store_unsynced_seconds" in m1
    assert s2 == 200 and "booktape_store_stalled 0" in m2


def test_recorder_status_says_why_the_store_fails():
    from recorder.status import render_daemons

    h = {"ok": False, "faults": [], "components_failing": ["store"], "feeds": {},
         "components": {"store": {"ok": False, "detail": "stalled: disk full"}}}
    lines = render_daemons({"daemons": [{"writer": "recorder", "pid": 7, "uptime_s": 5.0, "host": "127.0.0.1",
                                         "port": 9108, "health": h}]})
    assert "  health: NOT OK (store)" in lines and "  store: stalled: disk full" in lines
