"""Store benchmark: log ingest rate (fsync on), end-to-end Parquet rate, bytes/row, files per hour.

Run: .venv/bin/python bench/store.py [--rows N]   (prints figures; baseline = plain pq.write_table)
     .venv/bin/python bench/store.py --compact-only [--compact-rows N]   (only the compaction memory figure)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recorder.store import Store
from recorder.store.writer import segment_file_name, write_file
from schemas import BOOK_EVENTS, DEC, RAW

T0 = 1_710_265_800 * 10**9  # 2024-03-12 17:50 UTC: the run crosses an hour boundary


def _dec(units: np.ndarray, scale: int) -> pa.Array:
    """int64 count of 10^-scale units → DECIMAL(38,18), exactly (relabel the scale, then widen)."""
    raw = pa.array(units, pa.int64()).cast(pa.decimal128(38, 0))
    return pa.Array.from_buffers(pa.decimal128(38, scale), len(raw), raw.buffers()).cast(DEC)


def book_events(n: int, seed: int = 1) -> pa.Table:
    """book_events-shaped rows: bursts of messages, A/C/F mix, sparse ids, tick-grid prices."""
    rng = np.random.default_rng(seed)
    per_msg = rng.choice([1, 1, 1, 2, 3], size=n)
    msg_of_row = np.repeat(np.arange(n), per_msg)[:n]
    first_row = np.r_[True, msg_of_row[1:] != msg_of_row[:-1]]
    n_msg = msg_of_row[-1] + 1
    gaps = rng.lognormal(np.log(400_000), 1.2, n_msg).astype(np.int64) + 1_000  # µs..ms apart
    ts_recv_msg = T0 + np.cumsum(gaps)
    ts_recv = ts_recv_msg[msg_of_row]
    latency = rng.lognormal(np.log(8_000_000), 0.6, n_msg).astype(np.int64)
    ts_event = ((ts_recv_msg - latency) // 1000 * 1000)[msg_of_row]
    seq = np.arange(n) + msg_of_row + 1_000  # one raw-message seq before each message's rows
    msg_seq = np.maximum.accumulate(np.where(first_row, seq - 1, 0))
    session = 1 + (np.arange(n) // 2_000_000) * 7_919
    action = rng.choice(np.array(["A", "C", "F"]), size=n, p=[0.5, 0.4, 0.1])
    side = rng.choice(np.array(["bid", "ask"]), size=n)
    new_ids = 1_000_000_000 + np.cumsum(rng.integers(1, 400, size=n))
    back = np.minimum(rng.geometric(0.002, size=n), np.arange(n))
    order_id = np.where(action == "A", new_ids, new_ids[np.arange(n) - back])
    mid = 6_500_000 + np.cumsum(rng.integers(-3, 4, size=n))  # cents
    offset = rng.geometric(0.15, size=n) - 1
    price_cents = np.where(side == "bid", mid - offset, mid + 1 + offset)
    amount_sat = np.maximum(1, np.round(rng.lognormal(np.log(0.05), 1.5, size=n), 4) * 1e8).astype(np.int64)
    fill = action == "F"
    trade_id = np.where(fill, 50_000_000 + np.cumsum(fill), 0)
    taker = np.where(fill, new_ids + 17, 0)
    return pa.table({
        "ts_event": pa.array(ts_event, BOOK_EVENTS.schema.field("ts_event").type),
        "ts_recv": pa.array(ts_recv, BOOK_EVENTS.schema.field("ts_recv").type),
        "seq": pa.array(seq, pa.int64()),
        "session": pa.array(session, pa.int64()),
        "msg_seq": pa.array(msg_seq, pa.int64()),
        "action": pa.array(action, pa.string()),
        "side": pa.array(side, pa.string()),
        "order_id": pa.array(order_id, pa.int64()),
        "price": _dec(price_cents, 2),
        "amount": _dec(amount_sat, 8),
        "trade_id": pa.array(trade_id, pa.int64(), mask=~fill),
        "taker_order_id": pa.array(taker, pa.int64(), mask=~fill),
    }, schema=BOOK_EVENTS.schema)


def batches(t: pa.Table, size: int) -> list[dict]:
    """The table as append() column mappings of Arrow arrays, `size` rows each."""
    out = []
    for b in t.to_batches(max_chunksize=size):
        out.append({name: b.column(i) for i, name in enumerate(b.schema.names)})
    return out


def du(root: Path) -> tuple[int, list[Path]]:
    files = [p for p in root.rglob("*.parquet") if "_log" not in p.parts]
    return sum(p.stat().st_size for p in files), files


def fsynced_write(t: pa.Table, path: Path, **opts) -> None:
    pq.write_table(t, path, **opts)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


HOUR0 = 1_710_262_800 * 10**9  # 2024-03-12 17:00 UTC

#: Runs in a fresh process so its peak RSS (VmHWM) and pool peak are the compaction's alone.
_COMPACT_CHILD = r"""
import json, sys
from pathlib import Path
import pyarrow as pa
from recorder.store import compact
from schemas import TABLES

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

