"""Silent faults (frames discarded with the socket left open) leave the L3 book wrong: the feed notices
from the anomalies, a crossed book, or a grouped snapshot its levels fit at no cut, and resyncs within
seconds: a `resync` row, a fresh snapshot, a count."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402

from recorder import config  # noqa: E402
from recorder.daemon import Daemon  # noqa: E402
from recorder.feeds.join import L3Join  # noqa: E402
from recorder.rows import BookEvent  # noqa: E402
from recorder.sim.faults import Fault  # noqa: E402
from recorder.sim.server import SimConfig  # noqa: E402

pytestmark = pytest.mark.faults  # recordings under injected faults: make faults (run by .ci/run)

PAIRS = ["BTC_USD", "ETH_BTC"]


def btcalpha_config(root, url: str, channels: list[str], **venue):
    """The recorder on the simulator's btcalpha alone, with the given channels."""
    return config.parse({"recorder": {"root": str(root), "fsync_interval": 0.2},
                         "venues": {"btcalpha": {"pairs": PAIRS, "channels": channels, "ws_url": url,
                                                 "rest_url": f"{url}/api/v1/", "heartbeat": 10.0,
                                                 "rate_limit": 20.0, **venue}}}, env={})


async def started(d: Daemon) -> asyncio.Task:
    """The daemon's run task, once its L3 book holds orders (up to 30 s)."""
    task = asyncio.create_task(d.run())
    deadline = time.monotonic() + 30
    while d.metrics.gauges.get(("book_orders", "btcalpha:book"), 0) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return task


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", [Fault("stall", "btcalpha", seconds=3.0), Fault("reorder", "btcalpha", count=300)],
                         ids=["stall", "reorder"])
def test_a_silent_fault_is_noticed_and_resynced_within_seconds(tmp_path, fault):
    with threaded_sim(SimConfig(seed=4, pairs=PAIRS, rate=50.0)) as ts:
        a = ts.sim.urls["btcalpha"]
        cfg = btcalpha_config(tmp_path / "data", a, ["book"])

        async def main():
            d = Daemon(cfg)
            task = await started(d)
            await asyncio.sleep(1.0)
            t_fault = time.time_ns()
            ts.call(ts.sim.inject, fault)
            deadline = time.monotonic() + 15
            while d.metrics.value("resyncs", "btcalpha:book") == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            noticed = time.monotonic() - (deadline - 15)
            await asyncio.sleep(4.0)  # the fresh snapshot is joined
            d.stop()
            return await asyncio.wait_for(task, 20), t_fault, noticed, d.metrics.value("resyncs", "btcalpha:book")

        code, t_fault, noticed, resyncs = asyncio.run(main())
    assert code == 0
    print(f"{fault.kind}: noticed after {noticed:.1f}s, {resyncs:g} resyncs")
    assert resyncs >= 1, "a fault that left the book wrong must be noticed"
    assert noticed < 10.0, f"noticed {noticed:.1f}s after the stall began"
    con = duckdb.connect()
    rows = con.execute(f"SELECT pair, kind, detail, seq FROM read_parquet('{tmp_path}/data/sessions/**/*.parquet', "
                       f"hive_partitioning=true) WHERE epoch_ns(ts) >= {t_fault} AND kind IN ('resync', 'snapshot', "
                       "'disconnect') ORDER BY seq").fetchall()
    assert not [r for r in rows if r[1] == "disconnect" and r[2] != "stopping"], "resynced on the same connection"
    resynced = [p for p, k, _, _ in rows if k == "resync"]
    assert resynced, rows
    p = resynced[0]
    after = [k for q, k, _, _ in rows if q == p][[k for q, k, _, _ in rows if q == p].index("resync"):]
    assert "snapshot" in after, f"the resync must be followed by a fresh snapshot of {p}: {rows}"
    detail = next(d for q, k, d, _ in rows if q == p and k == "resync")
    assert "anomal" in detail or "crossed" in detail


def ev(action, oid, side="bid", price="100", amount="1"):
    return BookEvent(1, action, side, oid, price, amount)


def test_a_crossed_book_is_seen_on_both_book_paths():
    j = L3Join()
    j.on_snapshot([BookEvent(1, "R"), ev("S", 1, "bid", "100"), ev("S", 2, "ask", "101")], 10)
    assert j.crossed() is False
    j.on_message([ev("A", 3, "ask", "99.5")], 11, 1)
    assert j.crossed() is True
    assert j.go_fast() and j.fast is not None
    assert j.crossed() is True  # the compiled book's answer is the same
    j.on_message([ev("C", 3, "ask", "99.5", "0")], 12, 2)
    assert j.crossed() is False


