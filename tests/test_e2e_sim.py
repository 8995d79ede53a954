"""End to end against the simulator on 127.0.0.1: every venue recorded, checked against the truth log.

The simulator runs unpaced on its own loop thread; the test advances it in small steps while the
recorder runs, then freezes it so the recorded book can be compared with the true book exactly.
"""
from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from collections import Counter
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from replay_util import hour_openings  # noqa: E402
from simfixtures import threaded_sim  # noqa: E402

from recorder import config  # noqa: E402
from recorder.daemon import Daemon  # noqa: E402
from recorder.demo import demo_env, sim_doc  # noqa: E402
from recorder.feeds.book import L3Book  # noqa: E402
from recorder.rows import BookEvent  # noqa: E402
from recorder.sim.faults import Fault  # noqa: E402
from recorder.sim.server import SimConfig  # noqa: E402

PAIRS = ["BTC_USD", "ETH_BTC"]
L3 = ("btcalpha", "bitexbit")


def sql(root: Path, query: str) -> list[tuple]:
    con = duckdb.connect()
    try:
        return con.execute(query.replace("$R", str(root))).fetchall()
    finally:
        con.close()


def truth(tdir: Path, table: str):
    t = pq.read_table(tdir / table)
    for i, f in enumerate(t.schema):
        if str(f.type).startswith("timestamp"):
            t = t.set_column(i, f.name, t.column(i).cast("int64"))
    return t.to_pylist()


class Run:
    """One recording: simulator (thread) + daemon (this loop) + a driver advancing the market."""

    def __init__(self, tmp: Path, *, seconds: float, rate: float = 20.0, faults=(), sim_kw=None, doc_edit=None,
                 step: float = 0.1, settle: float = 3.0, snapshot_interval: float = 3600.0,
                 allow_unlisted: bool = False) -> None:
        self.tmp, self.seconds, self.rate, self.faults = tmp, seconds, rate, list(faults)
        self.sim_kw, self.doc_edit, self.step, self.settle = sim_kw or {}, doc_edit, step, settle
        self.snapshot_interval = snapshot_interval
        self.allow_unlisted = allow_unlisted  # record pairs the venue does not list (recorder run --allow-unlisted)
        self.root, self.tdir = tmp / "data", tmp / "truth"
        self.books: dict = {}

    def go(self) -> "Run":
        cfg = SimConfig(seed=11, pairs=PAIRS, rate=self.rate, paced=False, truth_dir=str(self.tdir),
                        warmup=30.0, **self.sim_kw)
        with threaded_sim(cfg) as ts:
            self.urls = ts.sim.urls
            doc = sim_doc(ts.sim.urls, self.root, PAIRS)
            if self.doc_edit:
                self.doc_edit(doc)
            self.cfg = config.parse(doc, env=demo_env())
            asyncio.run(self._record(ts))
            self.books = {(v, p): ts.call(ts.sim.true_book, v, p) for v in ("btcalpha", "bitexbit", "bitopro", "bitbay")
                          for p in PAIRS}
            self.charts = self._charts()
        return self

    def _charts(self) -> dict:
        """The venue's own candles now (market frozen), per (venue, pair, resolution): ts_open -> (close, volume)."""
        from recorder.venues import bitbay, bitexbit, bitopro, btcalpha

        out = {}
        for v in self.cfg.venues:
            if "candles" not in v.channels:
                continue
            for pair in v.pairs:
                for res in v.resolutions:
                    if v.name == "bitopro":
                        url = bitopro.candles_url(v.urls["rest_url"], pair, res, 0, 4_000_000_000)
                        parse = bitopro.parse_candles
                    elif v.name == "bitbay":  # Zonda (api = "current")
                        url = bitbay.zonda_candles_url(v.urls["rest_url"], pair, res, 0, 4_000_000_000_000)
                        parse = bitbay.parse_zonda_candles
                    else:
                        mod = btcalpha if v.name == "btcalpha" else bitexbit
                        url, parse = mod.charts_url(v.urls["charts_url"], pair, res), mod.parse_candles
                    body = urllib.request.urlopen(url, timeout=10).read()
                    out[(v.name, pair, res)] = {c.ts_open: (Decimal(c.close), Decimal(c.volume))
                                                for c in parse(body, res, pair).candles}
        return out

    async def _record(self, ts) -> None:
        ready = asyncio.Event()
        self.daemon = d = Daemon(self.cfg, snapshot_interval=self.snapshot_interval, on_ready=lambda _: ready.set(),
                                 allow_unlisted=self.allow_unlisted)
        task = asyncio.create_task(d.run())
        # the fault schedule counts from the feeds' start: before it come the pairs check and the kernels' load
        await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
        assert not task.done(), task
        t0 = time.monotonic()
        faults = sorted(self.faults, key=lambda f: f[0])
        while time.monotonic() - t0 < self.seconds:
            await asyncio.to_thread(ts.call, ts.sim.advance, self.step)
            while faults and faults[0][0] <= time.monotonic() - t0:
                await asyncio.to_thread(ts.call, ts.sim.inject, faults.pop(0)[1])
            await asyncio.sleep(self.step)
            assert not task.done(), task
        await asyncio.sleep(self.settle)  # market frozen: let polls and pushes catch up
        self.t_stop = time.time_ns()
        d.stop()
        self.exit_code = await asyncio.wait_for(task, 10)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("clean"), seconds=12.0, rate=8.0, snapshot_interval=5.0).go()


