"""Replay: exact decimals, the L3 engine against a pure-Python reference, conservation, gaps, L2 books."""
from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from replay import book as B
from replay import kernels as K
from replay import source
from schemas import DEC
from replay_util import (AMOUNT_SCALE, PRICE_SCALE, T0, RefBook, ev_rows, events_table, hour_openings,
                         observe_mask, rows_table, synth_l3, write_part)

H = source.HOUR_NS


def py(tab: pa.Table) -> dict:
    """Columns as Python lists, timestamps as int ns."""
    return {n: (c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c).to_pylist()
            for n, c in zip(tab.column_names, tab.columns)}


def test_decimal_int_round_trip_is_exact():
    vals = ["0", "1", "60000.01", "0.000000000000000001", "123456789.123456789", "99999999999999999999"]
    arr = pa.array([Decimal(v) for v in vals] + [None], DEC)
    with pytest.raises(B.ReplayError, match="not an int64 multiple of 1e-18"):  # 99999999999999999999e18
        B.exact_ints(arr)
    x, _, k = B.exact_ints(pa.array([Decimal("1"), Decimal("1e-18")], DEC))
    assert k == 18 and x.tolist() == [10**18, 1]
    small = pa.array([Decimal("60000.01"), Decimal("-0.5"), Decimal("7"), None], DEC)
    x, valid, k = B.exact_ints(small)
    assert k == 2 and x[:3].tolist() == [6000001, -50, 700] and valid.tolist() == [True, True, True, False]
    assert B.to_dec(x, k, valid).to_pylist() == small.to_pylist()
    assert [B.text(v, 2) for v in (6000001, -50, 700, 0)] == ["60000.01", "-0.5", "7", "0"]
    # a scale guessed from the first values is raised when a later value needs more digits
    many = pa.array([Decimal("1.5")] * 5000 + [Decimal("0.125")], DEC)
    x, _, k = B.exact_ints(many)
    assert k == 3 and x[0] == 1500 and x[-1] == 125


def test_engine_matches_reference_book_on_random_stream():
    s = synth_l3(40_000, seed=7, hours=1)
    # salt the stream with anomalies the reference must count the same way
    rng = np.random.default_rng(3)
    for i in rng.choice(np.nonzero(s["act"] == K.C)[0], 50, replace=False):
        s["oid"][i] += 1  # cancel of an unknown order
    for i in rng.choice(np.nonzero(s["act"] == K.F)[0], 50, replace=False):
        s["amount"][i] += 5000  # overfill
    tab = events_table(s)
    ev = B.Events.from_table(tab)
    assert (ev.price_scale, ev.amount_scale) == (PRICE_SCALE, AMOUNT_SCALE)
    rp = B.L3Replay(ev, bbo=True)
    rp.run(len(ev))
    ref, obs = RefBook(), observe_mask(s["act"])
    want = []
    for i, row in enumerate(zip(*(s[k].tolist() for k in ("act", "side", "oid", "price", "amount")))):
        ref.apply(*row, observe=bool(obs[i]))
        if obs[i]:
            want.append(ref.bbo())
    # the engine stores changes; expand them to the BBO after every observed event
    rows = rp.bbo_rows()
    idx = np.nonzero(rp.observed)[0]
    at = rows[:, np.searchsorted(rows[0], idx, "right") - 1]
    got = np.stack([np.where(at[1] >= 0, ev.ticks[at[1]], -1), at[2], np.where(at[3] >= 0, ev.ticks[at[3]], -1),
                    at[4]])
    assert np.array_equal(obs, rp.observed) and np.array_equal(got, np.array(want).T)
    counts, _ = rp.anomalies()
    assert counts == ref.counts and counts["cancel_unknown"] >= 50 and counts["overfill"] > 0
    bk = rp.book()
    got = {o: (sd, p, a) for sd, p, a, o in zip(bk.side.tolist(), bk.price.tolist(), bk.amount.tolist(),
                                                     bk.order_id.tolist())}
    assert got == {o: tuple(v) for o, v in ref.orders.items()}
    # the table API agrees with the arrays
    res = B.replay_events(tab, bbo=True)
    assert res.digest == bk.digest() and res.bbo.num_rows > 1000


def _hand_hour(t0: int, seq0: int, spec: list[tuple]) -> pa.Table:
    return ev_rows([("R", None, None, None, None)] + spec, t0=t0, seq0=seq0)


