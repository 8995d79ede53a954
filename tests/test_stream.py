"""Streaming replay (replay.stream): row group after row group, byte-identical to the whole-hour path."""
from __future__ import annotations

import shutil
from decimal import Decimal

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


@pytest.mark.parametrize("what", ["bbo+depth", "verify", "book_at"])
def test_hour_replay_holds_a_row_group_not_the_hour(tmp_path, monkeypatch, what):
    """Arrow memory while replaying an hour with bbo + depth, verifying it or taking its last book stays near one
    row group's worth, not the hour's."""
    monkeypatch.setattr(outputs, "ROW_GROUP", 10_000)
    monkeypatch.setattr(stream, "BATCH_ROWS", 20_000)
    s = synth_l3(400_000, seed=5)
    tab = events_table(s)
    part = source.partition_dir(tmp_path, "book_events", EX, PAIR, source.date_of(T0))
    part.mkdir(parents=True)
    pq.write_table(tab, part / "h.parquet", **dict(write_options(TABLES["book_events"]), row_group_size=20_000))
    rows = [r for i in range(1, 400_000, 5_000) for r in
            _snapshot_rows(int(s["seq"][i]), int(s["ts"][i]), {"bid": [("60000", "1")], "ask": [("60001", "2")]})]
    lp = source.partition_dir(tmp_path, "book_levels", EX, PAIR, source.date_of(T0))
    lp.mkdir(parents=True)
    pq.write_table(rows_table("book_levels", rows), lp / "g.parquet")
    hour_bytes = tab.select(source.EVENT_COLUMNS).nbytes
    root = str(tmp_path)
    job = {"bbo+depth": lambda: outputs.hour_job(root, EX, PAIR, H0, "l3", True, B.Depth(10, 10**9), False, True),
           "verify": lambda: outputs.hour_job(root, EX, PAIR, H0, "l3", False, None, True, False),
           "book_at": lambda: B.book_at(root, EX, PAIR, int(s["ts"][-1]))}[what]
    pool = pa.default_memory_pool()
    job()  # warm
    pool.release_unused()
    base = pa.total_allocated_bytes()
    peak = [0]
    real = stream.Stream.feed

    def feed(self, *a, **k):
        real(self, *a, **k)
        peak[0] = max(peak[0], pa.total_allocated_bytes() - base)
    monkeypatch.setattr(stream.Stream, "feed", feed)
    res = job()
    assert 0 < peak[0] < hour_bytes / 4, (peak[0], hour_bytes)
    if what == "verify":
        assert res.checked > 50 and len(res.mismatches) == res.checked

def _forbid_whole_hour(monkeypatch) -> None:
    """The whole-hour path (the oracle) may not run: what follows must be streamed."""
    def whole(*a, **k):
        raise AssertionError("the whole-hour path ran")
    monkeypatch.setattr(B, "replay_hour", whole)


def _snapshot_rows(sid: int, ts: int, levels: dict) -> list[dict]:
    return [dict(ts_event=ts, ts_recv=ts, seq=sid, session=2, snapshot_id=sid, side=side, level=i, price=str(p),
                 amount=str(a), source="rest_grouped") for side, lv in levels.items() for i, (p, a) in enumerate(lv)]


def _verify_hour(root, monkeypatch) -> dict:
    """One hour of three synthetic hours pressed together (resnapshots R + S at 1/3 and 2/3), scales that get finer
    late in the hour, one file in row groups of 2,000 rows streamed in batches of 2,048; a disconnect in the first
    third (a gap until the resnapshot; its row dated just before its event, so instants before that event see a
    late gap) and a resync in the second; grouped snapshots around batch edges, the gap, the resnapshots, before the
    first event, exact, wrong, finer than the book's scale, and the book a few events later."""
    monkeypatch.setattr(stream, "BATCH_ROWS", 2_048)
    s = synth_l3(30_000, seed=7, hours=3)
    s["ts"] = H0 + 10**8 + (s["ts"] - H0) // 3  # the first event 0.1 s into the hour
    tab = _table(s, *_variant(s, "drift"))
    n = tab.num_rows
    seq, ts = tab.column("seq").to_numpy(), tab.column("ts_recv").cast(pa.int64()).to_numpy()
    act = s["act"]
    resnap = np.nonzero(act == K.R)[0]
    assert len(resnap) == 3
    part = source.partition_dir(root, "book_events", EX, PAIR, source.date_of(T0))
    part.mkdir(parents=True)
    pq.write_table(tab, part / "h14.parquet", **dict(write_options(TABLES["book_events"]), row_group_size=2_000))
    groups = stream.plan(root, EX, PAIR, H0)
    edges = np.cumsum([t.num_rows for t, _ in stream.batches(groups, H0)])[:-1]
    assert len(edges) > 10
    d, r = n // 6, n // 2  # the disconnect, the resync
    sess = [dict(ts=int(ts[d]) - 1, stream="sim:BTC_USD:book", seq=int(seq[d]) + 1, session=1, kind="disconnect"),
            dict(ts=int(ts[r]), stream="sim:BTC_USD:book", seq=int(seq[r]) + 1, session=1, kind="resync")]
    sp = source.partition_dir(root, "sessions", EX, PAIR, source.date_of(T0))
    sp.mkdir(parents=True)
    pq.write_table(rows_table("sessions", sess), sp / "s.parquet")
    cuts = sorted({int(c) for e in edges[::3] for c in (e - 1, e, e + 1)} |
                  {int(c) for c in (1, d - 3, d, d + 40, r - 2, r + 30, resnap[1] + 5, resnap[1] + 400, resnap[2] - 1,
                                    resnap[2] + 3, n - 1)})
    rows = _snapshot_rows(int(seq[0]) - 1, int(ts[0]), {"bid": [("1", "1")], "ask": []})  # before the first event
    for i, c in enumerate(cuts):
        ahead = 3 if i % 5 == 3 else 0
        lv = B.replay_events(tab.slice(0, c + ahead)).book.levels(4 + i % 3)
        want = {k: [(p, a) for p, a, _ in v] for k, v in lv.items()}
        if i % 5 == 1 and len(want["bid"]) > 1:  # wrong amount
            want["bid"][1] = (want["bid"][1][0], want["bid"][1][1] + 1)
        if i % 5 == 2 and want["ask"]:  # finer than any scale of the hour: never representable
            want["ask"][0] = (want["ask"][0][0], want["ask"][0][1] + Decimal("1e-9"))
        rows += _snapshot_rows(int(seq[c - 1]) + 1, int(ts[c - 1]), want)
    lp = source.partition_dir(root, "book_levels", EX, PAIR, source.date_of(T0))
    lp.mkdir(parents=True)
    pq.write_table(rows_table("book_levels", rows), lp / "g.parquet")
    return dict(tab=tab, ts=ts, seq=seq, edges=edges, d=d, r=r, resnap=resnap)


