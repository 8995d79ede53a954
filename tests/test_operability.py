"""Issue 14: /health that means "recording", exact /metrics, one-line start-up failures, status, logs, sd_notify."""
from __future__ import annotations

import asyncio
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
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402
from test_e2e_process import free_port, toml  # noqa: E402

from recorder import config  # noqa: E402
from recorder.daemon import Daemon  # noqa: E402
from recorder.demo import sim_doc  # noqa: E402
from recorder.sim.server import SimConfig, Simulator  # noqa: E402

RECORDER = [sys.executable, "-c", "from recorder.cli import main; main()"]
DEAD = "127.0.0.1:1"  # nothing listens there: every connection is refused


def dead_venue(root: Path, **rec) -> dict:
    """A config document whose only venue is unreachable (socket and REST)."""
    return {"recorder": {"root": str(root), "backoff_base": 0.05, "backoff_cap": 0.3, "fsync_interval": 0.2,
                         "log_format": "json", "log_level": "info", **rec},
            "venues": {"btcalpha": {"pairs": ["BTC_USD"], "channels": ["book", "trades"], "ws_url": f"ws://{DEAD}",
                                    "rest_url": f"http://{DEAD}/api/v1/", "charts_url": f"http://{DEAD}/api/charts/",
                                    "trades_interval": 0.5, "heartbeat": 5.0}}}


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


def run_for(cfg, seconds: float, probe, **kw):
    """Run a Daemon in-process for `seconds` after its feeds start, probe it, stop it."""
    async def main():
        ready = asyncio.Event()
        d = Daemon(cfg, on_ready=lambda _d: ready.set(), **kw)
        task = asyncio.create_task(d.run())
        await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return await task
        await asyncio.sleep(seconds)
        out = await probe(d)
        d.stop()
        assert await task == 0
        return out
    return asyncio.run(main())


class CountingFeed:
    """A fake feed: one message of 2,576,981 bytes, then quiet (exercises exact integers in /metrics)."""

    def __init__(self, ctx, name: str, send: bool) -> None:
        self.ctx, self.name, self.send = ctx, name, send

    async def run(self, healthy) -> None:
        healthy()
        tap = self.ctx.tap(self.name)
        if self.send:
            tap.raw(tap.new_session(), "fake", "BTC_USD", time.time_ns(), b"x" * 2_576_981)
        await asyncio.Event().wait()


# --- /metrics ----------------------------------------------------------------------------------------------------
def test_metrics_are_exact_integers_with_help_type_consistent_labels_and_zero_series(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    cfg = config.parse({"recorder": {"root": str(tmp_path / "data")},
                        "venues": {"bitbay": {"pairs": ["BTC_USD"], "channels": ["trades"]}}}, env={})

    def build(ctx, **_):
        return [CountingFeed(ctx, "bitbay:busy", True), CountingFeed(ctx, "bitbay:quiet", False)]

    async def probe(d):
        return (await get(d.port, "/metrics"))[1]

    text = run_for(cfg, 0.5, probe, build=build)
    # every integer exactly (the hand-written exposition printed 2.57698e+06)
    assert 'booktape_bytes_total{venue="bitbay",feed="busy"} 2576981\n' in text
    # a feed that saw nothing has its series at 0
    assert 'booktape_messages_total{venue="bitbay",feed="quiet"} 0\n' in text
    assert 'booktape_errors_total{venue="bitbay",feed="quiet"} 0\n' in text
    assert 'booktape_rows_total{venue="bitbay",table="trades"} 0\n' in text
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "booktape_uptime_seconds",
            "booktape_queue_rows", "booktape_store_pending_bytes"} <= names
    for line in text.splitlines():
        if line.startswith("booktape_") or line.startswith("process_"):
            name = line.split("{")[0].split(" ")[0]
            base = name.removesuffix("_total")
            assert f"# HELP {name} " in text or f"# HELP {base} " in text, line
            assert f"# TYPE {name} " in text or f"# TYPE {base} " in text, line
    for line in re.findall(r"^booktape_\w+\{[^}]*\}", text, re.M):
        keys = re.findall(r'(\w+)="', line)
        assert keys[:1] == ["venue"], line  # venue first, then feed/pair/table: never feed="venue:channel"
        assert ":" not in dict(re.findall(r'(\w+)="([^"]*)"', line)).get("feed", ""), line


