"""Databento MBO import: DBN records encoded with databento-dbn itself, every book after every record checked
against a reference book written from Databento's documented semantics."""
from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from replay import book as B
from replay import mbo, source
from replay.cli import iso, main

T0 = 1_795_269_600_000_000_000  # 2026-11-21T14:00:00Z
H = source.HOUR_NS
SCALE = dbn.FIXED_PRICE_SCALE
INSTRUMENT = 42


class DatabentoBook:
    """Databento's MBO book, as its docs and reference book describe it: A adds at the back of its level; C
    removes `size` (the order goes at 0); M sets price and size absolute, keeping priority only for a size
    decrease at the same price (an unknown order is added); R clears; T, F and N change nothing."""

    def __init__(self):
        self.orders: dict[int, list] = {}  # id -> [side, price, size]
        self.queue: dict[tuple[str, int], list[int]] = {}  # (side, price) -> ids, priority order

    def _add(self, o, s, p, q):
        self.orders[o] = [s, p, q]
        self.queue.setdefault((s, p), []).append(o)

    def _remove(self, o):
        s, p, _ = self.orders.pop(o)
        self.queue[(s, p)].remove(o)
        if not self.queue[(s, p)]:
            del self.queue[(s, p)]

    def apply(self, r: dbn.MBOMsg) -> None:
        a, o, s, p, q = str(r.action), r.order_id, str(r.side), r.price, r.size
        if a == "R":
            self.orders.clear()
            self.queue.clear()
        elif a == "A":
            self._add(o, s, p, q)
        elif a == "C":
            if o in self.orders:
                self.orders[o][2] -= q
                if self.orders[o][2] <= 0:
                    self._remove(o)
        elif a == "M":
            if o not in self.orders:
                self._add(o, s, p, q)
                return
            old_s, old_p, old_q = self.orders[o]
            if (old_s, old_p) != (s, p) or q > old_q:
                self._remove(o)
                if q > 0:
                    self._add(o, s, p, q)
            elif q == 0:
                self._remove(o)
            else:
                self.orders[o][2] = q

    def orders_list(self) -> list[tuple]:
        """(side, price, size, id): bids best first then asks best first, priority order within a price."""
        out = []
        for side, name, best in (("B", "bid", -1), ("A", "ask", 1)):
            for (_, p) in sorted((k for k in self.queue if k[0] == side), key=lambda k: best * k[1]):
                out += [(name, Decimal(p) / SCALE, Decimal(self.orders[o][2]), o) for o in self.queue[(side, p)]]
        return out


def msg(ts: int, action: str, side: str = "N", price: int = dbn.UNDEF_PRICE, size: int = 0, oid: int = 0,
        flags: int = dbn.F_LAST, instrument: int = INSTRUMENT) -> dbn.MBOMsg:
    return dbn.MBOMsg(publisher_id=1, instrument_id=instrument, ts_event=ts - 1000, order_id=oid, price=price,
                      size=size, action=dbn.Action.from_str(action), side=dbn.Side.from_str(side), ts_recv=ts,
                      flags=flags)


def px(text: str) -> int:
    return int(Decimal(text) * SCALE)


def write_dbn(path: Path, records: list[dbn.MBOMsg], zstd: bool = False) -> Path:
    meta = dbn.Metadata(dataset="GLBX.MDP3", start=records[0].ts_recv, stype_in=dbn.SType.RAW_SYMBOL,
                        stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.MBO, symbols=["ESZ6"])
    data = bytes(meta) + b"".join(bytes(r) for r in records)
    path.write_bytes(pa.compress(data, codec="zstd", asbytes=True) if zstd else data)
    return path


