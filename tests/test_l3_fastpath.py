"""The L3 feed's compiled burst path writes exactly the rows of its per-message Python path."""
from __future__ import annotations

import asyncio
import random
import re
from decimal import Context, Decimal
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from recorder.feeds import l3batch
from recorder.feeds.dedup import TradeDedup
from recorder.feeds.join import HOUR_NS
from recorder.feeds.l3 import L3BookFeed
from recorder.feeds.sink import Columns, Sink, Tap
from recorder.metrics import Metrics
from recorder.rows import BookEvent, Trade
from recorder.sim.btcalpha import book_frame
from recorder.sim.engine import Market, pair_spec
from recorder.sim.traders import Traders
from recorder.store import Store
from recorder.transport.engineio import parse_packet
from recorder.venues import bitexbit, btcalpha
from schemas import TABLES

PAIRS = ["BTC_USD", "ETH_BTC"]
T0 = 1_700_000_000 * 10**9


def _seqs() -> SimpleNamespace:
    """Stands in for the store's seq lease: n fresh seqs per call, from 0."""
    taken = [0]

    def next_seq(n: int = 1) -> int:
        taken[0] += n
        return taken[0] - n
    return SimpleNamespace(next_seq=next_seq)


def _frames(seconds: float, seed: str) -> list[str]:
    """Simulator frames of two pairs, in time order."""
    out = []
    for p in PAIRS:
        m = Market(pair_spec(p))
        out += [(ev.ts, book_frame(p, m, ev)) for ev in Traders(m, f"{seed}:{p}", 400, T0).run_until(T0 + int(seconds * 1e9))]
    return [f for _, f in sorted(out, key=lambda x: x[0])]


def _feed(mod, store=None) -> tuple[L3BookFeed, Tap, Sink]:
    sink = Sink(store or _seqs(), Metrics(), max_rows=10**9)
    dedups = {p: TradeDedup() for p in PAIRS}
    ctx = SimpleNamespace(venue=mod.__name__.rsplit(".", 1)[1], cfg=SimpleNamespace(pairs=PAIRS, framing="socketio"), sink=sink,
                          dedup=dedups.__getitem__)
    feed = L3BookFeed(ctx, mod)
    for j in feed.joins.values():
        j.on_snapshot([BookEvent(T0, "R")], T0)  # an empty book, joined
    # trades the REST poller already wrote: neither path may write them again
    for p in PAIRS:
        dedups[p].fresh([Trade(None, str(t), "1", "1") for t in range(1000, 1400, 3)])
    return feed, Tap(sink, ctx.venue, f"{ctx.venue}:book"), sink


def _lists(cols) -> list[list]:
    return [(c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c).to_pylist() for c in cols]


def _queued(sink: Sink) -> dict[tuple, list[tuple]]:
    """Every row queued in the sink, by partition."""
    out: dict[tuple, list[tuple]] = {}
    for key, chunks in sink._buf.items():
        for c in chunks:
            out.setdefault(key, []).extend(c if isinstance(c, list) else zip(*_lists(c.cols.values())))
    return out


def _columns_queued(sink: Sink) -> bool:
    return any(isinstance(c, Columns) for chunks in sink._buf.values() for c in chunks)


def _rows(sink: Sink) -> dict[tuple, list[tuple]]:
    return _normal(_queued(sink))


def _normal(out: dict[tuple, list[tuple]]) -> dict[tuple, list[tuple]]:
    """Rows by partition, decimals as Decimal, in seq order. Seqs (and msg_seq) are replaced by their rank
    over all rows: seqs come in blocks whose unused rests are skipped, so only their order counts."""
    seqs = sorted(r[TABLES[k[0]].schema.get_field_index("seq")] for k, rows in out.items() for r in rows)
    rank = {q: i for i, q in enumerate(seqs)}
    assert len(rank) == len(seqs)  # unique
    for key, rows in out.items():
        schema = TABLES[key[0]].schema
        dec = [pa.types.is_decimal(f.type) for f in schema]
        at = {schema.get_field_index(c) for c in ("seq", "msg_seq") if c in schema.names}
        rows = [tuple(rank.get(v) if j in at else Decimal(v) if d and v is not None else v
                      for j, (v, d) in enumerate(zip(r, dec))) for r in rows]
        if key[0] == "sessions":
            # written at wall-clock time; details name raw seqs
            rows = [(None,) + r[1:5] + (re.sub(r"raw seq (\d+)", lambda m: f"raw seq #{rank[int(m[1])]}", r[5]),)
                    for r in rows]
        out[key] = sorted(rows, key=lambda r: r[schema.get_field_index("seq")])
    return out


def _stream(frames: list[str], rng: random.Random) -> tuple[list, list[int]]:
    """Frames with receive times crossing an hour boundary, some repeated, some of other events,
    and near the end some broken (then the pair waits for a snapshot: both paths buffer)."""
    texts, stamps = [], []
    ts = 3 * HOUR_NS - len(frames) * 1_000_000
    for i, f in enumerate(frames):
        ts += rng.randint(1, 3_000_000)
        r = rng.random()
        if r < 0.01:
            f = '42["news",{"text":"hello"}]'  # not a book message: kept raw (rejected), nothing lost
        elif r < 0.02 and i > 0.9 * len(frames):
            f = f[: rng.randint(3, len(f) - 1)]  # truncated: rejected, the pair resyncs
        texts.append(f)
        stamps.append(ts)
        if r > 0.98:
            texts.append(f)  # a repeated message
            stamps.append(ts + 1)
    return texts, stamps


