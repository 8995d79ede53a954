"""End to end: simulator -> recorder -> replay engine, checked against the simulator's truth.

L3: at every truth checkpoint lying after a recorder snapshot (R+S), the replayed book at the matching
book_events seq equals the checkpoint's exact book (order id -> side, price, amount); the final replayed book
equals the true final book. With dropped connections the book is exact again from each post-gap snapshot and
bbo rows between the gap and that snapshot are marked gap. L2: the final replayed levels equal the true book
aggregated to the depth the feed records.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from replay_util import hour_openings  # noqa: E402
from test_e2e_sim import L3, PAIRS, Run, sql, truth  # noqa: E402

from recorder.sim.engine import pair_spec  # noqa: E402
from recorder.sim.faults import Fault  # noqa: E402
from replay import book as B  # noqa: E402
from replay import source  # noqa: E402

SIDE = {"buy": "bid", "sell": "ask", "bid": "bid", "ask": "ask", "bids": "bid", "asks": "ask"}


def fast_bitbay(doc: dict) -> None:
    doc["venues"]["bitbay"]["book_interval"] = 1.0


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("rclean"), seconds=10.0, rate=8.0, snapshot_interval=5.0,
               sim_kw={"checkpoint_every": 3}, doc_edit=fast_bitbay).go()


@pytest.fixture(scope="module")
def dropped(tmp_path_factory):
    # 6 s apart, the first after the initial join: a join one snapshot cannot fix takes another (~2 s each)
    faults = [(t, Fault("drop", v)) for t in (4.5, 10.5) for v in L3]
    return Run(tmp_path_factory.mktemp("rdrop"), seconds=16.0, rate=8.0, faults=faults,
               snapshot_interval=3600.0, sim_kw={"checkpoint_every": 3}).go()


def events_table(run: Run, venue: str, pair: str) -> pa.Table:
    """All recorded book_events of the pair in seq order (every hour)."""
    hrs = source.hours(run.root, "book_events", venue, pair, 0, 2**62)
    return pa.concat_tables([source.hour_events(run.root, venue, pair, h).table for h in hrs])


def replayed(tab: pa.Table, upto: int) -> dict:
    """The replay engine's book after the event with seq `upto`: order id -> (side, price, amount)."""
    seq = tab.column("seq").to_pylist()
    n = sum(1 for s in seq if s <= upto)
    bk = B.replay_events(tab.slice(0, n)).book
    assert bk.seq == upto
    return {oid: (side, price, amt) for side, price, amt, oid in bk.orders}


def checkpoints(run: Run, venue: str, pair: str) -> dict[int, dict]:
    out = defaultdict(dict)
    for r in truth(run.tdir, "book"):
        if r["venue"] == venue and r["pair"] == pair:
            out[r["checkpoint_seq"]][r["order_id"]] = (SIDE[r["side"]], Decimal(r["price"]), Decimal(r["amount"]))
    return dict(out)


def matched(run: Run, venue: str, pair: str) -> list[tuple[int, int, dict]]:
    """(checkpoint, recorded seq, true book) for every truth checkpoint after a recorder snapshot: the last
    A/F/C truth event at or before the checkpoint, found in book_events after a complete R+S (and before the
    next R), gives the recorded seq the checkpoint corresponds to."""
    rows = sql(run.root, f"""SELECT seq, action, order_id, trade_id FROM read_parquet(
        '$R/book_events/exchange={venue}/pair={pair}/**/*.parquet') ORDER BY seq""")
    where, snapped = {}, False  # (action, order_id, trade_id) -> recorded seq
    for s, act, oid, tid in rows:
        if act in ("R", "S"):
            snapped = act == "S"
        elif snapped:
            key = (act, int(oid), None if act != "F" else int(tid))
            assert key not in where  # each engine event recorded at most once
            where[key] = s
    ev = sorted((e for e in truth(run.tdir, "events") if e["venue"] == venue and e["pair"] == pair
                 and e["action"] in ("A", "F", "C")), key=lambda e: e["seq"])
    out, i, last = [], 0, None
    for cp, book in sorted(checkpoints(run, venue, pair).items()):
        while i < len(ev) and ev[i]["seq"] <= cp:
            last, i = ev[i], i + 1
        if last is None:
            continue
        key = (last["action"], last["order_id"], last["trade_id"] if last["action"] == "F" else None)
        if key in where:
            out.append((cp, where[key], book))
    return out