def scenario() -> list[dbn.MBOMsg]:
    """A snapshot, then a modify that moves price, a modify that shrinks, one that grows, a trade and fills
    followed by the cancels they imply (one partial), a modify of an unknown order, and a clear."""
    t = iter(range(T0 + 10**9, T0 + H, 10**6))
    S, L = dbn.F_SNAPSHOT, dbn.F_LAST
    return [
        msg(next(t), "R", flags=S),
        msg(next(t), "A", "B", px("100.25"), 5, 1, S),
        msg(next(t), "A", "B", px("100.25"), 3, 2, S),
        msg(next(t), "A", "B", px("100.00"), 7, 3, S),
        msg(next(t), "A", "A", px("100.50"), 4, 4, S),
        msg(next(t), "A", "A", px("100.75"), 6, 5, S | L),
        msg(next(t), "A", "B", px("100.25"), 2, 6),            # queue at 100.25: 1, 2, 6
        msg(next(t), "M", "B", px("100.00"), 5, 1),            # 1 moves to 100.00, behind 3
        msg(next(t), "M", "B", px("100.25"), 1, 2),            # 2 shrinks: keeps its place ahead of 6
        msg(next(t), "M", "B", px("100.25"), 9, 2),            # 2 grows: to the back, behind 6
        msg(next(t), "T", "A", px("100.25"), 3, 0, 0),         # a sell sweeps 3 at 100.25 ...
        msg(next(t), "F", "B", px("100.25"), 2, 6, 0),         # ... filling 6 entirely
        msg(next(t), "F", "B", px("100.25"), 1, 2, 0),         # ... and 1 of 2
        msg(next(t), "C", "B", px("100.25"), 2, 6, 0),         # the book change: 6 gone
        msg(next(t), "M", "B", px("100.25"), 8, 2),            # 2 reduced to 8, in place (end of event)
        msg(next(t), "C", "A", px("100.50"), 1, 4),            # a partial cancel: 4 rests with 3
        msg(next(t), "M", "A", px("100.60"), 2, 77),           # unknown order: an add
        msg(next(t), "N", flags=0),
        msg(next(t), "C", "A", px("100.75"), 6, 5),            # full cancel
        msg(next(t), "R"),                                     # clear
        msg(next(t), "A", "A", px("101.00"), 1, 8),
    ]


def random_records(n: int, seed: int) -> list[dbn.MBOMsg]:
    """A random stream in Databento's dialect: adds, partial and full cancels, modifies of price and size,
    trades (T + F + C/M), a snapshot every so often; ts_recv strictly increasing, all within one hour."""
    rng = random.Random(seed)
    t = T0 + 10**9
    out, live, next_id = [], {}, 1000

    def emit(*a, **k):
        nonlocal t
        t += rng.randrange(1, 10**6)
        out.append(msg(t, *a, **k))

    while len(out) < n:
        u = rng.random()
        if u < 0.03 or not live:
            emit("R", flags=dbn.F_SNAPSHOT)
            snap = {}
            for _ in range(rng.randrange(1, 12)):
                next_id += 1
                s = rng.choice("AB")
                snap[next_id] = [s, px("100") + (1 if s == "A" else -1) * rng.randrange(1, 20) * px("0.25"),
                                 rng.randrange(1, 50)]
            for i, (o, (s, p, q)) in enumerate(snap.items()):
                emit("A", s, p, q, o, dbn.F_SNAPSHOT | (dbn.F_LAST if i == len(snap) - 1 else 0))
            live = snap
        elif u < 0.40:
            next_id += 1
            s = rng.choice("AB")
            p = px("100") + (1 if s == "A" else -1) * rng.randrange(1, 20) * px("0.25")
            q = rng.randrange(1, 50)
            emit("A", s, p, q, next_id)
            live[next_id] = [s, p, q]
        elif u < 0.60:
            o = rng.choice(list(live))
            s, p, q = live[o]
            c = q if rng.random() < 0.5 else rng.randrange(1, q + 1)
            emit("C", s, p, c, o)
            live[o][2] -= c
            if live[o][2] == 0:
                del live[o]
        elif u < 0.80:
            o = rng.choice(list(live))
            s, p, q = live[o]
            r = rng.random()
            np_, nq = (p + rng.choice((-1, 1)) * px("0.25"), q) if r < 0.4 else (p, rng.randrange(1, 60))
            np_ = min(np_, px("99.75")) if s == "B" else max(np_, px("100.25"))  # never crossing
            emit("M", s, np_, nq, o)
            live[o] = [s, np_, nq]
        else:  # an aggressor takes part of one resting order: T, F, then C (all gone) or M (the rest)
            o = rng.choice(list(live))
            s, p, q = live[o]
            take = rng.randrange(1, q + 1)
            emit("T", "A" if s == "B" else "B", p, take, 0, flags=0)
            emit("F", s, p, take, o, flags=0)
            if take == q:
                emit("C", s, p, take, o)
                del live[o]
            else:
                emit("M", s, p, q - take, o)
                live[o][2] = q - take
    return out