def replay_book(rows) -> L3Book:
    """Our book_events (ordered by seq) from the last R on."""
    last_r = max(i for i, r in enumerate(rows) if r[0] == "R")
    b = L3Book()
    for action, side, oid, price, amount, tid, taker in rows[last_r:]:
        b.apply(BookEvent(None, action, side, oid, None if price is None else str(price),
                          None if amount is None else str(amount), tid, taker))
    return b


def assert_l3_books_end_true(run: "Run") -> None:
    """Every L3 pair's recorded book_events, applied in seq order, end at the venue's true book."""
    for venue in L3:
        for pair in PAIRS:
            rows = sql(run.root, f"""SELECT action, side, order_id, price, amount, trade_id, taker_order_id
                FROM read_parquet('$R/book_events/exchange={venue}/pair={pair}/**/*.parquet') ORDER BY seq""")
            assert replay_book(rows).state() == true_state(run.books[(venue, pair)]), (venue, pair)


def true_state(book: dict) -> dict:
    return {o["id"]: ("bid" if side == "bids" else "ask", Decimal(o["price"]), Decimal(o["amount"]))
            for side in ("bids", "asks") for o in book[side]}


@pytest.mark.parametrize("venue", L3)
def test_l3_book_events_follow_the_truth_in_order_and_end_at_the_true_book(clean, venue):
    for pair in PAIRS:
        rows = sql(clean.root, f"""SELECT action, side, order_id, price, amount, trade_id, taker_order_id
            FROM read_parquet('$R/book_events/exchange={venue}/pair={pair}/**/*.parquet') ORDER BY seq""")
        assert rows and rows[0][0] == "R"
        assert replay_book(rows).state() == true_state(clean.books[(venue, pair)])
        ours = [(r[0], r[2], r[5]) for r in rows if r[0] in "AFC"]
        tr = [(e["action"], e["order_id"], e["trade_id"]) for e in truth(clean.tdir, "events")
              if e["venue"] == venue and e["pair"] == pair and e["action"] in ("A", "F", "C")]
        k = len(tr) - len(ours)
        assert k >= 0 and tr[k:] == ours  # every event since the snapshot, once, in order