# --- /health -----------------------------------------------------------------------------------------------------
def test_health_is_503_and_names_the_feeds_while_the_venue_is_unreachable(tmp_path):
    cfg = config.parse(dead_venue(tmp_path / "data", health_grace=1.0), env={})

    async def probe(d):
        return await get(d.port, "/health")

    status, body = run_for(cfg, 2.5, probe)
    h = json.loads(body)
    assert status == 503 and h["ok"] is False
    assert set(h["faults"]) == {"btcalpha:book", "btcalpha:trades"}
    assert h["feeds"]["btcalpha:trades"]["state"] == "failing"
    assert h["feeds"]["btcalpha:trades"]["last_message_age_seconds"] is None
    assert "error" in h["feeds"]["btcalpha:trades"]["reason"]


def test_health_is_200_with_every_feed_live_on_the_simulator(tmp_path):
    async def main():
        async with Simulator(SimConfig(seed=3, pairs=["BTC_USD"], rate=20.0,
                                       venues=("btcalpha", "bitopro"))) as sim:
            doc = sim_doc(sim.urls, tmp_path / "data", ["BTC_USD"])
            doc["venues"] = {k: v for k, v in doc["venues"].items() if k in ("btcalpha", "bitopro")}
            doc["recorder"]["health_grace"] = 20.0
            cfg = config.parse(doc, env={})

            async def probe(d):
                for _ in range(100):
                    status, body = await get(d.port, "/health")
                    h = json.loads(body)
                    if {f["state"] for f in h["feeds"].values()} == {"live"}:
                        return status, h
                    await asyncio.sleep(0.2)
                return status, h

            ready = asyncio.Event()
            d = Daemon(cfg, on_ready=lambda _d: ready.set())
            task = asyncio.create_task(d.run())
            await ready.wait()
            out = await probe(d)
            d.stop()
            await task
            return out

    status, h = asyncio.run(main())
    assert status == 200 and h["ok"] and h["ready"], h
    assert {f["state"] for f in h["feeds"].values()} == {"live"}, h["feeds"]


def test_an_unlisted_pair_fails_the_start_or_with_allow_unlisted_fails_loudly(tmp_path):
    from recorder.startup import StartupError

    async def main():
        async with Simulator(SimConfig(seed=3, pairs=["BTC_USD"], rate=5.0, venues=("btcalpha",))) as sim:
            doc = sim_doc(sim.urls, tmp_path / "data", ["BTC_USD", "DOGE_USD"])
            doc["venues"] = {"btcalpha": {**doc["venues"]["btcalpha"], "channels": ["book", "trades"]}}
            doc["recorder"]["health_grace"] = 1.0
            cfg = config.parse(doc, env={})
            with pytest.raises(StartupError, match="DOGE_USD not listed by btcalpha"):
                await Daemon(cfg).run()
            assert not (tmp_path / "data").exists()  # refused before anything was written

            ready = asyncio.Event()
            d = Daemon(cfg, on_ready=lambda _d: ready.set(), allow_unlisted=True)
            task = asyncio.create_task(d.run())
            await ready.wait()
            await asyncio.sleep(3.0)
            out = await get(d.port, "/health")
            d.stop()
            await task
            return out

    status, body = asyncio.run(main())
    h = json.loads(body)
    assert status == 503 and set(h["faults"]) == {"btcalpha:book", "btcalpha:trades"}
    for f in h["feeds"].values():
        assert f["state"] == "failing" and "DOGE_USD not listed" in f["reason"]