def true_state(book: dict) -> dict:
    return {o["id"]: (SIDE[side], Decimal(o["price"]), Decimal(o["amount"])) for side in ("bids", "asks")
            for o in book[side]}


def gap_rows(run: Run, venue: str, pair: str) -> list[tuple[int, int]]:
    """(seq, ts) of each disconnect/gap sessions row on the pair's socket stream (or venue-wide)."""
    return sql(run.root, f"""SELECT seq, epoch_ns(ts) FROM read_parquet('$R/sessions/**/*.parquet',
        hive_partitioning=true) WHERE exchange = '{venue}' AND pair IN ('{pair}', 'ALL')
        AND kind IN ('disconnect', 'gap') AND stream LIKE 'ws:%' ORDER BY seq""")


def resnaps(run: Run, venue: str, pair: str) -> list[tuple[int, int, int]]:
    """(R seq, R ts_recv, ts_recv of the S ending that snapshot) per recorder snapshot (not the R + S that only
    open a wall-clock hour)."""
    rows = sql(run.root, f"""SELECT seq, action, epoch_ns(ts_recv) FROM read_parquet(
        '$R/book_events/exchange={venue}/pair={pair}/**/*.parquet') ORDER BY seq""")
    marks = sql(run.root, f"""SELECT epoch_ns(ts), kind FROM read_parquet('$R/sessions/**/*.parquet',
        hive_partitioning=true) WHERE exchange = '{venue}' AND pair IN ('{pair}', 'ALL')""")
    continued = hour_openings(rows, marks)
    rows = [r for r in rows if r[1] in "RS"]
    out = []
    for i, (s, act, ts) in enumerate(rows):
        if act == "R" and s not in continued:
            j = i
            while j + 1 < len(rows) and rows[j + 1][1] == "S":
                j += 1
            out.append((s, ts, rows[j][2]))
    return out


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("venue", L3)
def test_l3_replayed_book_equals_every_true_checkpoint_and_the_final_book(clean, venue, pair):
    tab = events_table(clean, venue, pair)
    m = matched(clean, venue, pair)
    assert len(m) >= 10, len(m)
    for cp, s, book in m:
        assert replayed(tab, s) == book, (cp, s)
    final = B.book_at(clean.root, venue, pair, clean.t_stop)
    assert not final.gap
    assert {o: (sd, p, a) for sd, p, a, o in final.orders} == true_state(clean.books[(venue, pair)])


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("venue", L3)
@pytest.mark.faults
def test_l3_exact_again_after_each_dropped_connection_and_the_gap_is_marked(dropped, venue, pair):
    tab = events_table(dropped, venue, pair)
    rs = resnaps(dropped, venue, pair)
    gaps = [(g, ts) for g, ts in gap_rows(dropped, venue, pair) if g < rs[-1][0]]  # the one at stop: never resnapped
    assert len({min(r for r, _, _ in rs if r > g) for g, _ in gaps}) >= 2, (gaps, rs)  # each drop resnapped
    m = matched(dropped, venue, pair)
    hrs = source.hours(dropped.root, "book_events", venue, pair, 0, 2**62)
    res = [B.replay_hour(dropped.root, venue, pair, h, bbo=True, depth=B.Depth(1, 10_000_000)) for h in hrs]
    bbo = list(zip(*(pa.concat_tables([x.bbo for x in res]).column(c).to_pylist() for c in ("seq", "gap"))))
    depth = list(zip(*(pa.concat_tables([x.depth for x in res]).column(c).cast(pa.int64()).to_pylist()
                       for c in ("ts", "gap"))))
    for g, gts in gaps:
        r, rts, sts = min(x for x in rs if x[0] > g)
        nxt = min([x for x, _ in gaps if x > r] + [2**62])
        # the book is exact again at every checkpoint between the post-gap snapshot and the next gap
        after = [(cp, s, book) for cp, s, book in m if r < s < nxt]
        assert after, (g, r)
        for cp, s, book in after:
            assert replayed(tab, s) == book, (cp, s)
        # between the gap row and the snapshot the book is marked gap, after the snapshot it is not
        assert B.book_at(dropped.root, venue, pair, (gts + rts) // 2).gap
        assert not B.book_at(dropped.root, venue, pair, sts).gap
        inside = [gp for ts, gp in depth if gts <= ts < rts]
        # depth is sampled every 10 ms: a reconnect faster than that leaves no sample inside the gap
        grid_point_inside = -(-gts // 10_000_000) * 10_000_000 < rts
        assert bool(inside) == grid_point_inside and all(inside), (g, gts, rts, inside)
        assert not any(g < s < r for s, _ in bbo)  # nothing replayed while disconnected
        post = [gp for s, gp in bbo if r < s < nxt]
        assert post and not any(post), (g, r)
    final = B.book_at(dropped.root, venue, pair, dropped.t_stop)
    assert {o: (sd, p, a) for sd, p, a, o in final.orders} == true_state(dropped.books[(venue, pair)])


def true_levels(book: dict, n: int | None) -> dict:
    """Top n levels per side (price, amount, order count) aggregated from an L3 book {id: (side, price, amount)}."""
    out = {}
    for name, rev in (("bid", True), ("ask", False)):
        agg = defaultdict(lambda: [Decimal(0), 0])
        for side, price, amount in book.values():
            if side == name:
                agg[price][0] += amount
                agg[price][1] += 1
        out[name] = [(p, agg[p][0], agg[p][1]) for p in sorted(agg, reverse=rev)][:n]
    return out


def fold(events: list[dict], upto_ts: int | None = None) -> dict:
    """The true L3 book from the engine's events (ts <= upto_ts): A rests, F fills, C cancels."""
    book = {}
    for e in events:
        if upto_ts is not None and e["ts"] > upto_ts:
            break
        oid, amt = e["order_id"], Decimal(e["amount"])
        if e["action"] == "A":
            book[oid] = (SIDE[e["side"]], Decimal(e["price"]), amt)
        elif e["action"] in ("F", "C"):
            side, price, left = book[oid]
            book[oid] = (side, price, left - amt)
            if book[oid][2] == 0:
                del book[oid]
    return book


def same_levels(got: dict, want: dict) -> bool:
    """Equal, ignoring counts when the feed does not carry them."""
    for side in ("bid", "ask"):
        w = want[side] if any(c is not None for _, _, c in got[side]) else [(p, a, None) for p, a, _ in want[side]]
        if got[side] != w:
            return False
    return True


def l2_run_events(run: Run, venue: str, pair: str) -> list[dict]:
    ev = sorted((e for e in truth(run.tdir, "events") if e["venue"] == venue and e["pair"] == pair),
                key=lambda e: e["seq"])
    assert fold(ev) == true_state(run.books[(venue, pair)])  # the fold itself is right
    return ev


def rounded_levels(levels: dict, pair: str) -> dict:
    """Levels as BitoPro's socket sends them after its first frame: amounts half up to amountPrecision, at least
    one unit (the simulator's model of the captured rounding, recorder/sim/bitopro.py)."""
    from decimal import ROUND_HALF_UP

    unit = Decimal(1).scaleb(-(pair_spec(pair).amount_dp - 2))
    return {s: [(p, max(a.quantize(unit, ROUND_HALF_UP), unit), c) for p, a, c in v] for s, v in levels.items()}


@pytest.mark.parametrize("pair", PAIRS)
def test_bitopro_every_replayed_push_equals_the_true_book_at_its_tick(clean, pair):
    """bitopro pushes its top book_limit levels on a 200 ms grid when they changed (and once more, identical):
    the replayed L2 book at each push equals the true book at that tick, rounded as the venue rounds every frame
    but a connection's first (source ws_rounded), and the replayed book at the end is the last push. (The push on
    subscribe carries the last event's time truncated to ms, which cannot place it exactly among the events:
    it is replayed but not compared.)"""
    n = next(v for v in clean.cfg.venues if v.name == "bitopro").book_limit
    ev = l2_run_events(clean, "bitopro", pair)
    pushes = sql(clean.root, f"""SELECT DISTINCT snapshot_id, epoch_ns(ts_event), epoch_ns(ts_recv), source FROM
        read_parquet('$R/book_levels/exchange=bitopro/pair={pair}/**/*.parquet') WHERE source LIKE 'ws%' ORDER BY 1""")
    ticks = [p for p in pushes if p[1] % (2 * 10**8) == 0]
    assert len(ticks) >= 5 and len(pushes) - len(ticks) <= 2 and {p[3] for p in ticks} == {"ws_rounded"}
    for sid, tick, recv, _ in ticks:
        got = B.book_at(clean.root, "bitopro", pair, recv)
        assert got.seq == sid
        lv = got.levels(n)
        want = rounded_levels(true_levels(fold(ev, tick), n), pair)
        assert lv["bid"] and lv["ask"] and same_levels(lv, want), (sid, tick)
    final = B.book_at(clean.root, "bitopro", pair, clean.t_stop)
    assert final.seq == ticks[-1][0] == pushes[-1][0]
    assert same_levels(final.levels(n), rounded_levels(true_levels(fold(ev, ticks[-1][1]), n), pair))


@pytest.mark.parametrize("pair", PAIRS)
def test_bitbay_final_replayed_book_equals_the_true_book(clean, pair):
    """bitbay records the full book by REST; polled every second, a poll lands after the freeze."""
    got = B.book_at(clean.root, "bitbay", pair, clean.t_stop).levels()
    assert got["bid"] and got["ask"]
    assert same_levels(got, true_levels(true_state(clean.books[("bitbay", pair)]), None))


def test_l3_hour_boundary_on_the_wall_clock_opens_the_hour_with_the_tracked_book(tmp_path, monkeypatch):
    """The sockets' receive clock is moved to 4 s before the next hour (and day): the first message of the new
    hour is preceded by R + S of the tracked book, and replaying from that R alone is exact at every later
    truth checkpoint. `replay_hour` of the new hour needs nothing from the hour before."""
    import types

    import recorder.transport.engineio as eio

    real = time.time_ns
    hour = 3600 * 10**9
    boundary = (real() // (24 * hour) + 1) * 24 * hour  # next midnight: the date partition changes too
    offset = boundary - 4 * 10**9 - real()
    monkeypatch.setattr(eio, "time", types.SimpleNamespace(time_ns=lambda: real() + offset, monotonic=time.monotonic))
    run = Run(tmp_path, seconds=10.0, rate=8.0, sim_kw={"checkpoint_every": 3}).go()
    for venue in L3:
        for pair in PAIRS:
            tab = events_table(run, venue, pair)
            seq, act = (tab.column(c).to_pylist() for c in ("seq", "action"))
            ts = tab.column("ts_recv").cast(pa.int64()).to_pylist()
            first_new = next(i for i, t in enumerate(ts) if t >= boundary)
            assert act[first_new] == "R" and act[first_new + 1] == "S", (venue, pair, act[first_new:first_new + 2])
            assert sql(run.root, f"""SELECT msg_seq FROM read_parquet('$R/book_events/**/*.parquet',
                hive_partitioning=true) WHERE seq = {seq[first_new]}""") == [(None,)]  # synthesized, no message
            assert all(t >= boundary for t in ts[first_new:])
            r_seq = seq[first_new]
            since = tab.filter(pc.greater_equal(tab.column("seq"), r_seq))
            later = [(cp, s, book) for cp, s, book in matched(run, venue, pair) if s > r_seq]
            assert len(later) >= 3, (venue, pair, len(later))
            for cp, s, book in later:
                assert replayed(since, s) == book, (venue, pair, cp, s)
            new_hour = B.replay_hour(run.root, venue, pair, boundary)
            assert not new_hour.book.gap and new_hour.book.seq == seq[-1]
