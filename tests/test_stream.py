"""Streaming replay (replay.stream): row group after row group, byte-identical to the whole-hour path."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.store.writer import write_options
from replay import book as B
from replay import kernels as K
from replay import outputs, source, stream
from replay_util import T0, events_table, rows_table, synth_l3
from schemas import TABLES

EX, PAIR = "sim", "BTC_USD"
HOUR = source.HOUR_NS
H0 = T0 - T0 % HOUR


def _variant(s: dict, kind: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Prices/amounts at scales 3/5 whose finest digits appear only late in the hour (a batch rescales the book),
    with prices that drift out of the first batches' range ('drift') or far beyond the direct range ('wide')."""
    n = len(s["seq"])
    px, amt = s["price"] * 10, s["amount"] * 10
    late = (np.arange(n) > n // 3) & (s["act"] == K.A)
    px[late & (np.arange(n) % 7 == 0)] += 3  # new levels between the old ticks; fills there count fill_price
    amt[late & (np.arange(n) % 11 == 0)] -= 3  # fills of these then overfill
    far = late & (np.arange(n) % 101 == 0)
    away = 2_000_000 * 10 if kind == "wide" else 40_000  # far from the touch: asks up, bids down
    px[far] += np.where(s["side"][far] == 1, away, -away)
    px[s["act"] == K.R] = 0
    amt[s["act"] == K.R] = 0
    return px, amt, 3, 5


def _table(s: dict, px: np.ndarray, amt: np.ndarray, pk: int, ak: int) -> pa.Table:
    tab = events_table(s)
    isr = s["act"] == K.R
    i = tab.schema.get_field_index
    tab = tab.set_column(i("price"), "price", B.to_dec(px, pk, ~isr))
    return tab.set_column(i("amount"), "amount", B.to_dec(amt, ak, ~isr))


def _write_dataset(root, kind: str) -> list[int]:
    """Two hours in two files (non-overlapping seqs, one duplicate row across them, hour 2 partly in file 1),
    small row groups, store write options, and a disconnect in mid hour 1. Returns the hours."""
    s = synth_l3(60_000, seed=3, hours=2)
    tab = _table(s, *_variant(s, kind))
    n = tab.num_rows
    cut = int(n * 0.55)
    part = source.partition_dir(root, "book_events", EX, PAIR, source.date_of(T0))
    part.mkdir(parents=True)
    opts = dict(write_options(TABLES["book_events"]), row_group_size=4_000)
    pq.write_table(tab.slice(0, cut), part / "h14-a-1.parquet", **opts)
    pq.write_table(tab.slice(cut - 1), part / "h14-a-2.parquet", **opts)  # first row repeats the last of file 1
    mid = int(s["seq"][n // 5])
    sess = rows_table("sessions", [dict(ts=int(s["ts"][n // 5]), stream="sim:BTC_USD:book", seq=mid + 1, session=1,
                                        kind="disconnect", detail="test")])
    sp = source.partition_dir(root, "sessions", EX, PAIR, source.date_of(T0))
    sp.mkdir(parents=True)
    pq.write_table(sess, sp / "s.parquet")
    return [H0, H0 + HOUR]


def _outputs(root, hour: int) -> dict[str, bytes]:
    out = {}
    for t in ("bbo", "depth"):
        p = outputs.hour_path(root, t, EX, PAIR, hour)
        if p.exists():
            out[t] = p.read_bytes()
    return out


@pytest.mark.parametrize("kind", ["drift", "wide"])
@pytest.mark.parametrize("depth", [B.Depth(5, None), B.Depth(10, 1_000_000_000)], ids=["every-event", "1s"])
def test_streamed_hours_are_byte_identical_to_the_whole_hour_path(tmp_path, monkeypatch, kind, depth):
    a, b = tmp_path / "stream", tmp_path / "whole"
    hours = _write_dataset(a, kind)
    shutil.copytree(a, b)
    # small cuts so parts and row groups cross batch boundaries
    monkeypatch.setattr(B, "SAMPLE_CHUNK", 1_500)
    monkeypatch.setattr(outputs, "ROW_GROUP", 3_000)
    monkeypatch.setattr(stream, "BATCH_ROWS", 4_096)
    dups = 0
    for h in hours:
        groups = stream.plan(a, EX, PAIR, h)
        assert groups is not None and sum(1 for _ in stream.batches(groups, h)) > 5
        got = outputs.hour_job(str(a), EX, PAIR, h, "l3", True, depth, False, True)
        with monkeypatch.context() as m:
            m.setattr(stream, "plan", lambda *args: None)  # the whole-hour path, today's code
            want = outputs.hour_job(str(b), EX, PAIR, h, "l3", True, depth, False, True)
        assert (got.rows, got.duplicates, got.digest) == (want.rows, want.duplicates, want.digest)
        assert got.anomalies == want.anomalies and got.first == want.first
        assert got.rows > 10_000 and sum(want.anomalies.values()) > 0
        ga, wa = _outputs(a, h), _outputs(b, h)
        assert set(ga) == {"bbo", "depth"} and ga == wa
        assert pq.read_metadata(outputs.hour_path(a, "bbo", EX, PAIR, h)).num_row_groups > 2
        dups += got.duplicates
    assert dups == 1


def test_overlapping_files_are_not_streamed(tmp_path):
    s = synth_l3(2_000, seed=1)
    tab = events_table(s)
    part = source.partition_dir(tmp_path, "book_events", EX, PAIR, source.date_of(T0))
    part.mkdir(parents=True)
    opts = write_options(TABLES["book_events"])
    pq.write_table(tab.take(np.arange(0, tab.num_rows, 2)), part / "a.parquet", **opts)
    assert stream.plan(tmp_path, EX, PAIR, H0) is not None
    pq.write_table(tab.take(np.arange(1, tab.num_rows, 2)), part / "b.parquet", **opts)
    assert stream.plan(tmp_path, EX, PAIR, H0) is None  # interleaved seqs: only the whole-hour sort merges them
    pq.write_table(tab, part / "b.parquet")  # no sorting metadata: not trusted to be in seq order
    (part / "a.parquet").unlink()
    assert stream.plan(tmp_path, EX, PAIR, H0) is None
    res = outputs.hour_job(str(tmp_path), EX, PAIR, H0, "l3", True, None, False, True)
    assert res.rows == tab.num_rows


def test_hour_replay_holds_a_row_group_not_the_hour(tmp_path, monkeypatch):
    """Arrow memory while replaying an hour with bbo + depth stays near one row group's worth, not the hour's."""
    monkeypatch.setattr(outputs, "ROW_GROUP", 10_000)
    monkeypatch.setattr(stream, "BATCH_ROWS", 20_000)
    s = synth_l3(400_000, seed=5)
    tab = events_table(s)
    part = source.partition_dir(tmp_path, "book_events", EX, PAIR, source.date_of(T0))
    part.mkdir(parents=True)
    pq.write_table(tab, part / "h.parquet", **dict(write_options(TABLES["book_events"]), row_group_size=20_000))
    hour_bytes = tab.select(source.EVENT_COLUMNS).nbytes
    pool = pa.default_memory_pool()
    outputs.hour_job(str(tmp_path), EX, PAIR, H0, "l3", True, B.Depth(10, 10**9), False, True)  # warm
    pool.release_unused()
    base = pa.total_allocated_bytes()
    peak = [0]
    real = stream.Stream.feed

    def feed(self, *a, **k):
        real(self, *a, **k)
        peak[0] = max(peak[0], pa.total_allocated_bytes() - base)
    monkeypatch.setattr(stream.Stream, "feed", feed)
    outputs.hour_job(str(tmp_path), EX, PAIR, H0, "l3", True, B.Depth(10, 10**9), False, True)
    assert 0 < peak[0] < hour_bytes / 4, (peak[0], hour_bytes)
