"""Replay end to end over datasets on disk: golden determinism, verify, MBO import, CLI errors, plot."""
from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from replay import book as B
from replay import kernels as K
from replay import mbo, source
from replay.cli import main, parse_ts
from replay_util import T0, RefBook, events_table, rows_table, synth_l3, write_part

H = source.HOUR_NS
EX, PAIR = "btcalpha", "BTC_USD"


def run(*args: str, ok: bool = True):
    res = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, (res.output, res.stderr, res.exception)
    return res


def _write_dataset(root: Path, tab: pa.Table, split: int, seed: int) -> None:
    """Each hour split into `split` files of shuffled rows, written in shuffled order."""
    rng = np.random.default_rng(seed)
    hour = tab.column("ts_recv").cast(pa.int64()).to_numpy() // H
    for h in np.unique(hour):
        rows = rng.permutation(np.nonzero(hour == h)[0])
        parts = np.array_split(rows, split)
        for i in rng.permutation(split):
            write_part(root, "book_events", EX, PAIR, tab.take(parts[i]), name=f"h{h}-{seed}-{i}")
    sess = rows_table("sessions", [dict(ts=T0 + H + 600 * 10**9, seq=int(tab.column("seq")[
        int(np.searchsorted(tab.column("ts_recv").cast(pa.int64()).to_numpy(), T0 + H + 600 * 10**9))].as_py()) - 1,
        session=1, stream="ws:book_BTC_USD", kind="disconnect")])
    write_part(root, "sessions", EX, PAIR, sess)


