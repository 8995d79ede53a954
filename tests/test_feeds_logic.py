"""Pure feed logic with plain data: snapshot/stream join, book tracking, trade de-dup, candle versions, columns."""
from __future__ import annotations

import random
from decimal import Decimal

import pytest

from recorder.feeds import columns as C
from recorder.feeds.book import (L3Book, apply_levels, best_levels, book_from_snapshot, dec_str, find_cut,
                                 fit_grouped, levels)
from recorder.feeds.dedup import CandleVersions, Recent, TradeDedup, max_trade_id, needs_backfill, trade_keys
from recorder.feeds.join import HOUR_NS, L3Join
from recorder.rows import BookEvent, Candle, Level, Trade
from schemas.grouped import first_difference


def A(oid, amt, side="bid", price="100"):
    return BookEvent(1, "A", side, oid, price, amt)


def F(maker, amt, tid, taker=None, side="bid", price="100"):
    return BookEvent(1, "F", side, maker, price, amt, tid, taker)


def Cx(oid, amt="0", side="bid", price="100"):
    return BookEvent(1, "C", side, oid, price, amt)


def snap_of(book: L3Book) -> dict[int, Decimal]:
    return {k: o.amount for k, o in book.orders.items()}


def S_events(book: L3Book) -> list[BookEvent]:
    return book.snapshot_events(5)


# ------------------------------------------------------------------------------------ find_cut
def test_cut_causality_only():
    msgs = [[A(1, "1")], [A(2, "1")], [A(3, "1")]]
    # snapshot taken after message 2; nothing in the data proves more than the 2 sent before
    j = find_cut({1: Decimal(1), 2: Decimal(1)}, msgs, 2)
    assert (j.cut, j.consistent) == (2, True)


def test_cut_add_present_in_snapshot_is_before():
    msgs = [[A(1, "1")], [A(2, "1")], [A(3, "1")]]
    j = find_cut({1: Decimal(1), 2: Decimal(1)}, msgs, 0)
    assert j.cut == 2 and j.upper == 2 and j.exact  # A(3) absent and never removed: after


def test_cut_cancel_of_order_still_in_snapshot_is_after():
    msgs = [[Cx(7)], [A(1, "1")]]
    j = find_cut({7: Decimal(1)}, msgs, 0)
    assert (j.lower, j.upper, j.cut) == (0, 0, 0)


def test_cut_cancel_of_order_missing_from_snapshot_is_before():
    msgs = [[Cx(7)], [Cx(8)]]
    j = find_cut({8: Decimal(1)}, msgs, 0)
    assert j.cut == 1 and j.upper == 1


def test_cut_fill_of_missing_preexisting_order_is_before():
    msgs = [[F(7, "1", 100, taker=50)], [F(8, "1", 101, taker=51)]]
    j = find_cut({8: Decimal("2")}, msgs, 0)
    assert j.cut == 1  # 7 is gone: its fill came first; 8's partial fill cannot be placed by amount
    assert j.upper == 2 and (j.exact, j.undecided) == (False, 1)


def test_cut_known_resting_amounts_place_fills_of_orders_resting_before_the_buffer():
    # order 8 rested with 5 before the buffer; the snapshot shows 4: the fill of 1 is in it
    msgs = [[F(8, "1", 101, taker=51)], [A(9, "1")]]
    assert not find_cut({8: Decimal(4)}, msgs, 0).exact  # amounts unknown (connect): unplaceable
    j = find_cut({8: Decimal(4)}, msgs, 0, {8: Decimal(5), 3: Decimal(2)})
    assert (j.lower, j.upper, j.exact) == (1, 1, True)
    j = find_cut({8: Decimal(5)}, msgs, 0, {8: Decimal(5)})  # the snapshot predates the fill
    assert (j.lower, j.upper) == (0, 0)


def test_cut_amount_path_places_fills_of_buffered_adds():
    # order 5 added (10), filled 3, filled 2: snapshot shows 7 -> exactly one fill was before the cut
    msgs = [[A(5, "10")], [F(5, "3", 1, 60)], [F(5, "2", 2, 61)]]
    j = find_cut({5: Decimal(7)}, msgs, 0)
    assert (j.lower, j.upper) == (2, 2)