@pytest.mark.parametrize("mod,seed", [(btcalpha, "a"), (bitexbit, "b")])
def test_burst_path_writes_the_rows_of_the_per_message_path(mod, seed: str) -> None:
    rng = random.Random(seed)
    texts, stamps = _stream(_frames(12.0, seed), rng)
    assert len(texts) > 4000
    slow, slow_tap, slow_sink = _feed(mod)
    for t, ts in zip(texts, stamps):
        slow._frame(slow_tap, 7, "ws:x", parse_packet(t.encode(), ts)[2])
    fast, fast_tap, fast_sink = _feed(mod)
    i = 0
    while i < len(texts):
        n = rng.choice([1, 2, 5, 40, 300, 2048])
        fast._burst(fast_tap, 7, "ws:x", l3batch.pack(texts[i:i + n], stamps[i:i + n]))
        i += n
    want, got = _rows(slow_sink), _rows(fast_sink)
    assert want.keys() == got.keys()
    for key in want:
        assert got[key] == want[key], key
    assert sum(len(r) for k, r in want.items() if k[0] == "book_events") > 5000
    assert any(k[0] == "trades" for k in want) and any(r[5] == "rejected" for k, rs in want.items() if k[0] == "raw" for r in rs)
    assert _columns_queued(fast_sink)  # the columns path was taken, not only tuples
    assert fast_sink.metrics.counters == slow_sink.metrics.counters
    for p in PAIRS:
        a, b = slow.joins[p], fast.joins[p]
        assert a.duplicates == b.duplicates and a.anomalies() == b.anomalies()
        b._slow()
        assert (a.book and a.book.state()) == (b.book and b.book.state())


def test_burst_columns_reach_parquet_as_queued(tmp_path) -> None:
    texts, stamps = _stream(_frames(6.0, "p"), random.Random("p"))
    # without the other events: each would cut a compiled run short of the columns path
    texts, stamps = (list(x) for x in zip(*[(t, s) for t, s in zip(texts, stamps) if "news" not in t]))
    with Store(tmp_path, "w") as store:
        feed, tap, sink = _feed(btcalpha, store)
        feed._burst_avg = 1e9  # compiled from the first burst
        for i in range(0, len(texts), 700):
            feed._burst(tap, 7, "ws:x", l3batch.pack(texts[i:i + 700], stamps[i:i + 700]))
        want = _normal(_queued(sink))
        assert _columns_queued(sink)
        asyncio.run(sink.flush())
    stored: dict[tuple, list[tuple]] = {}
    for table in ("raw", "book_events", "trades", "sessions"):
        t = ds.dataset(tmp_path / table, format="parquet", partitioning="hive").to_table()
        cols = _lists(t.select(list(TABLES[table].schema.names)).columns)
        for row, ex, pair in zip(zip(*cols), t.column("exchange").to_pylist(), t.column("pair").to_pylist()):
            stored.setdefault((table, ex, pair), []).append(row)
    assert _normal(stored) == want


def test_decimals_are_assembled_exactly_at_the_edges_of_the_domain() -> None:
    import numpy as np

    rng = random.Random(5)
    hi = [0, 0, 1, 2**32 - 1, 2**32, 2**63 - 1, 10**18] + [rng.randrange(2**63) for _ in range(5000)]
    lo = [0, 1, 10**18 - 1, 10**18 - 1, 0, 10**18 - 1, 5] + [rng.randrange(10**18) for _ in range(5000)]
    got = l3batch.decimals(np.array(hi, np.int64), np.array(lo, np.int64))
    assert got.type == pa.decimal128(38, 18)
    exact = Context(prec=60)
    assert got.to_pylist() == [Decimal(h * 10**18 + m).scaleb(-18, exact) for h, m in zip(hi, lo)]


def test_a_lost_message_gap_starts_when_the_lost_frame_was_received() -> None:
    """Frames after it in its burst are processed later than received; the gap must start before them."""
    frames = _frames(2.0, "g")[:300]
    frames[150] = frames[150][:40]  # broken: BTC_USD's book is lost from here
    stamps = [3 * HOUR_NS + i * 1000 for i in range(len(frames))]
    feed, tap, sink = _feed(btcalpha)
    feed._burst_avg = 1e9
    feed._burst(tap, 7, "ws:x", l3batch.pack(frames, stamps))
    gaps = [r for r in _queued(sink)[("sessions", "btcalpha", "BTC_USD")] if r[4] == "gap"]
    assert [r[0] for r in gaps] == [stamps[150]]


def test_payloads_of_any_subset_of_a_burst_are_its_frames_bytes() -> None:
    """Runs of consecutive frames are sliced, scattered frames gathered: either way, exactly the frames asked for."""
    import numpy as np

    texts = [f'42["book_A_B",{{"n":{i}}}]' + "x" * (i % 7) for i in range(600)]
    packed = l3batch.pack(texts, list(range(600)))
    rng = random.Random(3)
    subsets = [np.arange(600), np.arange(100, 400), np.r_[0:200, 300:500, 599], np.arange(0, 600, 2),
               np.array(sorted(rng.sample(range(600), 250))), np.array([5]), np.zeros(0, np.int64)]
    for frames in subsets:
        got = packed.payloads(frames.astype(np.int64))
        assert got.to_pylist() == [texts[i].encode() for i in frames]
