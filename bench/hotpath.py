"""Where a BTC-Alpha book message's CPU goes in the recorder, stage by stage, against floors in the same run.

The ingest goal (>= 100 k msg per recorder CPU-second) is a budget of 10 us a message for everything.
This takes `-n` frames from the firehose simulator (as bench/ingest.py sees them), then times offline,
single-threaded, with the GC tuned as the daemon tunes it:

  floor  json     orjson.loads of each frame: decoding alone, no checks
  floor  minimal  decode, pull the fields into column lists, track a dict book, typed Arrow arrays:
                  the least a pure-Python per-message path can do (no validation, no join, no dedup)
  ours   packet   engine.io / socket.io framing (recorder.transport.engineio.parse_packet)
  ours   venue    the venue parser (recorder.venues.btcalpha.parse_book_event)
  ours   feed     packet + venue + raw/trade rows, dedup, join and book tracking, row building
  ours   columns  the sink's typed columns and the store's validation of them (recorder.feeds.columns)
  compiled burst  the feed's compiled path (recorder.feeds.l3.L3BookFeed._burst: scan, FastBook, rows as
                  columns) on bursts of B frames, then the store's validation of those columns

Socket reading (aiohttp) and the log->Parquet conversion are measured by bench/ingest.py (bare reader
baseline) and bench/store.py. Run: `.venv/bin/python bench/hotpath.py [-n 100000]`.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ingest  # noqa: E402  (bench/ is not a package)

from recorder.daemon import tune_gc  # noqa: E402
from recorder.feeds import columns as C  # noqa: E402
from recorder.feeds.dedup import TradeDedup  # noqa: E402
from recorder.feeds import l3batch  # noqa: E402
from recorder.feeds.join import L3Join  # noqa: E402
from recorder.feeds.l3 import L3BookFeed, warm  # noqa: E402
from recorder.feeds.sink import Sink, Tap  # noqa: E402
from recorder.metrics import Metrics  # noqa: E402
from recorder.store.validate import to_batch  # noqa: E402
from recorder.transport import SocketIOClient  # noqa: E402
from recorder.transport.engineio import parse_packet  # noqa: E402
from recorder.venues import btcalpha  # noqa: E402
from schemas import TABLES  # noqa: E402

FLUSH = 1500  # messages per sink flush: what the daemon's 50 ms linger gathers at ~30 k msg/s


def capture(n: int) -> list[bytes]:
    """n socket.io event frames from the firehose simulator, as received."""
    with tempfile.TemporaryDirectory(prefix="bench-hotpath-") as tmp:
        sim, urls = ingest.start_firehose(Path(tmp), n, "BTC_USD,ETH_BTC")
        ingest.go(sim)  # it streams once the reader below is connected

        async def read() -> list[bytes]:
            out: list[bytes] = []
            async with aiohttp.ClientSession() as s, SocketIOClient(s, urls["btcalpha"], eio=3) as sio:
                while len(out) < n:
                    frame = await sio.recv()
                    if frame.kind == "event":
                        out.append(frame.raw)
            return out

        try:
            return asyncio.run(read())
        finally:
            sim.stdin.close()
            sim.wait(10)


def timed(fn, frames: list) -> float:
    """Best of three runs, in us per message (frames, or what a stage takes per frame)."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        fn(frames)
        best = min(best, time.perf_counter() - t)
    return best / len(frames) * 1e6


def json_only(frames: list[bytes]) -> None:
    loads = orjson.loads
    for raw in frames:
        loads(raw[2:])


def _text(x: object) -> str:
    return x if type(x) is str else repr(x)


def minimal(frames: list[bytes]) -> None:
    """Floor: the fields into columns, a dict book, typed arrays; no validation, join or dedup."""
    loads, now = orjson.loads, time.time_ns
    ts_recv, payload = [], []
    cols: list[list] = [[] for _ in range(9)]
    e_ts, e_act, e_side, e_oid, e_px, e_amt, e_tid, e_taker, e_msg = cols
    book: dict[int, tuple] = {}
    for i, raw in enumerate(frames):
        ts_recv.append(now())
        payload.append(raw)
        _, d = loads(raw[2:])
        date, oid, typ = int(float(d["date"]) * 1e9), d["oid"], d["type"]
        if "cancelled" in d:
            book.pop(oid, None)
            for c, v in zip(cols, (date, "C", typ, oid, _text(d["price"]), _text(d["amount"]), None, None, i)):
                c.append(v)
            continue
        for t in d["trades"]:
            book.pop(t["o_id"], None)
            for c, v in zip(cols, (date, "F", t["type"], t["o_id"], _text(t["price"]), _text(t["amount"]), t["tid"],
                                   oid, i)):
                c.append(v)
        amount = _text(d["amount"])
        if float(amount) > 0:
            book[oid] = (typ, d["price"], amount)
            for c, v in zip(cols, (date, "A", typ, oid, _text(d["price"]), amount, None, None, i)):
                c.append(v)
    pa.array(ts_recv, pa.int64())
    pa.array(payload, pa.binary())
    for c, t in zip(cols, (pa.int64(), pa.string(), pa.string(), pa.int64(), pa.string(), pa.string(), pa.int64(),
                           pa.int64(), pa.int64())):
        pa.array(c, t)


def packet(frames: list[bytes]) -> None:
    for raw in frames:
        parse_packet(raw, 0)