def test_cut_inconsistent_evidence_is_reported():
    msgs = [[Cx(7)], [A(1, "1")]]  # cancel says after (7 present), add of 1 says before (1 present)
    j = find_cut({7: Decimal(1), 1: Decimal(1)}, msgs, 0)
    assert not j.consistent and not j.exact


def test_cut_add_then_cancel_inside_the_buffer_of_an_order_absent_from_the_snapshot():
    """Found against real socket.io servers: A(1), A(2), C(1) with snapshot {2} is consistent only at 3
    (1 absent: both its add and its cancel came first); the old rule cut at 2 and replayed cancel_unknown."""
    j = find_cut({2: Decimal(1)}, [[A(1, "1")], [A(2, "1")], [Cx(1, "1")]], 0)
    assert (j.cut, j.lower, j.upper, j.exact) == (3, 3, 3, True)


def test_cut_fills_after_the_cut_cannot_exceed_the_snapshot_amount():
    """Found against real socket.io servers: snapshot {5: 0.264} and F(5, 0.062), F(5, 0.264) of an order
    resting before the connection: cut 0 would overfill. Cuts 1 and 2 both fit and give different books
    (order 5 gone, or resting 0.264), so the join is not exact: the feed records a gap, never a guess."""
    j = find_cut({5: Decimal("0.264")}, [[F(5, "0.062", 1, 60)], [F(5, "0.264", 2, 61)]], 0)
    assert (j.lower, j.upper, j.consistent, j.exact, j.undecided) == (1, 2, True, False, 1)


def test_cut_a_cancel_carrying_the_remaining_amount_pins_fills_of_a_resting_order():
    """The cancel's remaining amount (0.1) plus the fills before it give the amount before the buffer
    (0.426): the snapshot's 0.364 is that amount after exactly the first fill."""
    msgs = [[F(5, "0.062", 1, 60)], [F(5, "0.264", 2, 61)], [Cx(5, "0.1")]]
    j = find_cut({5: Decimal("0.364")}, msgs, 0)
    assert (j.cut, j.upper, j.exact) == (1, 1, True)
    assert not find_cut({5: Decimal("0.264")}, msgs, 0).consistent  # no prefix leaves 0.264


# ------------------------------------------------------------------------------------ L3Join
def test_l3join_an_inexact_join_writes_nothing_and_keeps_buffering_for_the_next_snapshot():
    j = L3Join()
    t0 = 10 * HOUR_NS
    j.request_sent()
    j.on_message([F(5, "0.062", 1, 60)], t0 + 1, 1)
    j.on_message([F(5, "0.264", 2, 61)], t0 + 2, 2)
    snap = [BookEvent(0, "R"), BookEvent(0, "S", "bid", 5, "100", "0.264")]
    assert j.on_snapshot(snap, t0 + 3) == [] and not j.last_join.exact
    assert j.joining and j.buffered == 2
    j.request_sent()  # the next snapshot: taken after both fills, order 5 gone
    j.on_message([A(6, "1")], t0 + 4, 3)
    outs = j.on_snapshot([BookEvent(0, "R"), BookEvent(0, "S", "bid", 6, "100", "1")], t0 + 5)
    assert j.last_join.exact and [e.action for o in outs for e in o.events] == ["R", "S"]
    assert j.book.state() == {6: ("bid", Decimal(100), Decimal(1))}


def test_l3join_buffers_until_snapshot_then_writes_r_s_and_the_rest():
    j = L3Join()
    t0 = 10 * HOUR_NS + 1000
    assert j.on_message([A(1, "1")], t0, 1) == []
    j.request_sent()  # message 1 is in the snapshot
    assert j.on_message([A(2, "1")], t0 + 1, 2) == []
    assert j.on_message([A(3, "2")], t0 + 2, 3) == []
    snap = [BookEvent(0, "R"), BookEvent(0, "S", "bid", 1, "100", "1"), BookEvent(0, "S", "bid", 2, "100", "1")]
    outs = j.on_snapshot(snap, t0 + 5)
    assert [o.msg_seq for o in outs] == [None, 3]
    assert [e.action for e in outs[0].events] == ["R", "S", "S"]
    assert outs[0].ts_recv == t0 + 2  # stamped with the first event applied on top of it
    assert set(j.book.orders) == {1, 2, 3}


