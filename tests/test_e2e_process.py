"""`recorder run` as a real process against the simulator: kill -9 and restart, SIGTERM, secrets never leak."""
from __future__ import annotations

import pytest

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402
from test_e2e_sim import truth  # noqa: E402

from recorder.demo import sim_doc  # noqa: E402
from recorder.sim.server import SimConfig  # noqa: E402

pytestmark = pytest.mark.faults  # kill -9, restarts and injected faults: make faults (run by .ci/run)

PAIRS = ["BTC_USD", "ETH_BTC"]
KEY, SECRET = "KEY-7f3a9c0e-bitbay-unique", "SECRET-d41d8cd98f00b204-unique"


def toml(doc: dict) -> str:
    """Just enough TOML for a config document (tables of scalars and lists)."""
    def val(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    out = []

    def table(prefix, d):
        out.append(f"[{prefix}]")
        subs = []
        for k, v in d.items():
            if isinstance(v, dict):
                subs.append((f"{prefix}.{k}", v))
            else:
                out.append(f"{k} = {val(v)}")
        for p, v in subs:
            table(p, v)

    for k, v in doc.items():
        table(k, v)
    return "\n".join(out) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, urls: dict, **rec) -> Path:
    doc = sim_doc(urls, tmp / "data", PAIRS)
    doc["recorder"].update(log_format="json", log_level="info", **rec)
    doc["venues"]["bitbay"].update(api_key_env="T_BITBAY_KEY", api_secret_env="T_BITBAY_SECRET")
    path = tmp / "recorder.toml"
    path.write_text(toml(doc))
    return path