@pytest.mark.parametrize("venue", ["btcalpha", "bitexbit", "bitbay"])
def test_every_trade_once(clean, venue):
    ours = sql(clean.root, f"""SELECT pair, trade_id, count(*) FROM
        read_parquet('$R/trades/exchange={venue}/**/*.parquet', hive_partitioning=true) GROUP BY ALL""")
    assert ours and all(n == 1 for _, _, n in ours)
    have = {(p, t) for p, t, _ in ours}
    first = {p: min(int(t) for q, t, _ in ours if q == p) for p in PAIRS}
    if venue in L3:  # from the first trade the socket delivered on: nothing missing
        first = dict(sql(clean.root, f"""SELECT pair, min(trade_id::BIGINT) FROM read_parquet(
            '$R/trades/exchange={venue}/**/*.parquet', hive_partitioning=true) WHERE source = 'socket' GROUP BY pair"""))
    want = {(e["pair"], str(e["trade_id"])) for e in truth(clean.tdir, "events")
            if e["venue"] == venue and e["action"] == "F" and e["trade_id"] >= first[e["pair"]]}
    assert want and want <= have


def test_bitopro_trades_once(clean):
    ours = sql(clean.root, """SELECT pair, trade_id, count(*) FROM
        read_parquet('$R/trades/exchange=bitopro/**/*.parquet', hive_partitioning=true) GROUP BY ALL""")
    assert ours and all(n == 1 for *_, n in ours)


def test_bitopro_every_trade_complete(clean):
    """BitoPro trades carry no id: by content (second, price, amount, taker side), every fill the venue made
    between the first and last second recorded is there exactly as often as it happened."""
    rows = sql(clean.root, """SELECT pair, epoch_ns(ts_event) // 1000000000, price, amount, taker_side FROM
        read_parquet('$R/trades/exchange=bitopro/**/*.parquet', hive_partitioning=true)""")
    ours = Counter((p, s, pr.normalize(), a.normalize(), side) for p, s, pr, a, side in rows)
    span = {p: (min(s for q, s, *_ in rows if q == p) + 1, max(s for q, s, *_ in rows if q == p) - 1) for p in PAIRS}
    want = Counter()
    for e in truth(clean.tdir, "events"):
        if e["venue"] == "bitopro" and e["action"] == "F":
            sec = e["ts"] // 10**9
            if span[e["pair"]][0] <= sec <= span[e["pair"]][1]:
                taker = "sell" if e["side"] == "buy" else "buy"  # side is the resting (maker) order's
                want[e["pair"], sec, e["price"].normalize(), e["amount"].normalize(), taker] += 1
    inside = Counter({k: n for k, n in ours.items() if span[k[0]][0] <= k[1] <= span[k[0]][1]})
    assert sum(want.values()) > 50 and inside == want


def test_everything_sent_is_in_raw(clean):
    raw = Counter((v, bytes(p)) for v, p in sql(clean.root, """SELECT exchange, payload
        FROM read_parquet('$R/raw/**/*.parquet', hive_partitioning=true)"""))
    missing = Counter()
    sent = 0
    for m in truth(clean.tdir, "messages"):
        if m["ts_wall"] > clean.t_stop - 500_000_000:
            continue
        if m["conn"].startswith("ws"):
            if m["venue"] in L3 and not m["payload"].startswith("42"):
                continue  # engine.io control packets (open, ping/pong, namespace connect)
        elif m["status"] != 200:
            continue
        sent += 1
        key = (m["venue"], m["payload"].encode())
        if raw[key]:
            raw[key] -= 1
        else:
            missing[m["venue"], m["conn"][:2]] += 1
    assert sent > 300 and not missing