@pytest.mark.parametrize("window", [2 * 10**9, 600 * 10**9], ids=["2s", "10min"])
def test_streamed_verify_equals_the_whole_hour_verify(tmp_path, monkeypatch, window):
    """Found: verify read the whole hour into memory (2.7 GB for 19 M events). Streamed, it gives the whole-hour
    path's mismatches, checked and skipped counts, anomalies and digest; the 10 min window's candidates (4,096
    positions each side) span several batches."""
    _verify_hour(tmp_path, monkeypatch)
    want = B.replay_hour(tmp_path, EX, PAIR, H0, verify=True, window=window)
    assert want.checked >= 5 and want.skipped >= 4 and len(want.mismatches) >= 2
    with monkeypatch.context() as m:
        _forbid_whole_hour(m)
        got = outputs.hour_job(str(tmp_path), EX, PAIR, H0, "l3", False, None, True, False, window)
    assert (got.mismatches, got.checked, got.skipped) == (want.mismatches, want.checked, want.skipped)
    assert (got.rows, got.duplicates, got.digest, got.anomalies, got.first) == \
        (want.rows, want.duplicates, want.digest, want.anomalies, want.first)


def test_streamed_in_memory_replay_equals_the_whole_hour_one(tmp_path, monkeypatch):
    """What plot, Dataset.bbo and Dataset.depth read (bbo and depth kept in memory, verify beside them) streams too."""
    _verify_hour(tmp_path, monkeypatch)
    monkeypatch.setattr(B, "SAMPLE_CHUNK", 700)
    depth = B.Depth(3, 10**9)
    want = B.replay_hour(tmp_path, EX, PAIR, H0, bbo=True, depth=depth, verify=True)
    with monkeypatch.context() as m:
        _forbid_whole_hour(m)
        got = outputs.hour_job(str(tmp_path), EX, PAIR, H0, "l3", True, depth, True, False)
    assert got.bbo.equals(want.bbo) and got.depth.equals(want.depth) and got.depth.num_rows > 3_000
    assert (got.mismatches, got.checked, got.skipped, got.digest) == \
        (want.mismatches, want.checked, want.skipped, want.digest)
    assert got.book.digest() == want.book.digest()


def test_streamed_book_at_equals_the_whole_hour_book(tmp_path, monkeypatch):
    """book --at streams the hour up to the instant, reading no further, with the whole-hour book and gap flag
    (inside the gap, at a late gap, inside a resnapshot, on and off batch edges)."""
    h = _verify_hour(tmp_path, monkeypatch)
    ts, edges, d = h["ts"], h["edges"], h["d"]
    rs = int(ts[h["resnap"][1]])
    ats = sorted({int(t) for e in edges[::4] for t in (ts[e - 1], ts[e], ts[e] - 1)} |
                 {int(t) for t in (ts[0], ts[d] - 2, ts[d] - 1, ts[d], ts[d + 50], rs - 1, rs, rs + 1, ts[h["r"]],
                                   ts[-1], H0 + HOUR - 1)})
    want = {at: B.replay_hour(tmp_path, EX, PAIR, H0, at=at).book for at in ats}
    assert any(b.gap for b in want.values()) and not all(b.gap for b in want.values())
    assert want[int(ts[d]) - 1].gap and not want[int(ts[d]) - 2].gap  # the late gap
    read = [0]
    real = stream.batches

    def counted(*a, **k):
        for b in real(*a, **k):
            read[0] += b[0].num_rows
            yield b
    monkeypatch.setattr(stream, "batches", counted)
    with monkeypatch.context() as m:
        _forbid_whole_hour(m)
        for at in ats:
            read[0] = 0
            got = B.book_at(tmp_path, EX, PAIR, at)
            w = want[at]
            assert (got.seq, got.ts, got.gap, got.digest()) == (w.seq, w.ts, w.gap, w.digest()), at
            assert got.orders == w.orders and got.levels() == w.levels()
            if at < ts[-1]:
                assert read[0] <= int(np.searchsorted(ts, at, "right")) + 2 * stream.BATCH_ROWS
        with pytest.raises(B.ReplayError):
            B.book_at(tmp_path, EX, PAIR, H0)  # before the hour's first event