@pytest.mark.timeout(150)
def test_a_lost_cancel_behind_the_best_is_noticed_by_the_grouped_snapshots_alone(tmp_path):
    """A cancel of an order ten levels behind the best never arrives (socket open): no anomaly, no crossed
    book, the stream stays plausible. The grouped snapshot taken next shows the level without it: a `resync`
    row naming the grouped snapshot within seconds, a fresh snapshot, and `replay verify` passes after it."""
    root = tmp_path / "data"
    with threaded_sim(SimConfig(seed=4, pairs=PAIRS, rate=50.0)) as ts:
        a = ts.sim.urls["btcalpha"]
        cfg = btcalpha_config(root, a, ["book", "grouped"], grouped_interval=1.0)

        async def main():
            d = Daemon(cfg)
            task = await started(d)
            await asyncio.sleep(5.0)  # clean grouped snapshots, checked: none may resync
            clean = d.metrics.value("resyncs", "btcalpha:book")
            t_fault = time.time_ns()
            ts.call(ts.sim.inject, Fault("lose", "btcalpha"))
            deadline = time.monotonic() + 15
            while d.metrics.value("resyncs", "btcalpha:book") == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            noticed = time.monotonic() - (deadline - 15)
            await asyncio.sleep(8.0)  # the fresh snapshot is joined, and grouped snapshots are taken after it
            d.stop()
            return (await asyncio.wait_for(task, 20), clean, t_fault, noticed,
                    d.metrics.value("resyncs", "btcalpha:book"), d.metrics.value("book_anomalies", "btcalpha:book"))

        code, clean, t_fault, noticed, resyncs, anomalies = asyncio.run(main())
        lost = ts.sim.faults["btcalpha"].lose
    assert code == 0
    print(f"lose: noticed after {noticed:.1f}s, {resyncs:g} resyncs, {anomalies:g} anomalies")
    assert lost == 0, "the fault must have taken a cancel"
    assert clean == 0, "a resync before the fault is a false one"
    assert resyncs == 1, "one lost cancel, one resync"
    assert anomalies == 0, "the stream stayed plausible: only a snapshot could tell"
    assert noticed < 6.0, f"noticed {noticed:.1f}s after the cancel was lost"
    con = duckdb.connect()
    rows = con.execute(f"SELECT pair, kind, detail, epoch_ns(ts) FROM read_parquet('{root}/sessions/**/*.parquet', "
                       "hive_partitioning=true) WHERE kind IN ('resync', 'snapshot', 'gap', 'disconnect') "
                       "ORDER BY seq").fetchall()
    lost_rows = [r for r in rows if r[1] == "gap" or
                 (r[1] == "disconnect" and r[2] not in ("stopping", "poller stopped"))]
    assert lost_rows == [], "resynced on the same connection"
    resync = [r for r in rows if r[1] == "resync"]
    assert len(resync) == 1 and resync[0][3] >= t_fault, rows
    pair, _, detail, _ = resync[0]
    assert detail.startswith("grouped snapshot (raw seq ") and "level" in detail, detail
    after = [r for r in rows if r[0] == pair and r[1] == "snapshot" and r[3] > resync[0][3]]
    assert after and after[0][2].startswith("R+S"), f"the resync must be followed by a fresh snapshot: {rows}"

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from replay.cli import main; main()", "verify", "--root",
                               str(root), "--exchange", "btcalpha", "--pair", pair],
                              capture_output=True, text=True, timeout=120)

    # replay verify agrees: that snapshot fits the replayed book nowhere either (the resync was not a false one)
    seq = detail.removeprefix("grouped snapshot (raw seq ").split(")")[0]
    r = verify()
    assert r.returncode == 1 and f"mismatch: snapshot {seq} " in r.stdout, (detail, r.stdout)
    # replay verify over what came after the fresh snapshot: the grouped snapshots taken before it go
    for f in (root / "book_levels").rglob("*.parquet"):
        tab = pq.read_table(f)
        pq.write_table(tab.filter(pc.greater(tab.column("ts_recv").cast("int64"), after[0][3])), f)
    r = verify()
    assert r.returncode == 0 and "verify ok" in r.stdout, (r.stdout, r.stderr)