def test_conservation_anomalies_are_counted_per_hour(tmp_path):
    h1 = _hand_hour(T0, 1, [
        ("S", "bid", 101, "100.5", "2"), ("S", "ask", 201, "101", "1"),
        ("A", "bid", 102, "100", "1"),
        ("F", "bid", 101, "100.5", "3"),        # overfill: removes 101
        ("F", "bid", 999, "100", "1"),          # fill of an unknown order
        ("C", "bid", 102, None, "1"),
        ("C", "bid", 102, None, "1"),           # cancel twice -> unknown
        ("A", "ask", 202, "102", "1"),
        ("A", "ask", 202, "102", "1"),          # duplicate add (ignored)
        ("F", "ask", 201, "100.9", "0.5"),      # fill at a wrong price (still fills 201)
        ("A", "bid", 103, "101.5", "1"),        # crosses the ask at 101
        ("A", "bid", 104, "101.6", "1"),        # still crossed: not a new crossing
        ("C", "bid", 103, None, None), ("C", "bid", 104, None, None),
        ("P", "ask", 202, None, "5"),           # partial cancel larger than the order
    ])
    h2 = _hand_hour(T0 + H, 100, [("S", "bid", 1, "1", "1"), ("F", "bid", 7, "1", "1"), ("F", "bid", 8, "1", "1")])
    write_part(tmp_path, "book_events", "btcalpha", "BTC_USD", pa.concat_tables([h1, h2]))
    r1, r2 = (B.replay_hour(tmp_path, "btcalpha", "BTC_USD", T0 + i * H) for i in range(2))
    assert r1.anomalies == {"fill_unknown": 1, "overfill": 1, "fill_price": 1, "cancel_unknown": 1,
                            "overcancel": 1, "dup_add": 1, "crossed": 1, "invalid": 0}
    assert r1.first["overfill"] == 5 and r1.first["crossed"] == 12
    assert r2.anomalies["fill_unknown"] == 2 and sum(r2.anomalies.values()) == 2
    # what the book did: 101 gone (overfill), 201 has 0.5 left after the wrong-price fill, 202 gone
    assert r1.book.orders == [("ask", Decimal("101"), Decimal("0.5"), 201)]


def test_invalid_rows_are_counted_not_applied():
    tab = _hand_hour(T0, 1, [("A", "bid", 1, "10", "0"), ("A", None, 2, "10", "1"), ("X", "bid", 3, "1", "1"),
                             ("A", "bid", 4, "10", "1")])
    res = B.replay_events(tab)
    assert res.anomalies["invalid"] == 3 and res.book.orders == [("bid", Decimal("10"), Decimal("1"), 4)]


def test_disconnect_marks_gap_until_next_snapshot(tmp_path):
    ev = _hand_hour(T0, 1, [("S", "bid", 1, "10", "1"), ("S", "ask", 2, "11", "1"),
                            ("A", "bid", 3, "10.5", "1"),     # seq 4
                            ("A", "bid", 4, "10.6", "1"),     # seq 5: first event after the disconnect (seq 4)
                            ("A", "ask", 5, "10.9", "1"),     # seq 6
                            ("R", None, None, None, None),    # seq 7
                            ("S", "bid", 1, "10", "1"), ("S", "ask", 2, "11", "2"),   # seq 8, 9
                            ("A", "bid", 6, "10.1", "1")])    # seq 10
    write_part(tmp_path, "book_events", "btcalpha", "BTC_USD", ev)
    sess = rows_table("sessions", [dict(ts=T0 + 4_500_000, seq=4, session=1, stream="ws:book_BTC_USD",
                                        kind="disconnect"),
                                   dict(ts=T0 + 4_600_000, seq=4, session=1, stream="ws:book_BTC_USD",
                                        kind="rate_limited")])
    write_part(tmp_path, "sessions", "btcalpha", "BTC_USD", sess)
    res = B.replay_hour(tmp_path, "btcalpha", "BTC_USD", T0, bbo=True, depth=B.Depth(2, None))
    bbo = py(res.bbo)
    gap = dict(zip(bbo["seq"], bbo["gap"]))
    assert gap == {3: False, 4: False, 5: True, 6: True, 9: False, 10: False}
    d = py(res.depth)
    assert {s: g for s, g in zip(d["seq"], d["gap"])} == gap
    assert not res.book.gap


def test_hour_without_snapshot_is_gap_until_one():
    tab = ev_rows([("A", "bid", 1, "10", "1"), ("R", None, None, None, None), ("S", "bid", 1, "10", "1"),
                   ("A", "bid", 2, "10", "1")])
    res = B.replay_events(tab, bbo=True)
    assert res.bbo.column("gap").to_pylist() == [True, False, False]