@pytest.mark.parametrize("venue", ["btcalpha", "bitbay"])
def test_current_era_pairs_are_checked_where_the_venue_lists_them(tmp_path, venue):
    """api = "current": BTC-Alpha lists its pairs at api/v1/pairs/ beside alp-ws's api/web/ (ccxt and the alp-ws
    fetcher read them there), Zonda at trading/ticker; the check reads that list, gets 200 and finds the unlisted."""
    from recorder.startup import unlisted_pairs

    async def main():
        async with Simulator(SimConfig(seed=3, pairs=["BTC_USD"], rate=5.0, venues=(venue,))) as sim:
            url = sim.urls[venue]
            rest = f"{url}/api/web/" if venue == "btcalpha" else f"{url}/rest"
            cfg = config.parse({"recorder": {"root": str(tmp_path / "data")}, "venues": {venue: {
                "api": "current", "pairs": ["BTC_USD", "DOGE_USD"], "channels": ["book"], "rest_url": rest,
                "ws_url": url.replace("http://", "ws://")}}}, env={})
            async with aiohttp.ClientSession() as http:
                return await unlisted_pairs(cfg.venues[0], http)

    check = asyncio.run(main())
    assert (check.status, check.why, check.missing) == (200, "", ["DOGE_USD"]), check


def test_error_bodies_are_not_useful_messages(tmp_path):
    """A REST poller whose every answer is an error body (here 404) is failing, never fresh."""
    async def main():
        async with Simulator(SimConfig(seed=3, pairs=["BTC_USD"], rate=5.0, venues=("btcalpha",))) as sim:
            a = sim.urls["btcalpha"]
            cfg = config.parse({"recorder": {"root": str(tmp_path / "data"), "health_grace": 1.0},
                                "venues": {"btcalpha": {"pairs": ["BTC_USD"], "channels": ["trades"],
                                                        "ws_url": a, "rest_url": f"{a}/nothing-here/",
                                                        "charts_url": f"{a}/api/charts/", "trades_interval": 0.3}}},
                               env={})
            return await run_async(cfg, 2.0)

    status, h, metrics = asyncio.run(main())
    t = h["feeds"]["btcalpha:trades"]
    assert status == 503 and t["state"] == "failing" and t["last_message_age_seconds"] is None
    assert re.search(r'^booktape_messages_total\{venue="btcalpha",feed="trades"\} [1-9]', metrics, re.M)
    assert 'booktape_useful_messages_total{venue="btcalpha",feed="trades"} 0\n' in metrics


async def run_async(cfg, seconds):
    ready = asyncio.Event()
    d = Daemon(cfg, on_ready=lambda _d: ready.set())
    task = asyncio.create_task(d.run())
    await ready.wait()
    await asyncio.sleep(seconds)
    status, body = await get(d.port, "/health")
    _, metrics = await get(d.port, "/metrics")
    d.stop()
    await task
    return status, json.loads(body), metrics


def test_pollers_report_lag_per_pair(tmp_path):
    async def main():
        async with Simulator(SimConfig(seed=3, pairs=["BTC_USD", "ETH_BTC"], rate=5.0, venues=("bitbay",))) as sim:
            doc = sim_doc(sim.urls, tmp_path / "data", ["BTC_USD", "ETH_BTC"])
            doc["venues"] = {"bitbay": {**doc["venues"]["bitbay"], "channels": ["trades"]}}
            del doc["venues"]["bitbay"]["api_key_env"], doc["venues"]["bitbay"]["api_secret_env"]
            return await run_async(config.parse(doc, env={}), 3.0)

    _, h, metrics = asyncio.run(main())
    lags = dict(re.findall(r'^booktape_poll_lag_seconds\{venue="bitbay",feed="trades",pair="(\w+)"\} (\S+)$',
                           metrics, re.M))
    assert set(lags) == {"BTC_USD", "ETH_BTC"} and all(float(v) < 3.0 for v in lags.values())
    assert re.search(r'^booktape_lag_seconds\{venue="bitbay",feed="trades"\} ', metrics, re.M)
    assert set(h["feeds"]["bitbay:trades"]["poll_lag_seconds"]) == {"BTC_USD", "ETH_BTC"}


# --- one-line start-up failures ----------------------------------------------------------------------------------
def write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "recorder.toml"
    p.write_text(toml(doc))
    return p


def one_line_failure(cmd: list[str], json_mode: bool = True, timeout: float = 60) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert len(lines) == 1, p.stderr[-3000:]
    if json_mode:
        d = json.loads(lines[0])
        assert d["level"] == "error"
        return d["error"]
    return lines[0]