root = Path(sys.argv[1])
pool = pa.default_memory_pool()
out = dict(rss0=rss("VmRSS:"), pool0=pool.max_memory(), backend=pool.backend_name)
for name, d in json.loads(sys.argv[2]):
    assert compact.compact_hour(root, TABLES[name], Path(d), 17)
out.update(hwm=rss("VmHWM:"), rss1=rss("VmRSS:"), pool_peak=pool.max_memory(), pool_after=pool.bytes_allocated())
print(json.dumps(out))
"""


def raw_rows(n: int, payload: int = 1024, seed: int = 2) -> pa.Table:
    """raw-shaped rows with `payload`-byte incompressible payloads."""
    rng = np.random.default_rng(seed)
    body = rng.integers(0, 256, size=n * payload, dtype=np.uint8).tobytes()
    payloads = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(
        (np.arange(n + 1, dtype=np.int32) * payload).tobytes()), pa.py_buffer(body)])
    return pa.table({
        "ts_recv": pa.array(HOUR0 + np.arange(n) * (3_000_000_000_000 // n), RAW.schema.field("ts_recv").type),
        "seq": pa.array(np.arange(n) * 3, pa.int64()), "session": pa.array(np.ones(n, np.int64)),
        "stream": pa.array(["ws:book_BTC_USD"] * n), "request": pa.nulls(n, pa.string()),
        "status": pa.array(["ok"] * n), "reason": pa.nulls(n, pa.string()), "payload": payloads,
    }, schema=RAW.schema)


def write_hour(root: Path, tables: dict[str, pa.Table], segments: int) -> list[tuple[str, str]]:
    """Each table as `segments` consecutive segment files of hour 17 (as conversion leaves them)."""
    dirs = []
    for name, t in tables.items():
        d = root / name / "exchange=btcalpha" / "pair=BTC_USD" / "date=2024-03-12"
        step = -(-t.num_rows // segments)
        for i in range(segments):
            write_file(d / segment_file_name(17, "w", i + 1), BOOK_EVENTS if name == "book_events" else RAW,
                       t.slice(i * step, step))
        dirs.append((name, str(d)))
    return dirs


def compaction_peak(work: Path, n_events: int, n_raw: int, segments: int = 24) -> None:
    """Figure: compaction peak memory for one big hour (book_events + raw with 1 KB payloads)."""
    ev = book_events(n_events)
    span = 3_000_000_000_000 // max(1, n_events)
    ev = ev.set_column(1, BOOK_EVENTS.schema.field("ts_recv"), pa.array(HOUR0 + np.arange(n_events) * span,
                                               BOOK_EVENTS.schema.field("ts_recv").type))
    tables = {"book_events": ev, "raw": raw_rows(n_raw)}
    arrow = sum(t.nbytes for t in tables.values())
    dirs = write_hour(work / "hour", tables, segments)
    del tables, ev
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _COMPACT_CHILD, str(work / "hour"), json.dumps(dirs)],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if p.returncode:
        raise SystemExit(f"compaction child failed:\n{p.stderr}")
    r = json.loads(p.stdout)
    secs = time.perf_counter() - t0
    mb = 1 << 20
    print(f"compaction peak memory for a {n_events + n_raw:,}-row hour ({n_events:,} book_events + {n_raw:,} raw "
          f"with 1 KB payloads, {segments} segment files per table, {arrow / mb:,.0f} MB of Arrow data): "
          f"pool peak {r['pool_peak'] / mb:,.1f} MB ({r['backend']}), RSS peak - RSS before "
          f"{(r['hwm'] - r['rss0']) / mb:,.1f} MB, RSS after - before {(r['rss1'] - r['rss0']) / mb:,.1f} MB, "
          f"pool after {r['pool_after'] / mb:,.1f} MB; {secs:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--compact-rows", type=int, default=4_000_000,
                    help="book_events rows of the compaction-memory hour (raw rows: a quarter as many)")
    ap.add_argument("--compact-only", action="store_true", help="only the compaction memory figure")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    if args.compact_only:
        compaction_peak(work, args.compact_rows, args.compact_rows // 4)
        shutil.rmtree(work)
        return
    data = book_events(args.rows)
    n = data.num_rows
    span_h = (data["ts_recv"][-1].value - data["ts_recv"][0].value) / 3.6e12
    print(f"book_events rows: {n:,} over {span_h:.2f} h of ts_recv; append batches of {args.batch} rows")
    cols = batches(data, args.batch)

    # 1. into the durable log (background fsync every 1 s, final flush), no conversion during the run
    big = 1 << 40
    with Store(work / "log", "bench", max_pending_bytes=big, segment_bytes=big, seal_interval=1e9) as s:
        c0, t0 = time.thread_time(), time.perf_counter()
        for c in cols:
            s.append("book_events", "btcalpha", "BTC_USD", c)
        s.flush()
        log_s, log_cpu = time.perf_counter() - t0, time.thread_time() - c0
        logged = s.stats["bytes_logged"]
        small = batches(data.slice(0, 200_000), 10)
        t1 = time.perf_counter()
        for c in small:
            s.append("book_events", "btcalpha", "BTC_USD", c)
        s.flush()
        small_s = time.perf_counter() - t1
    print(f"log ingest (fsync on): {n / log_s:,.0f} rows/s wall, {n / log_cpu:,.0f} rows/s per core of "
          f"caller CPU, {logged / n:.1f} log B/row; 10-row batches: {200_000 / small_s:,.0f} rows/s")

    # 2. end to end: append → log → Parquet (converted, fsynced, renamed, compacted) on close()
    t0 = time.perf_counter()
    with Store(work / "e2e", "bench") as s:
        for c in cols:
            s.append("book_events", "btcalpha", "BTC_USD", c)
    e2e_s = time.perf_counter() - t0
    st = s.stats
    size, files = du(work / "e2e")
    per_hour: dict = {}
    for f in files:
        per_hour[(f.parent, f.name[:3])] = per_hour.get((f.parent, f.name[:3]), 0) + 1
    print(f"end to end to durable Parquet: {n / e2e_s:,.0f} rows/s ({st['segments_converted']} segments, "
          f"{st['files_written']} files written, {st['compactions']} compactions)")
    print(f"files per partition-hour after compaction: max {max(per_hour.values())} over {len(per_hour)} "
          f"partition-hours")

    # 3. baselines: plain pq.write_table of the same rows (default settings, then zstd), fsynced
    t0 = time.perf_counter()
    fsynced_write(data, work / "base.parquet")
    base_s = time.perf_counter() - t0
    base = (work / "base.parquet").stat().st_size
    fsynced_write(data, work / "base_zstd.parquet", compression="zstd")
    base_z = (work / "base_zstd.parquet").stat().st_size
    print(f"bytes/row on disk: store {size / n:.2f}; baseline pq.write_table default {base / n:.2f} "
          f"(store is {base / size:.2f}x smaller), zstd default {base_z / n:.2f} ({base_z / size:.2f}x)")
    print(f"baseline pq.write_table default (one fsynced file, no log, no partitioning): {n / base_s:,.0f} rows/s; "
          f"store end to end / baseline = {base_s / e2e_s:.2f}")
    del data, cols
    compaction_peak(work, args.compact_rows, args.compact_rows // 4)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