def check_every_book(root: Path, records: list[dbn.MBOMsg], exchange: str = "glbx", pair: str = "ES_USD") -> int:
    """Replay the imported hour and compare the book after every record with the reference; returns the
    number of books compared."""
    tab = source.hour_events(root, exchange, pair, T0).table
    assert tab.num_rows > 0
    ev = B.Events.from_table(tab, source.gap_sessions(root, exchange, pair, T0, T0 + H))
    rp = B.L3Replay(ev)
    ref = DatabentoBook()
    for r in records:
        ref.apply(r)
        rp.run(int(np.searchsorted(ev.ts_recv, r.ts_recv, "right")))
        assert rp.book().orders == ref.orders_list(), (r, rp.book().orders, ref.orders_list())
    counts, _ = rp.anomalies()
    assert sum(counts.values()) == 0, counts
    return len(records)


def run(*args, ok: bool = True):
    res = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, (res.output, res.stderr, res.exception)
    return res


def test_scenario_every_book_after_every_record(tmp_path):
    recs = scenario()
    f = write_dbn(tmp_path / "es.dbn", recs)
    root = tmp_path / "root"
    res = run("import-mbo", f, "--root", root, "--exchange", "glbx", "--pair", "ES_USD")
    assert "imported" in res.output
    assert check_every_book(root, recs) == len(recs)
    tab = source.hour_events(root, "glbx", "ES_USD", T0, columns=None).table
    acts = tab.column("action").to_pylist()
    # snapshot -> R + S; T and F write nothing; the price move is C + A; the shrink a P; the growth C + A
    assert acts[:6] == ["R", "S", "S", "S", "S", "S"]
    assert acts[6:] == ["A", "C", "A", "P", "C", "A", "C", "P", "P", "A", "C", "R", "A"]
    assert "F" not in acts
    # F_LAST: the trade's records (T, F, F, C, M) are one event: the C and the P share one msg_seq
    seq, ms = tab.column("seq").to_pylist(), tab.column("msg_seq").to_pylist()
    assert ms[12] == ms[13] == seq[12] and ms[14] != ms[13]
    assert ms[:6] == [seq[0]] * 6  # the snapshot (R and its adds) is one event


def test_random_streams_every_book_after_every_record(tmp_path):
    for seed in range(3):
        recs = random_records(1500, seed)
        root = tmp_path / f"root{seed}"
        mbo.import_file(write_dbn(tmp_path / f"r{seed}.dbn", recs), root, "glbx", "ES_USD")
        assert check_every_book(root, recs) == len(recs)