def test_source_sorts_by_seq_and_drops_duplicates(tmp_path):
    s = synth_l3(3000, seed=2)
    tab = events_table(s)
    n = tab.num_rows
    idx = np.random.default_rng(0).permutation(n)
    parts = np.array_split(idx, 4)
    for i, p in enumerate(parts):
        write_part(tmp_path, "book_events", "btcalpha", "BTC_USD", tab.take(p), name=f"f{3 - i}")
    write_part(tmp_path, "book_events", "btcalpha", "BTC_USD", tab.slice(10, 25), name="dups")
    (tmp_path / "book_events/exchange=btcalpha/pair=BTC_USD/date=2026-11-21/.hidden.parquet").write_bytes(b"x")
    rd = source.read(tmp_path, "book_events", "btcalpha", "BTC_USD", T0, T0 + H)
    assert rd.duplicates == 25 and rd.table.equals(tab)
    ev = source.hour_events(tmp_path, "btcalpha", "BTC_USD", T0).table
    assert ev.column_names == source.EVENT_COLUMNS
    assert ev.column("action").type == pa.dictionary(pa.int32(), pa.string())
    assert ev.column("action").cast(pa.string()).equals(tab.column("action"))
    assert source.hours(tmp_path, "book_events", "btcalpha", "BTC_USD", 0, 2**62) == [T0]


def _levels(snap: int, ts: int, bids, asks, source_="ws"):
    rows = []
    for side, lv in (("bid", bids), ("ask", asks)):
        for i, (p, a) in enumerate(lv):
            rows.append(dict(ts_event=ts, ts_recv=ts, seq=snap, session=1, snapshot_id=snap, side=side, level=i,
                             price=p, amount=a, source=source_))
    return rows


def test_l2_books_bbo_depth_changes_and_checks(tmp_path):
    rows = (_levels(10, T0 + 1, [("100", "1"), ("99", "2")], [("101", "1"), ("102", "3")])
            + _levels(20, T0 + 2 * 10**9, [("100", "1"), ("99", "5")], [("101", "1"), ("102", "3")])
            + _levels(30, T0 + 3 * 10**9, [("100.5", "1"), ("100", "1")], [("101", "2")])
            + _levels(40, T0 + 4 * 10**9, [("100", "1"), ("100.5", "1")], [("101", "2")])   # misordered
            + _levels(50, T0 + 5 * 10**9, [("100", "1")], [("101", "2")], source_="rest"))  # other source: unused
    write_part(tmp_path, "book_levels", "bitopro", "BTC_TWD", rows_table("book_levels", rows))
    write_part(tmp_path, "sessions", "bitopro", "BTC_TWD", rows_table(
        "sessions", [dict(ts=T0 + 3_500_000_000, seq=35, session=1, stream="ws:ORDER_BOOK", kind="disconnect")]))
    assert B.kind(tmp_path, "bitopro", "BTC_TWD") == "l2"
    res = B.replay_hour(tmp_path, "bitopro", "BTC_TWD", T0, bbo=True, depth=B.Depth(2, 10**9), verify=True)
    b = py(res.bbo)
    assert b["seq"] == [10, 30, 40] and b["bid_price"][1] == Decimal("100.5")
    d = py(res.depth)
    ts = (res.depth.column("ts").cast(pa.int64()).to_numpy() - T0) // 10**9
    assert ts[0] == 1 and ts[-1] == 3599 and not any(d["gap"])
    at4 = [(sd, lv, p, a) for t, sd, lv, p, a in zip(ts, d["side"], d["level"], d["price"], d["amount"]) if t == 4]
    assert at4 == [("ask", 0, Decimal("101"), Decimal("2")), ("bid", 0, Decimal("100"), Decimal("1")),
                   ("bid", 1, Decimal("100.5"), Decimal("1"))]
    assert res.mismatches == ["snapshot 40: prices not strictly ordered"] and res.checked == 4
    assert res.changes == 1 + 4  # bid 99 2->5; then bid 100.5 in, bid 99 and ask 102 out, ask 101 1->2
    sn = B.Snapshots.from_table(B.l2_source(source.hour_levels(tmp_path, "bitopro", "BTC_TWD", T0).table))
    snap, side, price, old, new = B.l2_changes(sn)
    assert list(zip(snap[snap == 1], side[snap == 1], price[snap == 1], old[snap == 1], new[snap == 1])) == \
        [(1, 0, 99 * 10, 2, 5)]
    assert res.book.levels(1) == {"bid": [(Decimal("100"), Decimal("1"), None)],
                                  "ask": [(Decimal("101"), Decimal("2"), None)]}


def test_l2_depth_gap_between_disconnect_and_next_snapshot():
    rows = (_levels(10, T0 + 1, [("100", "1")], [("101", "1")])
            + _levels(20, T0 + 3 * 10**9 + 5, [("100", "2")], [("101", "1")]))
    sess = rows_table("sessions", [dict(ts=T0 + 1_500_000_000, seq=15, session=1, stream="ws", kind="disconnect")])
    res = B.replay_levels(rows_table("book_levels", rows), T0, gap_sessions=sess, depth=B.Depth(1, 10**9))
    ts = (res.depth.column("ts").cast(pa.int64()).to_numpy() - T0) // 10**9
    gap = res.depth.column("gap").to_pylist()
    assert list(zip(ts[::2].tolist(), gap[::2]))[:5] == [(1, False), (2, True), (3, True), (4, False), (5, False)]