def test_l3join_starts_every_hour_with_r_and_s_from_the_tracked_book():
    j = L3Join()
    t0 = 10 * HOUR_NS + 5
    j.request_sent()
    j.on_snapshot([BookEvent(0, "R"), BookEvent(0, "S", "ask", 9, "101", "3")], t0)
    outs = j.on_message([A(4, "1")], 11 * HOUR_NS + 7, 50)
    assert [o.msg_seq for o in outs] == [None, 50]
    assert [(e.action, e.order_id) for e in outs[0].events] == [("R", None), ("S", 9)]
    assert outs[0].ts_recv == 11 * HOUR_NS + 7


def test_l3join_drops_duplicate_messages():
    j = L3Join()
    j.request_sent()
    j.on_snapshot([BookEvent(0, "R")], 5)
    assert j.on_message([A(1, "1")], 6, 1)
    assert j.on_message([A(1, "1")], 7, 2) == []
    assert j.duplicates == 1 and not j.book.anomalies


def test_l3join_hourly_check_matches_or_resyncs():
    j = L3Join()
    j.request_sent()
    j.on_snapshot([BookEvent(0, "R"), BookEvent(0, "S", "bid", 1, "100", "5")], 5)
    j.start_check()
    j.on_message([A(2, "1")], 6, 2)
    ok, detail, outs = j.on_check([BookEvent(0, "R"), BookEvent(0, "S", "bid", 1, "100", "5"),
                                   BookEvent(0, "S", "bid", 2, "100", "1")], 7)
    assert ok and outs == [] and "check ok" in detail
    j.start_check()
    ok, detail, outs = j.on_check([BookEvent(0, "R"), BookEvent(0, "S", "bid", 1, "100", "4")], 8)
    assert not ok and "mismatch" in detail
    assert [(e.action, e.order_id, e.amount) for e in outs[0].events] == [("R", None, None), ("S", 1, "4")]
    assert set(j.book.orders) == {1}


def test_l3join_hourly_check_places_an_in_flight_partial_fill_of_a_resting_order():
    # The fill was in flight when the check snapshot was taken (the snapshot has it, the socket delivers it
    # after the request): the tracked book's amounts place it, so the check matches instead of resyncing.
    j = L3Join()
    j.request_sent()
    j.on_snapshot([BookEvent(0, "R"), BookEvent(0, "S", "bid", 1, "100", "5")], 5)
    j.start_check()
    j.on_message([F(1, "2", 70, taker=9, side="bid")], 6, 2)
    ok, detail, outs = j.on_check([BookEvent(0, "R"), BookEvent(0, "S", "bid", 1, "100", "3")], 7)
    assert ok and outs == [] and "cut 1/1" in detail, detail


# ------------------------------------------------------------------------------------ grouped snapshots
def G(bids=(), asks=()):
    """A grouped snapshot as the venue module parses it: Level rows, best first per side."""
    return ([Level("bid", k, p, a) for k, (p, a) in enumerate(bids)] +
            [Level("ask", k, p, a) for k, (p, a) in enumerate(asks)])


def sides(snapshot):
    out = {"bid": [], "ask": []}
    for lv in snapshot:
        out[lv.side].append((Decimal(lv.price), Decimal(lv.amount)))
    return out


def joined(*orders):
    """An L3Join holding the given (oid, side, price, amount) orders."""
    j = L3Join()
    j.request_sent()
    j.on_snapshot([BookEvent(0, "R")] + [BookEvent(0, "S", s, o, p, a) for o, s, p, a in orders], 5)
    return j


BOOK = [(1, "bid", "100", "2"), (2, "bid", "100", "1"), (3, "bid", "99", "4"), (4, "ask", "101", "1"),
        (5, "ask", "102", "3")]


def test_grouped_fits_at_some_cut_of_its_window():
    j = joined(*BOOK)
    t = j.grouped_sent()
    j.on_message([F(1, "2", 10, side="bid")], 6, 1)  # order 1 used up: bid 100 is 1
    j.grouped_received(t)
    j.on_message([A(6, "5", "ask", "101.5")], 7, 2)
    # the venue answered between the two messages: bid 100 x 1, no 101.5 ask yet
    fit = j.grouped_fit(t, G([("100", "1"), ("99", "4")], [("101", "1"), ("102", "3")]))
    assert (fit.cuts, fit.fits, fit.cut, fit.diff) == (3, 1, 1, None)