def test_start_up_failures_are_one_line_exit_2_and_leave_the_root_untouched(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    root = tmp_path / "fresh"
    msg = one_line_failure(RECORDER + ["run", "--config", str(write(tmp_path, dead_venue(root, metrics_port=port)))])
    assert f"port {port}" in msg and "in use" in msg
    assert not root.exists()  # nothing written before the failed start (it used to leave _log/)

    afile = tmp_path / "afile"
    afile.write_text("x")
    msg = one_line_failure(RECORDER + ["run", "--config", str(write(tmp_path, dead_venue(afile)))])
    assert "not a directory" in msg and afile.read_text() == "x"

    msg = one_line_failure(RECORDER + ["run", "--config", str(write(tmp_path, dead_venue(Path("/proc/booktape"))))])
    assert "/proc" in msg

    msg = one_line_failure(RECORDER + ["simulate", "--port", str(port)], json_mode=False)
    assert "in use" in msg

    msg = one_line_failure(RECORDER + ["demo", "--seconds", "1", "--root", str(afile)], json_mode=False)
    assert "not a directory" in msg
    busy.close()


def test_a_second_recorder_on_the_same_root_is_one_line_exit_2(tmp_path):
    root = tmp_path / "data"
    cfg = write(tmp_path, dead_venue(root))
    first = subprocess.Popen(RECORDER + ["run", "--config", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (root / "_state" / "writer-recorder.json").exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        msg = one_line_failure(RECORDER + ["run", "--config", str(cfg)])
        assert "already running" in msg and str(root) in msg
        assert first.poll() is None
        assert json.loads((root / "_state" / "writer-recorder.json").read_text())["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0


def test_a_demo_that_recorded_nothing_exits_non_zero(tmp_path):
    p = subprocess.run(RECORDER + ["demo", "--seconds", "0", "--root", str(tmp_path / "d")], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "nothing recorded" in p.stderr


def wait_ready(root: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the recorder on `root` has its kernels loaded and its feeds started (/health "ready")."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None and time.monotonic() < deadline
        try:
            info = json.loads((root / "_state" / "writer-recorder.json").read_text())
            with urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/health", timeout=2) as r:
                h = json.loads(r.read())
        except urllib.error.HTTPError as e:
            h = json.loads(e.read())
        except (OSError, ValueError):
            h = {}
        if h.get("ready") and h.get("feeds"):
            return
        time.sleep(0.1)


# --- recorder status knows the daemon ----------------------------------------------------------------------------
def test_status_knows_the_running_daemon_and_counts_unsealed_log_rows(tmp_path):
    root = tmp_path / "data"
    cfg = write(tmp_path, dead_venue(root, health_grace=1.0))
    rec = subprocess.Popen(RECORDER + ["run", "--config", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        wait_ready(root, rec)
        time.sleep(3.0)  # errors pile up in the log; no segment seals this early
        out = subprocess.run(RECORDER + ["status", "--root", str(root)], capture_output=True, text=True,
                             timeout=60).stdout
    finally:
        rec.send_signal(signal.SIGTERM)
        assert rec.wait(20) == 0
    assert f"recorder running: pid {rec.pid}" in out, out
    assert re.search(r"uptime \d", out) and "NOT OK" in out and "btcalpha:trades" in out
    n = int(re.search(r"unsealed log rows: (\d+)", out).group(1))
    assert n > 0
    after = subprocess.run(RECORDER + ["status", "--root", str(root)], capture_output=True, text=True,
                           timeout=60).stdout
    assert "no recorder running" in after and "unsealed log rows: 0" in after


# --- logs ---------------------------------------------------------------------------------------------------------
def log_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_graceful_stop_logs_at_info_under_recorder_daemon_and_kill_9_restart_logs_what_it_recovered(tmp_path):
    from test_e2e_process import KEY, SECRET, start, write_config

    with threaded_sim(SimConfig(seed=5, pairs=["BTC_USD", "ETH_BTC"], rate=10.0,
                                credentials={"bitbay": (KEY, SECRET)})) as ts:
        cfg = write_config(tmp_path, ts.sim.urls)
        log = tmp_path / "recorder.log"
        p = start(cfg, log)
        time.sleep(6.0)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        lines = log_lines(log)
        i = next(i for i, x in enumerate(lines) if x["msg"] == "stopping")
        assert [x for x in lines[i:] if x["level"] != "info"] == []
        life = {x["msg"]: x["logger"] for x in lines if x["msg"] in ("starting", "stopping", "stopped")}
        assert life == {"starting": "recorder.daemon", "stopping": "recorder.daemon", "stopped": "recorder.daemon"}
        assert not [x for x in lines if x["msg"] in ("start", "stop") and x["logger"].startswith("recorder.feeds")]

        log2 = tmp_path / "recorder2.log"
        p = start(cfg, log2)
        time.sleep(6.0)
        p.kill()
        p.wait(10)
        p = start(cfg, log2)
        try:
            deadline = time.monotonic() + 60
            while not [x for x in log_lines(log2) if x["msg"] == "recovered after an unclean stop"]:
                assert p.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(20)
    (rec,) = [x for x in log_lines(log2) if x["msg"] == "recovered after an unclean stop"]
    assert rec["logger"] == "recorder.daemon" and rec["segments"] >= 1 and rec["rows"] > 0


# --- sd_notify ----------------------------------------------------------------------------------------------------
def test_sd_notify_ready_watchdog_and_stopping(tmp_path, monkeypatch):
    addr = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(addr)
    srv.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = config.parse(dead_venue(tmp_path / "data"), env={})

    got = []

    async def probe(d):
        return None

    def reader():
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                got.append(srv.recv(4096).decode())
            except TimeoutError:
                pass

    import threading
    done = threading.Event()
    t = threading.Thread(target=reader)
    t.start()
    try:
        run_for(cfg, 1.5, probe)
        time.sleep(0.5)
    finally:
        done.set()
        t.join()
    srv.close()
    assert any("READY=1" in m for m in got), got
    assert sum("WATCHDOG=1" in m for m in got) >= 3, got  # every 0.2 s: half of WatchdogSec
    assert "STOPPING=1" in got[-1] or any("STOPPING=1" in m for m in got[-3:]), got
    assert got.index(next(m for m in got if "READY=1" in m)) < len(got) - 1


def test_feed_states_follow_the_last_useful_message_and_faults():
    from recorder.health import Check, FeedHealth, Health
    from recorder.metrics import Metrics

    now = [1000.0]
    m = Metrics(clock=lambda: now[0])
    h = Health(m, grace=10.0, clock=lambda: now[0])
    h.add_feed(FeedHealth("v:book", ("A",), stale_after=5.0))
    h.add_feed(FeedHealth("v:trades", ("A", "B"), stale_after=5.0, polls=True))
    state = lambda name: h.report()["feeds"][name]["state"]  # noqa: E731
    assert state("v:book") == "connecting" and h.report()["ok"]  # within the grace: not a fault yet
    m.seen("v:book", 10, useful=False)  # a control frame or an error body: still nothing useful
    assert state("v:book") == "connecting"
    now[0] += 11
    assert set(h.report()["faults"]) == {"v:book", "v:trades"}  # past the grace
    m.seen("v:book", 10)
    m.seen("v:trades", 10)
    m.caught_up("v:trades", "A")
    assert state("v:book") == "live" and state("v:trades") == "stale"  # B was never caught up: lag > 5 s
    m.caught_up("v:trades", "B")
    assert state("v:trades") == "live" and h.report()["ok"]
    now[0] += 6
    assert state("v:book") == "stale" and "threshold 5s" in h.report()["feeds"]["v:book"]["reason"]
    m.seen("v:book", 10)
    now[0] += 1
    m.fault("v:book", "error: boom")
    assert state("v:book") == "failing" and h.report()["faults"] == ["v:book", "v:trades"]
    h.component("store", lambda: Check(False, "fsync 12 s ago", {"fsync_age_seconds": 12}))
    r = h.report()
    assert r["components_failing"] == ["store"] and r["components"]["store"]["fsync_age_seconds"] == 12
    h.stop_all()
    assert state("v:book") == "stopped"