def test_zstd_dbn_and_databento_csv_give_the_same_rows(tmp_path):
    recs = scenario()
    roots = {}
    for name, path, fmt in (("dbn", write_dbn(tmp_path / "a.dbn", recs), "generic"),
                            ("zst", write_dbn(tmp_path / "a.dbn.zst", recs, zstd=True), "generic"),
                            ("csv", tmp_path / "a.csv", "databento"), ("pretty", tmp_path / "p.csv", "databento")):
        if name == "csv":  # Databento's CSV export: integer ns times, fixed-point integer prices
            lines = ["ts_recv,ts_event,rtype,publisher_id,instrument_id,action,side,price,size,channel_id,"
                     "order_id,flags,ts_in_delta,sequence"]
            lines += [f"{r.ts_recv},{r.ts_event},160,1,{r.instrument_id},{r.action},{r.side},"
                      f"{'' if r.price == dbn.UNDEF_PRICE else r.price},{r.size},0,{r.order_id},{r.flags},0,0"
                      for r in recs]
            path.write_text("\n".join(lines) + "\n")
        if name == "pretty":  # pretty_px / pretty_ts: decimal prices and ISO times
            lines = ["ts_recv,ts_event,action,side,price,size,order_id,flags"]
            lines += [f"{iso(r.ts_recv)},{iso(r.ts_event)},{r.action},{r.side},"
                      f"{'' if r.price == dbn.UNDEF_PRICE else Decimal(r.price) / SCALE},{r.size},{r.order_id},"
                      f"{r.flags}" for r in recs]
            path.write_text("\n".join(lines) + "\n")
        roots[name] = tmp_path / name
        run("import-mbo", path, "--root", roots[name], "--exchange", "glbx", "--pair", "ES_USD", "--format", fmt)
    want = source.hour_events(roots["dbn"], "glbx", "ES_USD", T0, columns=None).table.drop(["seq", "session",
                                                                                           "msg_seq"])
    for name in ("zst", "csv"):
        got = source.hour_events(roots[name], "glbx", "ES_USD", T0, columns=None).table.drop(
            ["seq", "session", "msg_seq"])
        assert got.equals(want), name
    pretty = source.hour_events(roots["pretty"], "glbx", "ES_USD", T0, columns=None).table
    assert pretty.column("price").equals(want.column("price"))
    assert pretty.column("ts_recv").cast(pa.int64()).equals(want.column("ts_recv").cast(pa.int64()))
    # the same file as generic would be refused: Databento's actions are not generic spellings of the same thing
    r = run("import-mbo", tmp_path / "a.csv", "--root", tmp_path / "g", "--exchange", "glbx", "--pair", "ES_USD",
            ok=False)
    assert r.exit_code == 1 and "missing column(s) ts" in r.stderr


def test_maybe_bad_book_is_a_gap_until_the_next_snapshot(tmp_path):
    t = T0 + 10**9
    S, L = dbn.F_SNAPSHOT, dbn.F_LAST
    recs = [msg(t, "R", flags=S), msg(t + 1, "A", "B", px("99"), 1, 1, S), msg(t + 2, "A", "A", px("101"), 1, 2, S | L),
            msg(t + 10, "A", "B", px("99.5"), 2, 3),
            msg(t + 20, "C", "B", px("99.5"), 2, 3, L | dbn.F_MAYBE_BAD_BOOK),
            msg(t + 30, "A", "B", px("99.6"), 2, 4),
            msg(t + 40, "R", flags=S), msg(t + 41, "A", "B", px("99"), 1, 1, S | L),
            msg(t + 50, "A", "A", px("100"), 1, 5),
            # past the hour boundary while the book is not known exact: the next hour gets no R + S of a guess
            msg(T0 + H - 10, "C", "A", px("100"), 1, 5, L | dbn.F_MAYBE_BAD_BOOK),
            msg(T0 + H + 10, "A", "B", px("98"), 1, 6)]
    root = tmp_path / "root"
    run("import-mbo", write_dbn(tmp_path / "g.dbn", recs), "--root", root, "--exchange", "glbx", "--pair", "ES_USD")
    sess = source.gap_sessions(root, "glbx", "ES_USD", T0, T0 + 2 * H)
    assert sess.column("kind").to_pylist() == ["gap", "gap"]
    res = B.replay_hour(root, "glbx", "ES_USD", T0, bbo=True)
    bbo = res.bbo
    ts = bbo.column("ts_recv").cast(pa.int64()).to_numpy()
    gap = np.array(bbo.column("gap").to_pylist())
    assert not gap[ts < t + 20].any()               # exact after the first snapshot
    assert gap[(ts >= t + 20) & (ts < t + 41)].all()  # the flagged record until the next snapshot completes
    assert not gap[(ts >= t + 41) & (ts < T0 + H - 10)].any()
    assert gap[ts >= T0 + H - 10].all()
    h2 = source.hour_events(root, "glbx", "ES_USD", T0 + H).table
    assert h2.column("action").to_pylist() == ["A"]  # no boundary snapshot of a book not known exact
    r2 = B.replay_hour(root, "glbx", "ES_USD", T0 + H)
    assert r2.book.gap