def venue(events: list) -> None:
    for f in events:
        btcalpha.parse_book_event(f.name, f.args[0])


class _Seqs:
    """Stands in for the store's seq lease (the sink's rows are kept, not stored)."""

    def __init__(self) -> None:
        self.n = 0

    def next_seq(self, n: int = 1) -> int:
        self.n += n
        return self.n - n


def feed(frames: list[bytes], keep: list | None = None) -> None:
    """The L3 feed's per-message work (recorder.feeds.l3.L3BookFeed._read without the socket)."""
    sink = Sink(_Seqs(), Metrics(), max_rows=10**9)
    tap = Tap(sink, "btcalpha", "btcalpha:book")
    joins = {p: L3Join() for p in ("BTC_USD", "ETH_BTC")}
    for j in joins.values():
        j.on_snapshot([], time.time_ns())
    dedup = {p: TradeDedup() for p in joins}
    for i, raw in enumerate(frames):
        if i % FLUSH == 0:
            drained = sink.drain()
            if keep is not None:
                keep.append(drained)
        ts = time.time_ns()
        frame = parse_packet(raw, ts)[2]
        parsed = btcalpha.parse_book_event(frame.name, frame.args[0])
        pair = parsed.pair
        seq = tap.raw(1, "ws:btcalpha", pair, ts, frame.raw)
        tap.lag(ts, parsed.ts_event)
        for o in joins[pair].on_message(parsed.events, ts, seq):
            tap.events(pair, 1, o.ts_recv, o.msg_seq, o.events)
        if parsed.trades:
            tap.trades(pair, 1, ts, dedup[pair].fresh(parsed.trades), "socket")


def burst(frames: list[bytes], size: int, keep: list | None = None) -> None:
    """The L3 feed's compiled path on bursts of `size` frames (what recv_batch hands it under load)."""
    sink = Sink(_Seqs(), Metrics(), max_rows=10**9)
    pairs = ["BTC_USD", "ETH_BTC"]
    dedup = {p: TradeDedup() for p in pairs}
    ctx = SimpleNamespace(venue="btcalpha", cfg=SimpleNamespace(pairs=pairs), sink=sink, dedup=dedup.__getitem__)
    fd = L3BookFeed(ctx, btcalpha)
    for j in fd.joins.values():
        j.on_snapshot([], time.time_ns())
    fd._burst_avg = float(size)
    tap = Tap(sink, "btcalpha", "btcalpha:book")
    stamps = [time.time_ns()] * size
    for i in range(0, len(frames), size):
        if i % FLUSH < size:
            drained = sink.drain()
            if keep is not None:
                keep.append(drained)
        chunk = frames[i:i + size]
        fd._burst(tap, 1, "ws:btcalpha", l3batch.pack(chunk, stamps[:len(chunk)]))


def columns(batches: list[dict]) -> None:
    """What the sink's writer does with drained rows before the log: typed columns, store validation."""
    for batch in batches:
        for (table, _, _), chunks in batch.items():
            for c in chunks:
                to_batch(TABLES[table], C.to_columns(table, c) if isinstance(c, list) else c.cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="frames")
    args = ap.parse_args()
    frames = capture(args.n)
    tune_gc()
    n = len(frames)
    floor_json = timed(json_only, frames)
    floor_min = timed(minimal, frames)
    t_packet = timed(packet, frames)
    t_venue = timed(venue, [parse_packet(raw, 0)[2] for raw in frames])
    t_feed = timed(feed, frames)
    batches: list[dict] = []
    feed(frames, batches)
    t = time.perf_counter()
    columns(batches)
    t_cols = (time.perf_counter() - t) / n * 1e6
    ours = t_feed + t_cols
    print(f"{n:,} BTC-Alpha book frames, offline, one thread; us per message (budget for 100 k/CPU-s: 10.0)")
    print(f"  floor json     {floor_json:6.2f}   orjson.loads alone")
    print(f"  floor minimal  {floor_min:6.2f}   fields to columns + dict book + typed arrays, no checks")
    print(f"  ours  packet   {t_packet:6.2f}   engine.io/socket.io framing (includes the JSON decode)")
    print(f"  ours  venue    {t_venue:6.2f}   venue parser, checks included")
    print(f"  ours  feed     {t_feed:6.2f}   packet + venue + join, book, dedup, rows")
    print(f"  ours  columns  {t_cols:6.2f}   typed columns + store validation")
    print(f"  ours  total    {ours:6.2f}   = {ours / floor_min:.1f} x the minimal floor;"
          f" {1e6 / ours:,.0f} msg/s of one core before the socket and Parquet (the per-message path)")
    warm()
    for size in (2048, 256, 64):
        t_burst = timed(lambda f, s=size: burst(f, s), frames)
        kept: list = []
        burst(frames, size, kept)
        t = time.perf_counter()
        columns(kept)
        t_bcols = (time.perf_counter() - t) / n * 1e6
        total = t_burst + t_bcols
        print(f"  compiled burst {size:4d}: {t_burst:5.2f} + columns {t_bcols:4.2f} = {total:5.2f}"
              f"   = {ours / total:.1f} x faster than the per-message path; {total / floor_min:.2f} x the minimal floor")
    gc.unfreeze()  # frozen objects are never freed at exit, and duckdb's bindings report them as leaks


if __name__ == "__main__":
    main()
