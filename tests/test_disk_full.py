"""A full disk is a state, not a crash: the store refuses and recovers, the daemon waits and loses nothing,
and starting on a full disk is one line and exit 2. Each test mounts its own small tmpfs (root only)."""
from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from smallfs import fill, small_fs  # noqa: E402
from tickers import StreamTicker, sql, ticker_config  # noqa: E402

from recorder.daemon import Daemon  # noqa: E402
from recorder.store import DiskFull, Store, StoreBusy  # noqa: E402
from recorder.store.health import store_health  # noqa: E402


def raw_cols(i0: int, n: int, size: int = 1000) -> dict:
    return {"ts_recv": [time.time_ns()] * n, "seq": list(range(i0, i0 + n)), "session": [1] * n,
            "stream": ["t"] * n, "payload": [b"x" * size] * n, "status": ["ok"] * n,
            "request": [None] * n, "reason": [None] * n}


def count(root: Path, table: str = "raw") -> int:
    return sql(f"SELECT count(DISTINCT seq) FROM read_parquet('{root}/{table}/**/*.parquet')")[0][0]


def test_store_on_a_full_disk_refuses_without_writing_then_resumes(tmp_path, caplog):
    with small_fs(tmp_path / "fs", "4m") as fs:
        root = fs / "data"
        s = Store(root, "w", max_pending_bytes=256 << 10, fsync_interval=0.05, seal_interval=0.2).open()
        s.append("raw", "btcalpha", "BTC_USD", raw_cols(0, 50))
        ballast = fs / "ballast"
        fill(ballast)
        caplog.set_level(logging.INFO)
        with pytest.raises(DiskFull):
            for i in range(1, 200):
                s.append("raw", "btcalpha", "BTC_USD", raw_cols(50 * i, 50))
        ok_rows = s.stats["rows_appended"]
        assert isinstance(DiskFull("x"), StoreBusy)  # a retryable state for the sink
        h = store_health(s.stats)
        assert not h["ok"] and h["state"] == "stalled: disk full" and h["disk_full"]
        time.sleep(1.5)  # the background thread meets the full disk too: it backs off quietly
        assert not [r for r in caplog.records if r.exc_info], "a full disk is logged in one line, no traceback"
        assert len([r for r in caplog.records if "disk full" in r.getMessage()]) <= 1
        ballast.unlink()
        for i in range(200, 210):
            s.append("raw", "btcalpha", "BTC_USD", raw_cols(50 * i, 50))
        s.close()
        assert store_health(s.stats)["ok"]
        assert count(root) == ok_rows + 500
        assert not list(root.rglob("*.tmp")), "no partial file left behind"


def test_daemon_on_a_full_disk_waits_reports_503_and_loses_nothing(tmp_path):
    with small_fs(tmp_path / "fs", "16m") as fs:
        cfg = ticker_config(fs / "data", queue_max=2000, max_pending_bytes=1 << 20)
        feeds = []

        def build(ctx, **_):
            feeds.append(StreamTicker(ctx))
            return feeds

        async def get(s, port, path):
            async with s.get(f"http://127.0.0.1:{port}{path}") as r:
                return r.status, await r.text()

        async def main():
            d = Daemon(cfg, build=build)
            task = asyncio.create_task(d.run())
            await asyncio.sleep(1.5)
            fill(fs / "ballast")
            await asyncio.sleep(4.0)
            async with aiohttp.ClientSession() as s:
                full_health = await get(s, d.port, "/health")
                full_metrics = await get(s, d.port, "/metrics")
                assert not task.done(), "the daemon must survive a full disk"
                sent_while_full = feeds[0].sent
                await asyncio.sleep(1.0)
                stuck = feeds[0].sent - sent_while_full  # back-pressure: the feed waits
                (fs / "ballast").unlink()
                await asyncio.sleep(3.0)
                ok_health = await get(s, d.port, "/health")
            d.stop()
            return await task, full_health, full_metrics, stuck, ok_health

        code, full_health, full_metrics, stuck, ok_health = asyncio.run(main())
        assert code == 0
        import json
        status, body = full_health
        h = json.loads(body)
        assert status == 503 and h["components_failing"] == ["store"]
        assert h["components"]["store"]["detail"] == "stalled: disk full" and h["components"]["store"]["disk_full"]
        assert "booktape_store_disk_full 1" in full_metrics[1]
        assert 'booktape_stalled{venue="btcalpha",feed="ticker"} 1' in full_metrics[1]
        assert stuck <= 40, "while the disk is full the feed must be held back, not buffered without bound"
        assert ok_health[0] == 200
        root = fs / "data"
        assert count(root) == feeds[0].sent + 0, "every row handed to the sink is in the dataset"
        kinds = [k for (k,) in sql(f"SELECT kind FROM read_parquet('{root}/sessions/**/*.parquet') ORDER BY seq")]
        assert kinds[0] == "start" and kinds[-1] == "stop"


def test_starting_on_a_full_disk_is_one_line_and_exit_2(tmp_path):
    with small_fs(tmp_path / "fs", "4m") as fs:
        fill(fs / "ballast")
        cfg = tmp_path / "r.toml"
        cfg.write_text(f'[recorder]\nroot = "{fs / "data"}"\n[venues.bitopro]\npairs = ["BTC_USD"]\n')
        res = subprocess.run([sys.executable, "-c", "from recorder.cli import main; main()", "run", "--config",
                              str(cfg)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert "free" in lines[0] and "needs at least" in lines[0] and "MB" in lines[0]
