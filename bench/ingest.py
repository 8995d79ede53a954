"""Recorder ingest: simulator firehose -> `recorder run` -> durable Parquet, per core; and memory over a long run.

Firehose: an unpaced simulator (BTC-Alpha only, own process) pushes `-n` book frames as fast as it can to
every connected socket, once told to go. Measured in the recorder process (its own process, all threads, and
any child it runs meanwhile): messages per CPU-second from the go until it has committed everything to
Parquet and exited (SIGTERM), and the wall rate over the same span. The firehose starts when
the recorder is in its steady state: every pair's snapshot joined (`booktape_up` = 1) and its start-up
compaction pass (a child process) finished. Before that, the join buffers and replays messages one by one,
which a 24/7 recorder does once per connection. Baseline in the same run: a bare engine.io reader (aiohttp,
no parsing, no storing) on the same firehose: frames per CPU-second.

Memory: `--minutes M` runs the paced simulator (btcalpha + bitexbit, 2 pairs each, `--rate` msg/s in total)
against `recorder run` with every channel, sampling the recorder's RSS every 5 s.

Run: `.venv/bin/python bench/ingest.py [-n 200000] [--runs 3] [--minutes 2] [--rate 2000] [--against REV]`;
`--against REV` also runs the recorder of git revision REV (exported, kernels compiled) after each run's
baseline: a same-run A/B of a change.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb

FIREHOSE = r"""
import asyncio, json, os, sys, time
from recorder.sim.server import SimConfig, Simulator
async def main(ready, n, pairs):
    cfg = SimConfig(seed=1, pairs=pairs, rate=100_000, start=1_700_000_000, warmup=0.01, paced=False,
                    venues=("btcalpha",), eio_ping_interval_ms=25_000, eio_ping_timeout_ms=600_000)
    async with Simulator(cfg) as sim:
        with open(ready + ".tmp", "w") as fh:
            json.dump(sim.urls, fh)
        os.replace(ready + ".tmp", ready)
        hub = sim.venues["btcalpha"].hub
        while not hub.conns or not all(c.ready for c in hub.conns):
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the bench says go
        start = sum(f.market.seq for f in sim.feeds)
        while sum(f.market.seq for f in sim.feeds) - start < n:
            if max(len(c.queue) for c in hub.conns) < 20_000:
                sim.advance(0.01)
            await asyncio.sleep(0)
        print("sent", sum(f.market.seq for f in sim.feeds) - start, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")))
"""

READER = r"""
import asyncio, sys, time, aiohttp
async def main(url, n):
    async with aiohttp.ClientSession() as s, s.ws_connect(url, max_msg_size=0) as ws:
        got = 0
        while got < n:
            m = await ws.receive()
            if m.type != aiohttp.WSMsgType.TEXT:
                raise SystemExit(f"socket ended after {got}")
            if m.data == "2":
                await ws.send_str("3")
            if m.data.startswith("42"):
                if got == 0:
                    print("first", time.time(), time.process_time(), flush=True)
                got += 1
        print("done", time.time(), time.process_time(), flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_firehose(tmp: Path, n: int, pairs: str) -> tuple[subprocess.Popen, dict]:
    """The firehose simulator and its URLs; it streams once its readers are connected and `go()` was called."""
    ready = tmp / f"urls-{time.monotonic_ns()}.json"
    proc = subprocess.Popen([sys.executable, "-c", FIREHOSE, str(ready), str(n), pairs], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    while not ready.exists():
        if proc.poll() is not None:
            raise SystemExit("firehose simulator failed to start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def go(sim: subprocess.Popen) -> None:
    """Start the firehose."""
    sim.stdin.write("go\n")
    sim.stdin.flush()


def cpu_seconds(pid: int) -> float:
    """CPU time of a live process (all threads) and of the children it has reaped, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Child processes of a live process (any thread's)."""
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return tuple(int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM"))


def metric(port: int, name: str, feed: str) -> float:
    """A per-feed sample of /metrics; `feed` is venue:channel (labels venue/feed, or the older feed="venue:channel")."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    venue, _, channel = feed.partition(":")
    m = (re.search(rf'^{name}{{venue="{re.escape(venue)}",feed="{re.escape(channel)}"}} (\S+)$', text, re.M)
         or re.search(rf'^{name}{{feed="{re.escape(feed)}"}} (\S+)$', text, re.M))
    return float(m.group(1)) if m else 0.0


def write_config(path: Path, root: Path, port: int, venues: dict) -> None:
    lines = ["[recorder]", f'root = "{root}"', f"metrics_port = {port}", 'log_level = "warning"',
             "queue_max = 200000"]
    for name, v in venues.items():
        lines.append(f"[venues.{name}]")
        lines += [f"{k} = {json.dumps(val)}" for k, val in v.items()]
    path.write_text("\n".join(lines) + "\n")


def recorder(cfg: Path, tree: Path | None = None) -> subprocess.Popen:
    """`recorder run` from this checkout, or from `tree` (an exported revision: --against)."""
    env = dict(os.environ, PYTHONPATH=str(tree)) if tree else None
    return subprocess.Popen([sys.executable, "-c", "from recorder.cli import main; main()", "run", "--config", str(cfg)],
                            stderr=subprocess.DEVNULL, env=env)


def export(rev: str, dest: Path) -> Path:
    """The source tree of a git revision, with its kernels compiled (numba caches per source path)."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    subprocess.run([sys.executable, "-c", "from recorder.feeds import l3; l3.warm()"], check=True,
                   env=dict(os.environ, PYTHONPATH=str(dest)))
    return dest


def firehose(n: int, pairs: str, tree: Path | None = None) -> dict:
    """Recorder on the firehose: wall and per-CPU rates into committed Parquet."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp = Path(tmp)
        sim, urls = start_firehose(tmp, n, pairs)
        port = free_port()
        a = urls["btcalpha"]
        write_config(tmp / "r.toml", tmp / "data", port, {"btcalpha": {
            "pairs": pairs.split(","), "channels": ["book"], "ws_url": a, "rest_url": f"{a}/api/v1/",
            "charts_url": f"{a}/api/charts/", "heartbeat": 120.0}})
        rec = recorder(tmp / "r.toml", tree)
        while True:  # steady state first: snapshots joined, start-up compaction child gone
            time.sleep(0.05)
            try:
                if metric(port, "booktape_up", "btcalpha:book") and not children(rec.pid):
                    break
            except OSError:
                continue
        first, cpu0 = time.time(), cpu_seconds(rec.pid)  # idle until the first frame: nothing is left out
        go(sim)
        while metric(port, "booktape_messages_total", "btcalpha:book") < n:
            time.sleep(0.25)  # a scrape costs the recorder CPU: a few, not a poll every few ms
        t_recv = time.time()
        rec.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(rec.pid, 0)
        t_end = time.time()
        sim.stdin.close()
        sim.wait(10)
        cpu = ru.ru_utime + ru.ru_stime - cpu0
        rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp}/data/raw/**/*.parquet')").fetchall()[0][0]
        events = duckdb.sql(f"SELECT count(*) FROM read_parquet('{tmp}/data/book_events/**/*.parquet')").fetchall()[0][0]
        return {"messages": n, "raw_rows": rows, "book_events": events, "exit": os.waitstatus_to_exitcode(status),
                "wall_recv": n / (t_recv - first), "wall_durable": n / (t_end - first), "per_cpu": n / cpu,
                "cpu_s": cpu, "peak_rss_mb": ru.ru_maxrss / 1024}


def baseline(n: int, pairs: str) -> dict:
    """Bare engine.io reader on the same firehose: frames per CPU-second and per wall second."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        sim, urls = start_firehose(Path(tmp), n, pairs)
        url = urls["btcalpha"].replace("http", "ws") + "/socket.io/?EIO=3&transport=websocket"
        reader = subprocess.Popen([sys.executable, "-c", READER, url, str(n)], stdout=subprocess.PIPE, text=True)
        go(sim)  # read once the reader is connected
        out = reader.communicate(timeout=600)[0].split("\n")
        sim.stdin.close()
        sim.wait(10)
        (_, w0, c0), (_, w1, c1) = (line.split() for line in out[:2])
        return {"wall": n / (float(w1) - float(w0)), "per_cpu": n / (float(c1) - float(c0))}


def soak(minutes: float, rate: float) -> dict:
    """Paced simulator at `rate` msg/s in total, recorder with every channel; RSS samples every 5 s."""
    from recorder.sim.server import run_subprocess

    per = rate / 4  # 2 venues x 2 pairs
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, \
            run_subprocess("--rate", str(per), "--pairs", "BTC_USD,ETH_BTC", "--venues", "btcalpha,bitexbit") as urls:
        tmp = Path(tmp)
        port = free_port()
        venues = {}
        for v in ("btcalpha", "bitexbit"):
            u = urls[v]
            venues[v] = {"pairs": ["BTC_USD", "ETH_BTC"], "ws_url": u, "rest_url": f"{u}/api/v1/",
                         "charts_url": f"{u}/api/charts/", "resolutions": ["1m"], "rate_limit": 20.0}
        write_config(tmp / "r.toml", tmp / "data", port, venues)
        rec = recorder(tmp / "r.toml")
        samples = []
        t0 = time.time()
        while time.time() - t0 < minutes * 60:
            time.sleep(5)
            samples.append((time.time() - t0, *rss_kb(rec.pid)))
        msgs = sum(metric(port, "booktape_messages_total", f"{v}:book") for v in venues)
        rec.send_signal(signal.SIGTERM)
        rec.wait(30)
    warm = [s for s in samples if s[0] >= min(60.0, minutes * 60 * 0.25)]
    head = warm[: max(1, len(warm) // 10)]
    tail = warm[-max(1, len(warm) // 10):]
    start_mb = sum(s[1] for s in head) / len(head) / 1024
    end_mb = sum(s[1] for s in tail) / len(tail) / 1024
    return {"minutes": minutes, "rate": rate, "messages": msgs, "msg_rate": msgs / (minutes * 60),
            "rss_start_mb": start_mb, "rss_end_mb": end_mb, "growth_pct": 100 * (end_mb - start_mb) / start_mb,
            "peak_mb": samples[-1][2] / 1024, "samples": len(samples)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200_000, help="firehose messages")
    ap.add_argument("--pairs", default="BTC_USD,ETH_BTC")
    ap.add_argument("--minutes", type=float, default=2.0, help="memory run length (30 for the full goal)")
    ap.add_argument("--rate", type=float, default=2000.0, help="memory run: messages/s in total")
    ap.add_argument("--runs", type=int, default=3, help="firehose runs, each after its own baseline (the machine drifts)")
    ap.add_argument("--against", metavar="REV", help="also run the recorder of git revision REV after each run's "
                                                      "baseline (a same-run A/B: REV first, then this checkout)")
    args = ap.parse_args()
    rates, ratios, old_rates = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-rev-") as tmp_rev:
        tree = export(args.against, Path(tmp_rev)) if args.against else None
        for _ in range(args.runs):
            base = baseline(args.n, args.pairs)
            print(f"baseline bare engine.io reader: {base['wall']:,.0f} frames/s wall, "
                  f"{base['per_cpu']:,.0f} frames/CPU-s")
            if tree is not None:
                old = firehose(args.n, args.pairs, tree)
                print(f"  {args.against}: {old['per_cpu']:,.0f} msg per recorder CPU-second ({old['cpu_s']:.1f} CPU-s), "
                      f"{old['per_cpu'] / base['per_cpu']:.3f} x the bare reader, exit {old['exit']}")
                old_rates.append(old["per_cpu"])
            rate, ratio = one_run(args, base)
            rates.append(rate)
            ratios.append(ratio)
    print(f"per core over {args.runs} runs: median {statistics.median(rates):,.0f} msg per recorder CPU-second "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f}); median {statistics.median(ratios):.2f} x the bare reader")
    if old_rates:
        print(f"{args.against} over the same runs: median {statistics.median(old_rates):,.0f} msg per recorder "
              f"CPU-second (min {min(old_rates):,.0f}, max {max(old_rates):,.0f}); this checkout / {args.against} = "
              f"{statistics.median(rates) / statistics.median(old_rates):.3f} (medians), per run "
              + ", ".join(f"{a / b:.3f}" for a, b in zip(rates, old_rates)))
    if args.minutes > 0:
        s = soak(args.minutes, args.rate)
        print(f"memory: {s['minutes']:g} min at {s['rate']:,.0f} msg/s target ({s['msg_rate']:,.0f} msg/s recorded): "
              f"RSS {s['rss_start_mb']:.0f} MB after warm-up -> {s['rss_end_mb']:.0f} MB at the end "
              f"({s['growth_pct']:+.1f}%), peak {s['peak_mb']:.0f} MB, {s['samples']} samples")


def one_run(args, base: dict) -> tuple[float, float]:
    """The firehose of this checkout after `base`: (msg per CPU-second, ratio to the bare reader)."""
    fh = firehose(args.n, args.pairs)
    print(f"recorder firehose: {fh['messages']:,} msgs -> raw rows {fh['raw_rows']:,}, "
          f"book_events {fh['book_events']:,}, exit {fh['exit']}")
    print(f"  received: {fh['wall_recv']:,.0f} msg/s wall; into committed Parquet: {fh['wall_durable']:,.0f} msg/s wall")
    print(f"  per core: {fh['per_cpu']:,.0f} msg per recorder CPU-second ({fh['cpu_s']:.1f} CPU-s, all threads);"
          f" {fh['per_cpu'] / base['per_cpu']:.2f} x the bare reader; peak RSS {fh['peak_rss_mb']:.0f} MB")
    return fh["per_cpu"], fh["per_cpu"] / base["per_cpu"]


if __name__ == "__main__":
    main()