def test_grouped_that_fits_no_cut_names_the_first_difference():
    # the tracked book still holds order 2 (its cancel was lost): bid 100 is 3 here, 2 at the venue
    j = joined(*BOOK)
    t = j.grouped_sent()
    j.on_message([A(6, "1", "bid", "98")], 6, 1)
    j.grouped_received(t)
    fit = j.grouped_fit(t, G([("100", "2"), ("99", "4"), ("98", "1")], [("101", "1")]))
    assert fit.fits == 0 and fit.cut is None
    assert fit.diff == ("bid", 0, (Decimal(100), Decimal(2)), (Decimal(100), Decimal(3)))
    assert fit.where() == ": bid level 0 is 100 x 2 in the snapshot, 100 x 3 in the tracked book when it arrived"
    # a level the tracked book has and the venue does not, inside the snapshot's range, differs too
    j = joined(*BOOK, (7, "bid", "99.5", "1"))
    t = j.grouped_sent()
    j.grouped_received(t)
    fit = j.grouped_fit(t, G([("100", "3"), ("99", "4")]))
    assert fit.fits == 0 and fit.diff == ("bid", 1, (Decimal(99), Decimal(4)), (Decimal("99.5"), Decimal(1)))


def test_grouped_messages_in_flight_do_not_make_a_divergence():
    # The snapshot runs ahead of the socket: it already holds a fill and a cancel the socket delivers after the
    # response (within the lookahead). At the response the books differ; one cut later they agree.
    j = joined(*BOOK)
    t = j.grouped_sent()
    j.grouped_received(t)
    j.on_message([F(4, "1", 11, side="ask", price="101"), Cx(3, "4")], 8, 3)
    snap = G([("100", "3")], [("102", "3")])
    base = levels(j.book)  # now: the book after the in-flight message
    assert first_difference(sides(snap)["ask"], best_levels(base, "ask", 1)) is None
    fit = j.grouped_fit(t, snap)
    assert fit.fits == 1 and fit.cut == 1
    # the naive rule (the tracked book when the response arrived, cut 0) would have resynced
    naive = fit_grouped(levels(book_from_snapshot(BookEvent(0, "S", s, o, p, a) for o, s, p, a in BOOK)),
                        [], 0, sides(snap), 0)
    assert naive.fits == 0


def test_grouped_window_starts_at_the_request_not_before():
    # A state the book left before the request went out is not a fit: causality, as in the join.
    j = joined(*BOOK)
    j.on_message([Cx(2, "1")], 6, 1)
    t = j.grouped_sent()
    j.grouped_received(t)
    assert j.grouped_fit(t, G([("100", "3")])).fits == 0


def test_grouped_tickets_overlap_share_one_log_and_void_on_reset():
    j = joined(*BOOK)
    t1 = j.grouped_sent()
    j.on_message([A(6, "1", "bid", "98")], 6, 1)
    t2 = j.grouped_sent()
    j.grouped_received(t1)
    j.on_message([Cx(3, "4", "bid", "99")], 7, 2)
    j.grouped_received(t2)
    assert not j.go_fast()  # the log needs every message's level changes: the Python path
    assert j.grouped_fit(t1, G([("100", "3"), ("99", "4"), ("98", "1")])).cut == 1
    fit = j.grouped_fit(t2, G([("100", "3"), ("98", "1")]))
    assert (fit.cuts, fit.fits, fit.cut) == (2, 1, 1)  # t2's window: its request, and after the cancel
    assert j._levels is None and j.go_fast()  # nothing in flight: no log, compiled path again
    j = joined(*BOOK)
    t = j.grouped_sent()
    j.grouped_received(t)
    j.reset()
    assert j.grouped_fit(t, G([("1", "1")])) is None  # the book it was taken against is gone: no verdict
    assert joined().grouped_sent() is not None and L3Join().grouped_sent() is None  # joining: no book