def test_disconnect_after_the_last_event_marks_later_samples(tmp_path):
    ev = _hand_hour(T0, 1, [("S", "bid", 1, "10", "1"), ("S", "ask", 2, "11", "1"), ("A", "bid", 3, "10.5", "1")])
    write_part(tmp_path, "book_events", "btcalpha", "BTC_USD", ev)
    write_part(tmp_path, "sessions", "btcalpha", "BTC_USD", rows_table("sessions", [
        dict(ts=T0 + 5 * 10**9, seq=100, session=1, stream="ws:book_BTC_USD", kind="disconnect")]))
    res = B.replay_hour(tmp_path, "btcalpha", "BTC_USD", T0, depth=B.Depth(1, 10**9))
    ts = (res.depth.column("ts").cast(pa.int64()).to_numpy() - T0) // 10**9
    gap = np.array(res.depth.column("gap").to_pylist())
    assert ts[-1] == 3599 and not gap[ts < 5].any() and gap[ts >= 5].all()
    assert not B.book_at(tmp_path, "btcalpha", "BTC_USD", T0 + 2 * 10**9).gap
    assert B.book_at(tmp_path, "btcalpha", "BTC_USD", T0 + 6 * 10**9).gap


def test_gap_sessions_ignore_streams_without_a_book(tmp_path):
    rows = [dict(ts=T0 + i, seq=10 + i, session=1, stream=st, kind=k) for i, (st, k) in enumerate([
        ("rest:trades", "disconnect"), ("rest:candles", "reject"), ("rest:grouped", "disconnect"),
        ("ws:btcalpha", "connect"), ("ws:btcalpha", "disconnect"), ("daemon", "gap"), ("ws:book", "resync")])]
    write_part(tmp_path, "sessions", "btcalpha", "ALL", rows_table("sessions", rows[:5]))
    write_part(tmp_path, "sessions", "btcalpha", "BTC_USD", rows_table("sessions", rows[5:]))
    got = source.gap_sessions(tmp_path, "btcalpha", "BTC_USD", T0, T0 + H)
    assert got.column("seq").to_pylist() == [14, 15, 16]


def test_hour_openings_tell_an_hour_start_from_a_reconnect():
    """The test helper that tells the R + S opening a wall-clock hour (a continuation) from a connection's."""
    h = H
    events = [(1, "R", h - 50), (2, "S", h - 50), (3, "A", h - 10),
              (4, "R", h + 5), (5, "S", h + 5), (6, "A", h + 5),            # the hour opened: continued
              (7, "R", 2 * h + 9), (8, "S", 2 * h + 9), (9, "A", 2 * h + 9)]  # a reconnect across the next hour
    sessions = [(h - 60, "connect"), (h + 100, "disconnect"), (2 * h + 1, "connect")]
    assert hour_openings(events, sessions) == {4}
    assert hour_openings(events[:6], []) == {4}
    assert hour_openings([(1, "R", h + 1), (2, "A", h + 2)], []) == set()  # the first snapshot never is


def test_book_at_an_instant_before_its_hours_first_event_is_the_last_hours_final_book(tmp_path):
    """A quiet pair: the new hour's R + S comes only with its first message, so an instant before it has the
    previous hour's final book (a gap when the feed was disconnected since)."""
    ev = _hand_hour(T0, 1, [("S", "bid", 1, "10", "1"), ("S", "ask", 2, "11", "1"), ("A", "bid", 3, "10.5", "1")])
    write_part(tmp_path, "book_events", "btcalpha", "BTC_USD", ev)
    later = T0 + H + 250_000_000  # 0.25 s into the next hour, which has no event yet
    book = B.book_at(tmp_path, "btcalpha", "BTC_USD", later)
    assert book.orders == B.book_at(tmp_path, "btcalpha", "BTC_USD", T0 + H - 1).orders and not book.gap
    assert [o for _, _, _, o in book.orders] == [3, 1, 2]
    write_part(tmp_path, "sessions", "btcalpha", "BTC_USD", rows_table("sessions", [
        dict(ts=T0 + H + 100_000_000, seq=100, session=1, stream="ws:book_BTC_USD", kind="disconnect")]))
    assert B.book_at(tmp_path, "btcalpha", "BTC_USD", later).gap
    assert not B.book_at(tmp_path, "btcalpha", "BTC_USD", T0 + H + 50_000_000).gap
    with pytest.raises(B.ReplayError, match="no btcalpha BTC_USD book data"):
        B.book_at(tmp_path, "btcalpha", "BTC_USD", T0 + 2 * source.DAY_NS)  # nothing in the day before