def test_candles_final_versions_match_the_venue(clean):
    rows = sql(clean.root, """SELECT exchange, pair, resolution, epoch_ns(ts_open), close, volume
        FROM read_parquet('$R/candles/**/*.parquet', hive_partitioning=true) ORDER BY seq""")
    latest, seen = {}, {}
    for ex, pair, res, ts, close, vol in rows:
        key = (ex, pair, res, ts)
        assert seen.get(key) != (close, vol)  # a version is written only when it changed
        seen[key] = latest[key] = (close, vol)
    assert {k[0] for k in latest} == {"btcalpha", "bitexbit", "bitopro"}
    for (ex, pair, res), venue in clean.charts.items():
        ours = {k[3]: v for k, v in latest.items() if k[:3] == (ex, pair, res)}
        assert ours, (ex, pair, res)
        first = min(ours)
        want = {ts: v for ts, v in venue.items() if ts >= first}
        assert ours == want, (ex, pair, res)  # every candle since the first, in its final version


def test_sessions_show_start_connect_snapshot_stop(clean):
    rows = sql(clean.root, "SELECT kind, detail FROM read_parquet('$R/sessions/**/*.parquet')")
    # a join the evidence cannot fix is a gap row and another snapshot, never a guess; nothing else gaps
    kinds = Counter(k for k, d in rows if not d.startswith("snapshot join not exact"))
    assert kinds["start"] == 4 and kinds["stop"] == 4 and kinds["connect"] >= 10
    assert kinds["gap"] == 0 and kinds["reject"] == 0 and kinds["resync"] == 0 and clean.exit_code == 0
    snaps = [d for k, d in sql(clean.root, "SELECT kind, detail FROM read_parquet('$R/sessions/**/*.parquet')")
             if k == "snapshot"]
    assert sum(d.startswith("R+S") for d in snaps) == 4  # one joined snapshot per L3 venue and pair
    assert sum(d.startswith("check ok") for d in snaps) >= 4  # periodic REST checks agree with the tracked book



# ------------------------------------------------------------------------------------------ faults
FAULTS = [
    (2.0, Fault("malformed", "all", count=3)),
    (3.0, Fault("http_error", "all", count=6, status=429)),
    (4.0, Fault("drop", "all")),
    (6.0, Fault("duplicate", "all", count=3)),
    (7.0, Fault("reorder", "all", count=1)),
    (8.0, Fault("drop", "all")),
    (10.0, Fault("http_error", "all", count=4, status=502)),
    (11.0, Fault("stall", "all", seconds=5.0)),
    (18.0, Fault("drop", "all")),
]
DROPS = sum(1 for _, f in FAULTS if f.kind == "drop")


def _fast_heartbeats(doc):
    for v in L3:
        doc["venues"][v]["heartbeat"] = 3.0
    doc["venues"]["bitopro"]["heartbeat"] = 6.0


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("faults"), seconds=21.0, rate=8.0, faults=FAULTS,
               doc_edit=_fast_heartbeats).go()


def sessions(run, venue=None):
    where = f"WHERE exchange = '{venue}'" if venue else ""
    return sql(run.root, f"""SELECT exchange, pair, stream, kind, detail, epoch_ns(ts), session
        FROM read_parquet('$R/sessions/**/*.parquet', hive_partitioning=true) {where} ORDER BY seq""")


@pytest.mark.faults
def test_faults_recorder_keeps_running_and_stops_cleanly(faulty):
    assert faulty.exit_code == 0  # and the driver asserted the daemon task never ended during the run


@pytest.mark.parametrize("venue", L3 + ("bitopro",))
@pytest.mark.faults
def test_faults_every_drop_is_a_gap_and_reconnects_within_the_capped_backoff(faulty, venue):
    rows = sessions(faulty, venue)
    cap = faulty.cfg.backoff_cap
    disc = [r for r in rows if r[3] == "disconnect" and r[2].startswith("ws:")]
    assert len(disc) >= DROPS
    if venue in L3:  # the 5 s stall outlasted the 3 s heartbeat: reconnected for silence
        assert any("no message for" in r[4] for r in disc), [r[4] for r in disc]
    for d in disc:
        later = [r for r in rows if r[3] == "connect" and r[2] == d[2] and r[5] > d[5]]
        if d[5] > faulty.t_stop - 1e9:
            continue
        assert later and later[0][5] - d[5] < (cap + 2.0) * 1e9, d
        gaps = [r for r in rows if r[3] == "gap" and r[6] == d[6]]
        assert {r[1] for r in gaps} == set(PAIRS), d