def test_apply_levels_and_the_incremental_fit_agree_with_aggregating_every_cut():
    rng = random.Random(17)
    for _ in range(200):
        book, nxt, msgs = L3Book(), 1, []
        for _ in range(rng.randint(0, 12)):
            book.apply(BookEvent(0, "S", rng.choice(["bid", "ask"]), nxt,
                                 str(rng.randint(95, 105)), str(rng.randint(1, 3))))
            nxt += 1
        start, work, states = levels(book), book.copy(), [levels(book)]
        for _ in range(rng.randint(0, 10)):
            live = list(work.orders)
            r = rng.random()
            if live and r < 0.3:
                o = rng.choice(live)
                msg = [BookEvent(0, "C", work.orders[o].side, o, work.orders[o].price, "0")]
            elif live and r < 0.6:
                o = rng.choice(live)
                msg = [BookEvent(0, "F", work.orders[o].side, o, work.orders[o].price, str(rng.randint(1, 3)))]
            else:
                msg = [BookEvent(0, "A", rng.choice(["bid", "ask"]), nxt, str(rng.randint(95, 105)),
                                 str(rng.randint(1, 3)))]
                nxt += 1
            msgs.append(apply_levels(work, msg))
            states.append(levels(work))
        assert states[-1] == levels(work)
        lo = rng.randint(0, len(msgs))
        pick = states[rng.randint(0, len(states) - 1)]
        n = {s: rng.randint(0, 4) for s in ("bid", "ask")}
        snap = {s: best_levels(pick, s, n[s]) for s in n}
        if rng.random() < 0.3 and snap["bid"]:
            snap["bid"][-1] = (snap["bid"][-1][0], snap["bid"][-1][1] + 1)
        fit = fit_grouped(start, msgs, lo, snap, len(msgs))
        brute = [k for k in range(lo, len(states))
                 if all(first_difference(snap[s], best_levels(states[k], s, len(snap[s]))) is None for s in snap)]
        assert (fit.fits, fit.cut) == (len(brute), brute[0] - lo if brute else None)
        assert (fit.diff is None) == bool(brute)


# ------------------------------------------------------------------------------------ L3Book
def test_book_counts_conservation_anomalies():
    b = L3Book()
    b.apply_all([A(1, "1"), F(2, "1", 1), Cx(3), F(1, "2", 2), A(1, "1"), A(1, "1")])
    assert b.anomalies == {"fill_unknown": 1, "cancel_unknown": 1, "overfill": 1, "duplicate_add": 1}


def test_book_full_fill_leaves_no_dust_and_snapshot_round_trips():
    b = L3Book()
    b.apply_all([A(1, "0.3"), F(1, "0.1", 1), F(1, "0.2", 2), A(2, "0.000000000000000001")])
    assert set(b.orders) == {2}
    again = book_from_snapshot(b.snapshot_events())
    assert again.state() == b.state()
    assert dec_str(Decimal("1E-18")) == "0.000000000000000001" and dec_str(Decimal("5.000")) == "5"


# ------------------------------------------------------------------------------------ trades
def T(tid, price="1", amount="1", ts=1, side="buy"):
    return Trade(ts, tid, price, amount, side)


def test_trade_dedup_across_sources():
    d = TradeDedup()
    assert [t.trade_id for t in d.fresh([T("1"), T("2")])] == ["1", "2"]
    assert [t.trade_id for t in d.fresh([T("3"), T("2"), T("1")])] == ["3"]


def test_trade_dedup_floor_skips_what_an_earlier_run_recorded():
    d = TradeDedup(floor=10)
    assert [t.trade_id for t in d.fresh([T("9"), T("10"), T("11"), T(None)])] == ["11", None]


def test_trade_dedup_remembers_the_ids_an_earlier_run_wrote():
    """Zonda resumes from the newest recorded ms and asks for that ms again: the ids recorded in it are not new."""
    d = TradeDedup()
    d.written(["46f05178-aa", "7"])
    assert [t.trade_id for t in d.fresh([T("46f05178-aa"), T("46f05178-bb"), T("7"), T("8")])] == ["46f05178-bb", "8"]


def test_trade_dedup_without_ids_counts_identical_trades_per_message():
    d = TradeDedup()
    page = [T(None), T(None), T(None, price="2")]
    assert len(d.fresh(page)) == 3
    assert len(d.fresh(page)) == 0
    assert len(d.fresh(page + [T(None)])) == 1  # a third identical trade is new
    assert trade_keys([T(None), T(None)])[1][-1] == 1


def test_recent_is_bounded():
    r = Recent(3)
    for k in range(10):
        r.add(k)
    assert len(r) == 3 and 9 in r and 0 not in r