def _outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for t in ("bbo", "depth") for p in sorted((root / t).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def stream():
    return events_table(synth_l3(60_000, seed=5, hours=3))


def test_golden_determinism_across_file_layout_and_jobs(tmp_path, stream):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_dataset(a, stream, 1, 1)
    _write_dataset(b, stream, 4, 2)
    common = ["--exchange", EX, "--pair", PAIR]
    run("bbo", "--root", a, *common, "--jobs", 1)
    run("depth", "--root", a, *common, "--jobs", 1, "--levels", 5, "--every", "1s")
    run("bbo", "--root", b, *common, "--jobs", 2, "--progress")
    run("depth", "--root", b, *common, "--jobs", 2, "--levels", 5, "--every", "1s")
    out_a, out_b = _outputs(a), _outputs(b)
    assert len(out_a) == 6 and out_a == out_b
    assert not any(p.name.startswith(".") for p in a.rglob("*"))
    run("bbo", "--root", a, *common, "--jobs", 2)  # replaces the same files with the same bytes
    assert _outputs(a) == out_a
    va = run("verify", "--root", a, *common, "--allow-empty").output
    vb = run("verify", "--root", b, *common, "--jobs", 2, "--allow-empty").output
    assert va == vb and va.count("digest=") == 3 and va.count("checked=0 mismatches=0") == 3
    # nothing was checked (no grouped snapshots): that is not "verify ok"
    r = run("verify", "--root", a, *common, ok=False)
    assert r.exit_code == 3 and "verify ok" not in r.output and "nothing checked" in r.stderr
    # the written bbo is exactly the in-memory replay; the disconnect marks gap rows in hour 2 only
    bbo = pq.read_table(a / "bbo", partitioning="hive")
    gap = bbo.column("gap").to_numpy(zero_copy_only=False)
    hour = bbo.column("ts_recv").cast(pa.int64()).to_numpy() // H - T0 // H
    assert gap[hour == 1].any() and not gap[hour != 1].any()
    assert bbo.schema.field("bid_price").type == pa.decimal128(38, 18)


def test_book_command_prints_the_exact_book(tmp_path, stream):
    _write_dataset(tmp_path, stream, 2, 3)
    at = T0 + 2 * H + 1234 * 10**9
    out = run("book", "--root", tmp_path, "--exchange", EX, "--pair", PAIR, "--at", str(at // 10**6),
              "--levels", 3).output
    bk = B.book_at(tmp_path, EX, PAIR, at)
    assert bk.digest() in out and not bk.gap
    best_bid = bk.levels(1)["bid"][0]
    assert f"{best_bid[0]}" in out and len(out.splitlines()) == 2 + 6


def _grouped(snap: int, ts: int, levels: dict) -> list[dict]:
    return [dict(ts_event=ts, ts_recv=ts, seq=snap, session=2, snapshot_id=snap, side=side, level=i, price=str(p),
                 amount=str(a), source="rest_grouped") for side, lv in levels.items() for i, (p, a) in enumerate(lv)]


def test_verify_compares_grouped_snapshots_and_exits_nonzero(tmp_path):
    s = synth_l3(5000, seed=11)
    tab = events_table(s)
    write_part(tmp_path, "book_events", EX, PAIR, tab)
    seq = tab.column("seq").to_numpy()
    cut = 3000
    res = B.replay_events(tab.slice(0, cut))
    lv = res.book.levels(5)
    good = {k: [(p, a) for p, a, _ in v] for k, v in lv.items()}
    bad = {"bid": good["bid"][:2] + [(good["bid"][2][0], good["bid"][2][1] + Decimal("0.0001"))], "ask": good["ask"]}
    ts = int(tab.column("ts_recv")[cut].cast(pa.int64()).as_py())
    rows = _grouped(int(seq[cut - 1]) + 1, ts, good) + _grouped(int(seq[cut - 1]) + 2, ts, bad)
    write_part(tmp_path, "book_levels", EX, PAIR, rows_table("book_levels", rows))
    r = run("verify", "--root", tmp_path, "--exchange", EX, "--pair", PAIR, ok=False)
    assert r.exit_code == 1 and "checked=2 mismatches=1" in r.output
    assert f"snapshot {int(seq[cut - 1]) + 2} bid level 2" in r.output and "verify failed" in r.stderr


MBO_CSV = """ts,action,side,price,size,order_id
2026-11-21T14:59:59.000Z,add,buy,100.10,1.5,900000000001
2026-11-21T14:59:59.100Z,A,S,100.30,2,900000000002
2026-11-21T14:59:59.200Z,new,bid,100.20,0.25,900000000003
2026-11-21T14:59:59.300Z,modify,,,0.5,900000000001
2026-11-21T15:00:00.100Z,fill,,,0.25,900000000003
2026-11-21T15:00:00.200Z,Execute,ask,100.30,1,900000000002
2026-11-21T15:00:00.300Z,add,offer,100.25,3,900000000004
2026-11-21T15:00:00.400Z,cancel,,,,900000000004
2026-11-21T15:00:01.000Z,X,,,,900000000099
"""


def test_mbo_import_round_trip(tmp_path):
    f = tmp_path / "mbo.csv"
    f.write_text(MBO_CSV)
    root = tmp_path / "root"
    res = run("import-mbo", f, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD")
    assert "imported 14 book_events rows into 2 file(s)" in res.output
    ev = source.hour_events(root, "mbo", "BTC_USD", T0).table
    assert ev.column("action").to_pylist() == ["R", "A", "A", "A", "P"]
    assert ev.column("seq").to_pylist() == [1, 2, 3, 4, 5]
    h2 = source.hour_events(root, "mbo", "BTC_USD", T0 + H).table
    assert h2.column("action").to_pylist() == ["R", "S", "S", "S", "F", "F", "A", "C", "C"]
    assert h2.column("price").to_pylist()[4] == Decimal("100.2")  # the fill's price and side come from its add
    assert h2.column("side").to_pylist()[1:5] == ["bid", "bid", "ask", "bid"]
    r2 = B.replay_hour(root, "mbo", "BTC_USD", T0 + H)
    assert r2.anomalies["cancel_unknown"] == 1 and sum(r2.anomalies.values()) == 1
    assert r2.book.orders == [("bid", Decimal("100.1"), Decimal("1"), 900000000001),
                              ("ask", Decimal("100.3"), Decimal("1"), 900000000002)]
    # the same file as Parquet with integer ns timestamps and decimal columns gives the same rows
    tab = mbo.read_mbo(f)
    ts = mbo._ts(tab.column("ts"))
    pq_file = tmp_path / "mbo.parquet"
    pq.write_table(tab.set_column(0, "ts", pa.array(ts)).set_column(
        3, "price", tab.column("price").cast(pa.decimal128(10, 2))), pq_file)
    root2 = tmp_path / "root2"
    run("import-mbo", pq_file, "--root", root2, "--exchange", "mbo", "--pair", "BTC_USD")
    for h in (T0, T0 + H):
        got, want = (source.hour_events(r, "mbo", "BTC_USD", h).table for r in (root2, root))
        assert got.equals(want)
    # importing again into the same root continues seq after the existing rows
    run("import-mbo", f, "--root", root2, "--exchange", "mbo2", "--pair", "BTC_USD")
    assert source.hour_events(root2, "mbo2", "BTC_USD", T0).table.column("seq")[0].as_py() == 15


def test_mbo_import_rejects_bad_input(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("ts,action,side,price,size,order_id\n1,launch,bid,1,1,1\n")
    r = run("import-mbo", f, "--root", tmp_path / "r", "--exchange", "mbo", "--pair", "X_Y", ok=False)
    assert r.exit_code == 1 and "unknown action 'launch'" in r.stderr and len(r.stderr.splitlines()) == 1


def test_mbo_book_matches_reference_on_random_stream(tmp_path):
    s = synth_l3(4000, seed=9, hours=2)
    keep = ~np.isin(s["act"], (K.R, K.S))
    keep[:400] |= s["act"][:400] == K.S  # the stream's opening book arrives as adds
    names = {K.A: "add", K.S: "add", K.C: "cancel", K.F: "fill", K.P: "partial"}
    lines = ["ts,action,side,price,size,order_id"]
    ref = RefBook()
    for i in np.nonzero(keep)[0]:
        a = int(s["act"][i])
        lines.append(f"{s['ts'][i]},{names[a]},{'bid' if s['side'][i] == 0 else 'ask'},"
                     f"{B.text(s['price'][i], 2)},{B.text(s['amount'][i], 4)},{s['oid'][i]}")
        ref.apply(K.A if a == K.S else a, int(s["side"][i]), int(s["oid"][i]), int(s["price"][i]),
                  int(s["amount"][i]))
    f = tmp_path / "mbo.csv"
    f.write_text("\n".join(lines) + "\n")
    mbo.import_file(f, tmp_path / "root", "mbo", "BTC_USD")
    res = B.replay_hour(tmp_path / "root", "mbo", "BTC_USD", T0 + H)  # the second hour alone
    got = {o: (SIDE_CODE[sd], p, a) for sd, p, a, o in res.book.orders}
    assert got == {o: (sd, Decimal(p) / 100, Decimal(a) / 10000) for o, (sd, p, a) in ref.orders.items()}


SIDE_CODE = {"bid": 0, "ask": 1}


@pytest.mark.parametrize("args, message", [
    (["bbo", "--pair", "ETH_USD"], "unknown pair 'ETH_USD'"),
    (["bbo", "--start", "2030-01-01", "--end", "2030-01-02"], "no btcalpha BTC_USD book data"),
    (["bbo", "--start", "2026-11-21T16:00", "--end", "2026-11-21T15:00"], "is not after start"),
    (["depth", "--start", "yesterday-ish"], "cannot read 'yesterday-ish' as a time"),
    (["depth", "--every", "fortnightly"], "use `event` or a duration"),
    (["book", "--at", "2026-11-21T19:00:00Z"], "no btcalpha BTC_USD book data"),
    (["bbo", "--exchange", "nowhere"], "no book data for exchange 'nowhere'"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    write_part(tmp_path, "book_events", EX, PAIR, events_table(synth_l3(200, seed=1)))
    base = {"--root": str(tmp_path), "--exchange": EX, "--pair": PAIR}
    for k in args[1::2]:
        base.pop(k, None)
    full = args + [x for kv in base.items() for x in kv]
    r = run(*full, ok=False)
    assert r.exit_code != 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr


def test_cli_error_in_a_fresh_process_is_one_line(tmp_path):
    exe = Path(sys.executable).parent / "replay"
    out = subprocess.run([str(exe), "bbo", "--root", str(tmp_path), "--exchange", EX, "--pair", PAIR],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.strip().splitlines() == \
        [f"Error: no book data for exchange '{EX}' under {tmp_path}"]
    out = subprocess.run([str(exe), "bbo"], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "BOOKTAPE_ROOT"})
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "--root" in out.stderr


def test_time_formats():
    ns = 1795269787250000000  # 2026-11-21T14:03:07.250Z
    for text in ("2026-11-21T14:03:07.250Z", "2026-11-21 14:03:07.250", "2026-11-21T14:03:07.25+00:00",
                 "1795269787.25", "1795269787250", "1795269787250000000"):
        assert parse_ts(text) == ns, text
    assert parse_ts("2026-11-21T14:03:07.123456789Z") == ns - 250000000 + 123456789
    assert parse_ts("2026-11-21") == T0 - 14 * H


def test_plot_writes_png_or_explains_missing_matplotlib(tmp_path, stream, monkeypatch):
    _write_dataset(tmp_path, stream, 1, 4)
    args = ["plot", "--root", tmp_path, "--exchange", EX, "--pair", PAIR, "--out", tmp_path / "p.png",
            "--start", str(T0 // 10**9), "--end", str((T0 + 2 * H) // 10**9)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        run(*args)
        assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = run(*args, ok=False)
    assert r.exit_code == 1 and r.stderr.strip() == "Error: plot needs matplotlib: pip install 'booktape[plot]'"


def _l2_snapshot(snap: int, ts: int, bids, asks) -> list[dict]:
    return [dict(ts_event=ts, ts_recv=ts, seq=snap, session=1, snapshot_id=snap, side=side, level=i, price=p,
                 amount=a, source="ws") for side, lv in (("bid", bids), ("ask", asks)) for i, (p, a) in enumerate(lv)]


def test_l2_venue_through_the_cli(tmp_path):
    rows = []
    for k in range(120):  # two hours of BitoPro-like top-N pushes every minute
        mid = 100 + k % 7
        rows += _l2_snapshot(10 * (k + 1), T0 + k * 60 * 10**9 + 5,
                             [(str(mid), "1"), (str(mid - 1), str(1 + k % 3))], [(str(mid + 1), "2")])
    write_part(tmp_path, "book_levels", "bitopro", "BTC_TWD", rows_table("book_levels", rows))
    common = ["--root", tmp_path, "--exchange", "bitopro", "--pair", "BTC_TWD"]
    run("bbo", *common, "--jobs", 2)
    run("depth", *common, "--levels", 2, "--every", "event")
    bbo = pq.read_table(tmp_path / "bbo", partitioning="hive")
    depth = pq.read_table(tmp_path / "depth", partitioning="hive")
    assert bbo.num_rows == 120 and depth.num_rows == 120 * 3
    assert bbo.column("bid_price").to_pylist()[:2] == [Decimal(100), Decimal(101)]
    out = run("verify", *common).output
    assert out.count("l2 events=") == 2 and "checked=60 mismatches=0" in out and "verify ok: 120 snapshot(s)" in out
    out = run("book", *common, "--at", "2026-11-21T15:30:00Z").output
    assert "seq 900 (2026-11-21T15:29:00.000000005Z), exact" in out
    # a crossed snapshot is a verify failure
    write_part(tmp_path, "book_levels", "bitopro", "BTC_TWD", rows_table("book_levels", _l2_snapshot(
        5000, T0 + 2 * H + 5, [("101", "1")], [("100", "1")])), name="crossed")
    r = run("verify", *common, ok=False)
    assert r.exit_code == 1 and "snapshot 5000: crossed (bid 101 >= ask 100)" in r.output


def test_depth_in_parts_equals_depth_in_one_piece(tmp_path, stream, monkeypatch):
    tab = stream.slice(0, 20_000)
    one = B.replay_events(tab, depth=B.Depth(3, None), grouped=None)
    monkeypatch.setattr(B, "SAMPLE_CHUNK", 777)
    parts = []
    res = B.replay_events(tab, depth=B.Depth(3, None), depth_sink=parts.append)
    assert res.depth is None and len(parts) > 10 and pa.concat_tables(parts).equals(one.depth)
    assert res.digest == one.digest


def test_failed_hour_leaves_the_old_file_and_no_temp(tmp_path):
    from replay import outputs

    old = rows_table("bbo", [dict(ts_recv=T0, seq=1, gap=False)])
    path = outputs.write_hour(tmp_path, "bbo", EX, PAIR, T0, old)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with outputs.hour_writer(tmp_path, "bbo", EX, PAIR, T0) as write:
            write(old)
            raise RuntimeError("replay failed half way")
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == [path.name]


def test_verify_window_absorbs_rest_racing_ahead_of_the_socket(tmp_path):
    tab = events_table(synth_l3(5000, seed=11))
    write_part(tmp_path, "book_events", EX, PAIR, tab)
    seq = tab.column("seq").to_numpy()
    cut = 3000
    ahead = B.replay_events(tab.slice(0, cut + 2)).book.levels(5)  # the venue state two events later
    ts = int(tab.column("ts_recv")[cut].cast(pa.int64()).as_py())
    rows = _grouped(int(seq[cut - 1]) + 1, ts, {k: [(p, a) for p, a, _ in v] for k, v in ahead.items()})
    write_part(tmp_path, "book_levels", EX, PAIR, rows_table("book_levels", rows))
    common = ["--root", tmp_path, "--exchange", EX, "--pair", PAIR]
    assert "checked=1 mismatches=0" in run("verify", *common).output
    r = run("verify", *common, "--window", "1ns", ok=False)
    assert r.exit_code == 1 and "checked=1 mismatches=1" in r.output and "no match within the window" in r.output


def test_depth_samples_cover_only_the_data_and_the_requested_instants(tmp_path):
    """Found: 30 s of data with --every 1s gave 2,044 samples up to the end of the hour (in the future), and
    --start/--end chose whole hours only. Samples now lie in [max(start, first event), min(end, last event)]."""
    tab = events_table(synth_l3(3_000, seed=2, hours=1))
    ts = tab.column("ts_recv").cast(pa.int64()).to_numpy()
    keep = ts < ts[0] + 30 * 10**9  # 30 s of data
    tab = tab.filter(pa.array(keep))
    ts = ts[keep]
    write_part(tmp_path, "book_events", EX, PAIR, tab)
    common = ["--root", tmp_path, "--exchange", EX, "--pair", PAIR, "--levels", 1, "--every", "1s"]
    run("depth", *common)
    got = pq.read_table(tmp_path / "depth").column("ts").cast(pa.int64()).to_numpy()
    assert got.min() >= ts[0] and got.max() <= ts.max() and len(np.unique(got)) <= 31
    lo, hi = int(ts[0]) + 10 * 10**9 + 1, int(ts[0]) + 20 * 10**9 + 1  # instants inside the hour, not on the grid
    run("depth", *common, "--start", lo, "--end", hi)
    got = np.unique(pq.read_table(tmp_path / "depth").column("ts").cast(pa.int64()).to_numpy())
    assert got.min() >= lo and got.max() < hi and len(got) == 10