def start(cfg: Path, log: Path) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}, "T_BITBAY_KEY": KEY,
           "T_BITBAY_SECRET": SECRET}  # the pool is recorder run's own choice
    return subprocess.Popen([sys.executable, "-c", "from recorder.cli import main; main()", "run", "--config", str(cfg)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def stop(proc: subprocess.Popen) -> tuple[int, float]:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(15)
    return code, time.monotonic() - t0


def all_parquet_readable(root: Path) -> int:
    files = list(root.rglob("*.parquet"))
    for f in files:
        pq.read_table(f)  # raises on a partial or corrupt file
    return len(files)


STREAMS = ("btcalpha:book", "bitexbit:book", "bitopro:ws_book")


def wait_streaming(port: int, proc: subprocess.Popen, timeout: float = 30.0, streams=STREAMS) -> None:
    """Block until every socket feed has received messages (start-up time varies with the kernels' cache)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None
        try:
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            page = ""
        seen = {f"{v}:{f}": n for v, f, n in
                re.findall(r'^booktape_messages_total\{venue="([^"]*)",feed="([^"]+)"\} (\S+)$', page, re.M)}
        if all(float(seen.get(f, 0)) > 0 for f in streams):
            return
        time.sleep(0.1)
    raise AssertionError(f"the socket feeds were not all receiving within {timeout} s")


def read_page(url: str) -> bytes:
    """A page's body, also when its status is an error (/health is 503 while a feed fails)."""
    try:
        return urllib.request.urlopen(url, timeout=5).read()
    except urllib.error.HTTPError as e:
        return e.read()


def sql(root: Path, q: str):
    con = duckdb.connect()
    try:
        return con.execute(q.replace("$R", str(root))).fetchall()
    finally:
        con.close()


def test_kill_9_then_restart_loses_nothing_older_than_the_fsync_interval(tmp_path):
    fsync, port = 0.5, free_port()
    with threaded_sim(SimConfig(seed=5, pairs=PAIRS, rate=10.0, truth_dir=str(tmp_path / "truth"),
                                credentials={"bitbay": (KEY, SECRET)})) as ts:
        cfg = write_config(tmp_path, ts.sim.urls, fsync_interval=fsync, metrics_port=port)
        log = tmp_path / "recorder.log"
        p1 = start(cfg, log)
        wait_streaming(port, p1)
        time.sleep(7.0)  # in its steady state: ~45 socket messages a second, ~270 older than the horizon below
        assert p1.poll() is None
        p1.kill()  # SIGKILL: no flush, no stop row
        t_kill = time.time_ns()
        p1.wait(5)
        all_parquet_readable(tmp_path / "data")  # right after the kill: every visible file is whole
        p2 = start(cfg, log)
        time.sleep(5.0)
        assert p2.poll() is None, log.read_text()[-3000:]
        code, took = stop(p2)
    assert code == 0 and took < 10, log.read_text()[-3000:]
    root = tmp_path / "data"
    assert all_parquet_readable(root) > 10
    kinds = Counter((v, k) for v, k in sql(root, """SELECT exchange, kind
        FROM read_parquet('$R/sessions/**/*.parquet', hive_partitioning=true)"""))
    for v in ("btcalpha", "bitexbit", "bitopro", "bitbay"):
        assert kinds[(v, "start")] == 2 and kinds[(v, "stop")] == 1, v  # the restart is visible
    raw = Counter(bytes(p) for (p,) in sql(root, "SELECT payload FROM read_parquet('$R/raw/**/*.parquet')"))
    horizon = t_kill - int((fsync + 0.05 + 0.5) * 1e9)  # fsync interval + sink linger + delivery margin
    checked = 0
    for m in truth(tmp_path / "truth", "messages"):
        if not m["conn"].startswith("ws") or m["ts_wall"] >= horizon:
            continue
        if m["venue"] in ("btcalpha", "bitexbit") and not m["payload"].startswith("42"):
            continue
        checked += 1
        assert raw[m["payload"].encode()] > 0, m
    assert checked > 200
    dup = sql(root, """SELECT exchange, pair, trade_id, count(*) FROM read_parquet('$R/trades/**/*.parquet',
        hive_partitioning=true) WHERE exchange != 'bitopro' GROUP BY ALL HAVING count(*) > 1""")
    assert dup == []  # the restart neither duplicates trades it already had ...
    for venue in ("btcalpha", "bitexbit"):
        for pair in PAIRS:
            ids = sorted(int(t) for (t,) in sql(root, f"""SELECT trade_id FROM
                read_parquet('$R/trades/exchange={venue}/pair={pair}/**/*.parquet')"""))
            lo = min(int(t) for (t,) in sql(root, f"""SELECT trade_id FROM read_parquet(
                '$R/trades/exchange={venue}/pair={pair}/**/*.parquet') WHERE source = 'socket'"""))
            want = sorted(e["trade_id"] for e in truth(tmp_path / "truth", "events") if e["venue"] == venue
                          and e["pair"] == pair and e["action"] == "F" and lo <= e["trade_id"] <= ids[-1])
            assert set(want) <= set(ids), (venue, pair)  # ... nor misses those traded while it was down


def test_secrets_never_appear_in_logs_errors_metrics_or_dataset(tmp_path):
    port = free_port()
    with threaded_sim(SimConfig(seed=6, pairs=PAIRS, rate=10.0, credentials={"bitbay": (KEY, SECRET)})) as ts:
        cfg = write_config(tmp_path, ts.sim.urls, metrics_port=port)
        log = tmp_path / "recorder.log"
        proc = start(cfg, log)
        wait_streaming(port, proc)  # feeds running (a loaded machine can take seconds to load the kernels)
        time.sleep(4.0)
        from recorder.sim.faults import Fault
        ts.call(ts.sim.inject, Fault("http_error", "bitbay", count=3, status=500))
        ts.call(ts.sim.inject, Fault("http_error", "bitbay", count=2, status=429))
        time.sleep(4.0)
        pages = [read_page(f"http://127.0.0.1:{port}/{p}") for p in ("metrics", "health", "")]
        code, _ = stop(proc)
    assert code == 0
    root = tmp_path / "data"
    levels = sql(root, "SELECT count(*) FROM read_parquet('$R/book_levels/exchange=bitbay/**/*.parquet')")[0][0]
    assert levels > 0  # the signed calls worked, so the credentials were in use
    texts = {"log": log.read_bytes(), "metrics": pages[0], "health": pages[1], "status page": pages[2]}
    for f in root.rglob("*"):
        if f.is_file():
            texts[str(f)] = f.read_bytes()
    for name, blob in texts.items():
        for s in (KEY, SECRET):
            assert s.encode() not in blob, (name, s)
    con = duckdb.connect()
    for table in ("raw", "sessions", "trades", "book_levels", "candles", "book_events"):
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{root}/{table}/**/*.parquet')").fetchall()
                if r[1] in ("VARCHAR", "BLOB")]
        for c in cols:
            n = con.execute(f"""SELECT count(*) FROM read_parquet('{root}/{table}/**/*.parquet')
                WHERE contains(CAST({c} AS VARCHAR), ?) OR contains(CAST({c} AS VARCHAR), ?)""", [KEY, SECRET]).fetchone()[0]
            assert n == 0, (table, c)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("msg") == "rate_limited" for line in lines) and any(line["level"] == "warning" for line in lines)
    # `recorder run` chose its Arrow pool before pyarrow loaded (recorder/cli.py)
    assert [line["pool"] for line in lines if line.get("msg") == "starting"] == ["jemalloc"]  # in the start line


def test_sigterm_while_starting_up_still_exits_cleanly(tmp_path):
    with threaded_sim(SimConfig(seed=7, pairs=PAIRS, rate=5.0, credentials={"bitbay": (KEY, SECRET)})) as ts:
        cfg = write_config(tmp_path, ts.sim.urls)
        log = tmp_path / "recorder.log"
        proc = start(cfg, log)
        time.sleep(1.0)  # imports / store open still in progress
        code, took = stop(proc)
    assert code == 0 and took < 10, log.read_text()[-2000:]