@pytest.mark.parametrize("venue", L3)
@pytest.mark.faults
def test_faults_book_and_trades_still_exact(faulty, venue):
    for pair in PAIRS:
        full = sql(faulty.root, f"""SELECT seq, epoch_ns(ts_recv), action, side, order_id, price, amount, trade_id,
            taker_order_id FROM read_parquet('$R/book_events/exchange={venue}/pair={pair}/**/*.parquet') ORDER BY seq""")
        rows = [r[2:] for r in full]
        # one R+S per exact join (a join the evidence cannot fix is a gap row and another snapshot, and the
        # malformed frames at 2 s void a snapshot still being joined: it may predate a lost message)
        rows_s = [r for r in sessions(faulty, venue) if r[1] == pair and r[2].startswith("ws:")]
        joins = sum(1 for r in rows_s if (r[3] == "snapshot" and r[4].startswith("R+S")) or r[3] == "resync")
        hour_rs = hour_openings([(r[0], r[2], r[1]) for r in full],
                                [(r[5], r[3]) for r in sessions(faulty, venue) if r[1] in (pair, "ALL")])
        assert sum(1 for r in full if r[2] == "R" and r[0] not in hour_rs) == joins >= 2
        assert replay_book(rows).state() == true_state(faulty.books[(venue, pair)])
    ours = sql(faulty.root, f"""SELECT pair, trade_id, count(*) FROM
        read_parquet('$R/trades/exchange={venue}/**/*.parquet', hive_partitioning=true) GROUP BY ALL""")
    assert all(n == 1 for *_, n in ours)
    first = dict(sql(faulty.root, f"""SELECT pair, min(trade_id::BIGINT) FROM read_parquet(
        '$R/trades/exchange={venue}/**/*.parquet', hive_partitioning=true) WHERE source = 'socket' GROUP BY pair"""))
    want = {(e["pair"], str(e["trade_id"])) for e in truth(faulty.tdir, "events")
            if e["venue"] == venue and e["action"] == "F" and e["trade_id"] >= first[e["pair"]]}
    assert want <= {(p, t) for p, t, _ in ours}  # trades lost with the socket came back by REST


@pytest.mark.faults
def test_faults_malformed_frames_kept_raw_as_rejected(faulty):
    rej = dict(sql(faulty.root, """SELECT exchange, count(*) FROM read_parquet('$R/raw/**/*.parquet',
        hive_partitioning=true) WHERE status = 'rejected' AND reason IS NOT NULL GROUP BY ALL"""))
    refused = dict(sql(faulty.root, """SELECT exchange, count(*) FROM read_parquet('$R/raw/**/*.parquet',
        hive_partitioning=true) WHERE status = 'rejected' AND reason SIMILAR TO 'HTTP [0-9]+ \\((retried|giving up)\\)'
        GROUP BY ALL"""))  # refused REST responses: rate_limited/error rows in sessions instead
    for v in L3 + ("bitopro",):
        assert rej.get(v, 0) - refused.get(v, 0) >= 3, (rej, refused)
    for v in L3:  # a book message lost while its pair's book was known is a gap until a fresh snapshot
        rows = [r for r in sessions(faulty, v) if r[2].startswith("ws:")]
        joined = dict.fromkeys(PAIRS, False)
        for i, (_, pair, _, kind, detail, _, _) in enumerate(rows):
            if kind == "connect":
                joined = dict.fromkeys(PAIRS, False)
            elif kind == "snapshot" and detail.startswith("R+S"):
                joined[pair] = True
            elif kind == "gap":
                joined[pair] = False
            elif kind == "reject" and joined.get(pair):
                assert rows[i + 1][1] == pair and rows[i + 1][3] == "gap", rows[i + 1]
                assert rows[i + 1][4].startswith("book message lost"), rows[i + 1]
        assert sum(r[3] == "reject" for r in rows) >= 3, v
    n_reject_rows = sum(1 for r in sessions(faulty) if r[3] == "reject")
    assert n_reject_rows == sum(rej.values()) - sum(refused.values())
    m = faulty.daemon.metrics
    assert sum(m.value("rejects", f"{v}:book") for v in L3) >= 6