def test_recent_add_many_is_add_one_by_one():
    """Bursts of new keys (the bulk path) and bursts with repeats (key by key) remember and forget alike."""
    rng = random.Random(11)
    one, many = Recent(50), Recent(50)
    for _ in range(400):
        start = rng.randrange(0, 300)
        keys = [start + i for i in range(rng.randrange(0, 40))]
        if rng.random() < 0.3:
            keys += rng.sample(keys, min(len(keys), 3))  # repeats within the burst
        assert many.add_many(iter(keys) if rng.random() < 0.5 else keys) == [one.add(k) for k in keys]
        assert list(many) == list(one)


def test_backfill_decision():
    page = [T(str(i)) for i in range(200, 100, -1)]  # newest first, 100 trades
    assert needs_backfill(page, 50, 100)
    assert not needs_backfill(page, 150, 100)
    assert not needs_backfill(page[:99], 50, 100)
    assert not needs_backfill(page, None, 100)
    assert max_trade_id(page) == 200 and max_trade_id([T(None)]) is None


# ------------------------------------------------------------------------------------ candles
def K(ts, close="1", res="1m"):
    return Candle(res, ts, "1", "2", "0.5", close, "3")


def test_candle_versions_written_only_when_changed():
    v = CandleVersions()
    assert len(v.changed([K(60), K(0)])) == 2
    assert v.changed([K(0), K(60)]) == []
    out = v.changed([K(0), K(60, close="1.5"), K(120)])
    assert [(c.ts_open, c.close) for c in out] == [(60, "1.5"), (120, "1")]
    assert v.latest_open("1m") == 120 and v.latest_open("5m") is None


def test_candle_versions_are_bounded():
    v = CandleVersions(keep=10)
    v.changed([K(i * 60) for i in range(100)])
    assert len(v._last) == 10


# ------------------------------------------------------------------------------------ columns
def test_row_builders_match_the_schemas():
    ev = C.event_row(A(1, "2"), 5, 6, 7, 8)
    lv = C.level_row(Level("bid", 0, "1", "2", 3), None, 5, 6, 7, 6, "ws")
    tr = C.trade_row(T("9"), 5, 6, 7, "rest")
    cd = C.candle_row(K(0), 5, 6, 7)
    for table, row in (("book_events", ev), ("book_levels", lv), ("trades", tr), ("candles", cd)):
        cols = C.to_columns(table, [row, row])
        assert list(cols) == list(C.ORDER[table]) and all(len(v) == 2 for v in cols.values())
    assert C.to_columns("raw", []) == {n: [] for n in C.ORDER["raw"]}


@pytest.mark.parametrize("table", list(C.ORDER))
def test_columns_are_accepted_by_the_store_validator(table):
    from recorder.store.validate import to_batch
    from schemas import TABLES

    rows = {
        "raw": C.raw_row(10**18, 1, 1, "ws:x", b"{}", "rejected", "bad", "GET /"),
        "book_events": C.event_row(A(1, "2.5"), 10**18, 2, 1, 1),
        "book_levels": C.level_row(Level("ask", 0, "1.1", "2", None), 10**18, 10**18, 3, 1, 3, "rest_grouped"),
        "trades": C.trade_row(T("9", "1.000000000000000001"), 10**18, 4, 1, "backfill"),
        "candles": C.candle_row(K(10**18), 10**18, 5, 1),
        "sessions": C.session_row(10**18, 6, 1, "daemon", "start", None),
    }
    assert to_batch(TABLES[table], C.to_columns(table, [rows[table]])).num_rows == 1


def test_columns_are_built_typed_and_a_bad_value_is_left_for_the_store_to_name():
    import pyarrow as pa
    from recorder.store import StoreError
    from recorder.store.validate import to_batch
    from schemas import TABLES

    good = C.event_row(A(1, "2.5"), 10**18, 2, 1, 1)
    cols = C.to_columns("book_events", [good])
    assert cols["ts_recv"].type == TABLES["book_events"].schema.field("ts_recv").type
    assert cols["order_id"].type == pa.int64() and cols["price"].type == pa.string()
    bad = good[:7] + ("17",) + good[8:]  # an order id as text: never coerced
    cols = C.to_columns("book_events", [good, bad])
    assert cols["order_id"] == (good[7], "17") and isinstance(cols["seq"], pa.Array)
    with pytest.raises(StoreError, match="order_id"):
        to_batch(TABLES["book_events"], cols)