def test_several_instruments_need_a_choice(tmp_path):
    recs = scenario() + [msg(T0 + H - 5, "A", "B", px("5"), 1, 900, instrument=7)]
    f = write_dbn(tmp_path / "m.dbn", sorted(recs, key=lambda r: r.ts_recv))
    r = run("import-mbo", f, "--root", tmp_path / "r", "--exchange", "glbx", "--pair", "ES_USD", ok=False)
    assert r.exit_code == 1 and "--instrument-id" in r.stderr and len(r.stderr.splitlines()) == 1
    run("import-mbo", f, "--root", tmp_path / "r", "--exchange", "glbx", "--pair", "ES_USD", "--instrument-id", "42")
    assert check_every_book(tmp_path / "r", scenario()) == len(scenario())
    assert not pc.any(pc.equal(source.hour_events(tmp_path / "r", "glbx", "ES_USD", T0).table.column("order_id"),
                               900)).as_py()


def test_not_a_dbn_file_is_one_line(tmp_path):
    f = tmp_path / "junk.dbn"
    f.write_bytes(b"not dbn at all" * 10)
    r = run("import-mbo", f, "--root", tmp_path / "r", "--exchange", "glbx", "--pair", "ES_USD", ok=False)
    assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1 and "DBN" in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("fmt", ["databento"])
def test_databento_csv_without_flags_still_imports(tmp_path, fmt):
    f = tmp_path / "plain.csv"
    f.write_text("ts_recv,action,side,price,size,order_id\n"
                 "2026-11-21T14:00:01Z,A,B,100.5,3,1\n2026-11-21T14:00:02Z,T,A,100.5,1,0\n"
                 "2026-11-21T14:00:02Z,F,B,100.5,1,1\n2026-11-21T14:00:02Z,C,B,100.5,1,1\n")
    run("import-mbo", f, "--root", tmp_path / "r", "--exchange", "glbx", "--pair", "ES_USD", "--format", fmt)
    bk = B.book_at(tmp_path / "r", "glbx", "ES_USD", T0 + 3 * 10**9)
    assert bk.orders == [("bid", Decimal("100.5"), Decimal("2"), 1)]  # the fill reduced it once, not twice


def test_trade_records_become_trades_rows(tmp_path):
    recs = scenario()
    root = tmp_path / "root"
    run("import-mbo", write_dbn(tmp_path / "es.dbn", recs), "--root", root, "--exchange", "glbx", "--pair", "ES_USD")
    tr = source.read(root, "trades", "glbx", "ES_USD", T0, T0 + H).table
    (t,) = [r for r in recs if str(r.action) == "T"]
    assert tr.num_rows == 1
    row = tr.to_pylist()[0]
    assert row["price"] == Decimal("100.25") and row["amount"] == 3 and row["taker_side"] == "sell"
    assert row["source"] == "import" and row["taker_order_id"] is None
    ev = source.hour_events(root, "glbx", "ES_USD", T0, columns=None).table
    seqs = ev.column("seq").to_pylist() + tr.column("seq").to_pylist()
    assert len(set(seqs)) == len(seqs) and row["session"] == ev.column("session")[0].as_py() == min(seqs)
    # the SQL view and the API see it, notional included
    from booktape import Dataset
    assert Dataset(root).trades("glbx", "ES_USD").column("notional").to_pylist() == [Decimal("300.75")]