@pytest.mark.faults
def test_faults_429_and_5xx_are_sessions_rows_and_the_rate_limit_is_never_exceeded(faulty):
    rows = sessions(faulty)
    kinds = Counter((r[0], r[3]) for r in rows)
    for v in ("btcalpha", "bitexbit", "bitopro", "bitbay"):
        assert kinds[(v, "rate_limited")] >= 1, v
        assert kinds[(v, "error")] >= 1, v
    rest = [m for m in truth(faulty.tdir, "messages") if m["conn"] == "rest"]
    for v in ("btcalpha", "bitexbit", "bitopro", "bitbay"):
        statuses = Counter(m["status"] for m in rest if m["venue"] == v)
        assert statuses[429] == 6, (v, statuses)  # only the injected ones: the venue's own limit never tripped
        rate = next(c.rate_limit for c in faulty.cfg.venues if c.name == v)
        times = sorted(m["ts_wall"] for m in rest if m["venue"] == v)
        for i, t in enumerate(times):  # token bucket, burst 1: at most 1 + rate * T requests in any window T
            j = i
            while j < len(times) and times[j] < t + 2_000_000_000:
                j += 1
            assert j - i <= 1 + rate * 2 + 1, (v, i)  # +1: response times jitter against request times



@pytest.mark.faults
def test_faults_refused_rest_bodies_are_kept_raw_as_rejected(faulty):
    """Every 429 and 5xx body the venues sent is in raw with status rejected, like the 200s with status ok."""
    raw = Counter((v, bytes(p), st) for v, p, st in sql(faulty.root, """SELECT exchange, payload, status
        FROM read_parquet('$R/raw/**/*.parquet', hive_partitioning=true) WHERE stream LIKE 'rest%'"""))
    refused = [m for m in truth(faulty.tdir, "messages")
               if m["conn"] == "rest" and m["status"] != 200 and m["ts_wall"] < faulty.t_stop - 500_000_000]
    assert {m["status"] for m in refused} >= {429, 502}
    missing = []
    for m in refused:
        key = (m["venue"], m["payload"].encode(), "rejected")
        if raw[key]:
            raw[key] -= 1
        else:
            missing.append((m["venue"], m["status"], m["request"]))
    assert not missing


@pytest.mark.faults
def test_a_lost_book_message_resyncs_its_pair_on_the_same_connection(tmp_path):
    """Malformed frames after the joins: each is a gap of its pair, a fresh snapshot follows without a
    reconnect, and the recorded book ends exact (a lost cancel used to leave its order in the book)."""
    run = Run(tmp_path, seconds=9.0, rate=8.0, faults=[(4.5, Fault("malformed", "all", count=2))]).go()
    assert run.exit_code == 0
    for v in L3:
        rows = [r for r in sessions(run, v) if r[2].startswith("ws:")]
        assert sum(r[3] == "connect" for r in rows) == 1 and sum(r[3] == "disconnect" for r in rows) == 1, v
        lost = [i for i, r in enumerate(rows) if r[3] == "gap" and r[4].startswith("book message lost")]
        assert lost, v
        for i in lost:
            assert any(r[3] == "snapshot" and r[1] == rows[i][1] and r[4].startswith("R+S") for r in rows[i:]), v
    assert_l3_books_end_true(run)

