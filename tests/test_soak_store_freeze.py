"""Soak (make soak): `recorder run` against the simulator, store frozen for 20 minutes, then SIGTERM.

Must: 0 rows lost that were received before the freeze, a stop within 10 s, gap rows for the rest, memory
bounded meanwhile. BOOKTAPE_SOAK_FREEZE_MINUTES shortens the freeze (default 20; BOOKTAPE_SOAK_QUEUE_MAX and
BOOKTAPE_SOAK_MAX_PENDING shrink the bounds so a short freeze reaches back-pressure too). Figures are printed
(`-s`) for bench/RESULTS.md.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402
from test_e2e_process import KEY, PAIRS, SECRET, all_parquet_readable, free_port, sql, wait_streaming  # noqa: E402
from test_e2e_process import write_config  # noqa: E402

from recorder.sim.server import SimConfig  # noqa: E402
from recorder.store import FREEZE_ENV, Store  # noqa: E402


def scrape(port: int) -> tuple[float, dict]:
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    msgs = sum(float(v) for v in re.findall(r'^booktape_messages_total\{venue="[^"]*",feed="[^"]+"\} (\S+)$', page, re.M))
    gauges = dict(re.findall(r"^(booktape_\w+) (\S+)$", page, re.M))
    return msgs, gauges


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_store_frozen_20_minutes_then_sigterm(tmp_path):
    minutes = float(os.environ.get("BOOKTAPE_SOAK_FREEZE_MINUTES", "20"))
    flag, port = tmp_path / "freeze", free_port()
    with threaded_sim(SimConfig(seed=9, pairs=PAIRS, rate=20.0, credentials={"bitbay": (KEY, SECRET)})) as ts:
        cfg = write_config(tmp_path, ts.sim.urls, metrics_port=port,
                           queue_max=int(os.environ.get("BOOKTAPE_SOAK_QUEUE_MAX", 20000)),
                           max_pending_bytes=int(os.environ.get("BOOKTAPE_SOAK_MAX_PENDING", 16 << 20)))
        env = {**{k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}, "T_BITBAY_KEY": KEY,
               "T_BITBAY_SECRET": SECRET, FREEZE_ENV: str(flag)}
        log = tmp_path / "recorder.log"
        import subprocess
        proc = subprocess.Popen([sys.executable, "-c", "from recorder.cli import main; main()", "run", "--config",
                                 str(cfg)], stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
        try:
            wait_streaming(port, proc, timeout=60)
            time.sleep(10)
            before, _ = scrape(port)
            t_freeze = time.time_ns()
            flag.touch()
            samples = []
            t_end = time.monotonic() + minutes * 60
            while time.monotonic() < t_end:
                time.sleep(min(30.0, max(0.1, t_end - time.monotonic())))
                msgs, g = scrape(port)
                status, h = health(port)
                samples.append((round(time.monotonic() - t_end + minutes * 60), msgs, rss_mb(proc.pid), status,
                                h["components"]["store"]["state"], float(g.get("booktape_queue_rows", 0))))
                print("sample", samples[-1], flush=True)
            final, _ = scrape(port)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            stop_s = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
            flag.unlink(missing_ok=True)
    root = tmp_path / "data"
    time.sleep(0.5)
    t_rec = time.monotonic()
    Store(root, "recorder").open().close()  # the next start: recovers the log the stop kept
    recover_s = time.monotonic() - t_rec
    files = all_parquet_readable(root)
    kept_before = sql(root, f"SELECT count(*) FROM read_parquet('$R/raw/**/*.parquet') WHERE epoch_ns(ts_recv) <= {t_freeze}")[0][0]
    total, distinct = sql(root, "SELECT count(*), count(DISTINCT seq) FROM read_parquet('$R/raw/**/*.parquet')")[0]
    gaps = sql(root, f"SELECT count(*), count(DISTINCT exchange || pair) FROM read_parquet('$R/sessions/**/*.parquet', "
                     f"hive_partitioning=true) WHERE kind = 'gap' AND epoch_ns(ts) >= {t_freeze}")[0]
    rss = [s[2] for s in samples]
    print(json.dumps({"freeze_minutes": minutes, "stop_exit": code, "stop_seconds": round(stop_s, 2),
                      "messages_before_freeze": before, "raw_rows_kept_received_before_freeze": kept_before,
                      "messages_at_sigterm": final, "raw_rows_total": total, "raw_seq_distinct": distinct,
                      "gap_rows_after_freeze": gaps[0], "gap_partitions": gaps[1], "files": files,
                      "recover_seconds": round(recover_s, 2), "rss_mb_min_max": [min(rss), max(rss)] if rss else None,
                      "health_states": sorted({(s[3], s[4]) for s in samples})}), flush=True)
    assert code == 0 and stop_s < 10
    assert kept_before >= before, f"{before} messages received before the freeze, {kept_before} kept"
    assert total == distinct
    assert gaps[0] > 0, "what could not be read or kept after the freeze must be gap rows"
