"""Simulator throughput: book messages/s delivered to one websocket client, against engine-only baselines.

The simulator runs unpaced on this process's single event loop (one core); the client is a separate process
(a raw engine.io v3 reader) so it does not share the simulator's core. Run: `.venv/bin/python bench/sim.py`.
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

from recorder.sim.btcalpha import book_frame
from recorder.sim.engine import Market, pair_spec
from recorder.sim.server import SimConfig, Simulator
from recorder.sim.traders import Traders

T0 = 1_700_000_000 * 10**9
CLIENT = r"""
import asyncio, sys, time, aiohttp
async def main(url, n):
    async with aiohttp.ClientSession() as s, s.ws_connect(url, max_msg_size=0) as ws:
        got = 0
        print("ready", flush=True)
        while got < n:
            m = await ws.receive()
            if m.type != aiohttp.WSMsgType.TEXT:
                raise SystemExit(f"socket ended after {got}")
            got += m.data.startswith("42")
        print("done", time.time(), flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def engine_rate(n: int, encode: bool) -> float:
    """Engine events/s (optionally also encoded as BTC-Alpha frames), no I/O."""
    m = Market(pair_spec("BTC_USD"))
    tr = Traders(m, "bench", 1e6, T0)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        evs = tr.run_until(T0 + 10**18, 10_000)
        if encode:
            [book_frame("BTC_USD", m, e) for e in evs]
        done += len(evs)
    return done / (time.perf_counter() - t0)


async def served_rate(n: int) -> tuple[float, float]:
    """(wall msg/s from the first generated event until the external client has read all `n`,
    msg per CPU-second the simulator process spent meanwhile: the rate one dedicated core sustains)."""
    cfg = SimConfig(seed=1, pairs=["BTC_USD"], rate=100_000, start=1_700_000_000, warmup=0.01, paced=False,
                    venues=("btcalpha",))
    async with Simulator(cfg) as sim:
        url = sim.urls["btcalpha"].replace("http", "ws") + "/socket.io/?EIO=3&transport=websocket"
        before = sim.feeds[0].market.seq
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, url, str(n), stdout=subprocess.PIPE)
        assert (await proc.stdout.readline()).startswith(b"ready")
        while not sim.venues["btcalpha"].hub.conns or not next(iter(sim.venues["btcalpha"].hub.conns)).ready:
            await asyncio.sleep(0.01)
        conn = next(iter(sim.venues["btcalpha"].hub.conns))
        t0, c0 = time.time(), time.process_time()
        while sim.feeds[0].market.seq - before < n:
            if len(conn.queue) < 20_000:
                sim.advance(0.1)  # 10,000 events at 100,000/s of logical time
            await asyncio.sleep(0)
        line = await proc.stdout.readline()
        cpu = time.process_time() - c0
        await proc.wait()
        return n / (float(line.split()[1]) - t0), n / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=300_000, help="messages to deliver")
    args = ap.parse_args()
    eng = engine_rate(args.n, False)
    enc = engine_rate(args.n, True)
    served, per_cpu = asyncio.run(served_rate(args.n))
    print(f"engine only (match + trader flow):          {eng:10,.0f} msg/s")
    print(f"engine + BTC-Alpha frame encoding:          {enc:10,.0f} msg/s")
    print(f"served to 1 websocket client, wall clock:   {served:10,.0f} msg/s  "
          f"= {served / eng:.2f} x engine-only, {served / enc:.2f} x engine+encode")
    print(f"served per simulator CPU-second (1 core):   {per_cpu:10,.0f} msg/s  "
          f"= {per_cpu / eng:.2f} x engine-only (goal >= 50,000)")


if __name__ == "__main__":
    main()