# ------------------------------------------------------------------------------------------ CLI
def test_cli_demo_and_status(tmp_path):
    from click.testing import CliRunner

    from recorder.cli import main

    root = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--seconds", "6", "--root", str(root), "--rate", "10"])
    assert res.exit_code == 0, res.output
    assert "rows per table and venue" in res.output and "sessions events per venue" in res.output
    status = CliRunner().invoke(main, ["status", "--root", str(root)])
    header = next(line for line in status.output.splitlines() if line.startswith("table"))
    assert status.exit_code == 0 and header.split() == ["table", "bitbay", "bitexbit", "bitopro", "btcalpha"]
    assert "no recorder running on this root" in status.output and "unsealed log rows: 0" in status.output
    book = next(line for line in status.output.splitlines() if line.startswith("book_events")).split()
    assert int(book[2]) > 0 and int(book[4]) > 0  # bitexbit and btcalpha recorded their L3 books


def test_cli_run_refuses_a_bad_config_naming_the_variable_not_the_value(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from recorder.cli import main

    cfg = tmp_path / "r.toml"
    cfg.write_text('[recorder]\nroot = "d"\n[venues.bitbay]\npairs = ["BTC_PLN"]\n'
                   'api_key_env = "X_KEY"\napi_secret_env = "X_SECRET"\n')
    monkeypatch.setenv("X_KEY", "value-that-must-not-show")
    monkeypatch.delenv("X_SECRET", raising=False)
    res = CliRunner().invoke(main, ["run", "--config", str(cfg)])
    assert res.exit_code != 0 and "X_SECRET" in res.output and "value-that-must-not-show" not in res.output


# ------------------------------------------------------------------------------------------ soak
@pytest.mark.soak
def test_soak_fault_storm_three_minutes(tmp_path):
    """Drops every 5 s, malformed frames, 429 storms, 5xx and stalls for 3 minutes: still exact at the end."""
    kinds = [Fault("drop", "all"), Fault("malformed", "all", count=5), Fault("http_error", "all", count=10, status=429),
             Fault("http_error", "all", count=5, status=500), Fault("stall", "all", seconds=4.0),
             Fault("duplicate", "all", count=5)]
    faults = [(5.0 * i, kinds[i % len(kinds)]) for i in range(1, 34)]
    run = Run(tmp_path, seconds=175.0, rate=8.0, faults=faults, doc_edit=_fast_heartbeats, settle=4.0).go()
    assert run.exit_code == 0
    assert_l3_books_end_true(run)
    for venue in L3:
        dup = sql(run.root, f"""SELECT count(*) FROM (SELECT trade_id FROM read_parquet(
            '$R/trades/exchange={venue}/**/*.parquet', hive_partitioning=true) GROUP BY pair, trade_id HAVING count(*) > 1)""")
        assert dup[0][0] == 0
    rest = [m for m in truth(run.tdir, "messages") if m["conn"] == "rest"]
    for v in ("btcalpha", "bitexbit", "bitopro", "bitbay"):
        injected = sum(f.count for _, f in faults if f.kind == "http_error" and f.status == 429)
        assert Counter(m["status"] for m in rest if m["venue"] == v)[429] <= injected


def test_engineio_v4_feed_is_exact_too(tmp_path):
    def eio4(doc):
        for v in L3:
            doc["venues"][v]["eio"] = 4
            doc["venues"][v]["channels"] = ["book"]

    run = Run(tmp_path, seconds=5.0, rate=8.0, doc_edit=eio4, settle=1.5).go()
    assert run.exit_code == 0
    assert_l3_books_end_true(run)
    urls = [d for k, d in sql(run.root, "SELECT kind, detail FROM read_parquet('$R/sessions/**/*.parquet')")
            if k == "connect" and "socket.io" in (d or "")]
    assert len(urls) == 2 and all("EIO=4" in u for u in urls)
