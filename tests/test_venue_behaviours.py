"""Real-venue behaviours the simulator now reproduces, recorded end to end (simulator -> recorder -> dataset)."""
from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_e2e_sim import Run, sql, truth  # noqa: E402


def _only(venue: str, channels: list[str]):
    def edit(doc):
        doc["venues"] = {venue: {**doc["venues"][venue], "channels": channels}}
        doc["venues"][venue].pop("api_key_env", None)
        doc["venues"][venue].pop("api_secret_env", None)
    return edit


@pytest.fixture(scope="module")
def bitbay_trades(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("bitbay_trades"), seconds=5.0, rate=8.0,
               doc_edit=_only("bitbay", ["trades"])).go()


def test_bitbay_first_trades_poll_starts_from_the_newest_and_pages_forward(bitbay_trades):
    """trades.json without since is the venue's oldest page (2014 on the real one): the first poll must ask
    sort=desc, then page forward from the newest with since=<tid>, every trade once."""
    run = bitbay_trades
    for pair in ("BTC_USD", "ETH_BTC"):
        ids = sorted(int(t) for (t,) in sql(run.root, f"""SELECT trade_id FROM
            read_parquet('$R/trades/exchange=bitbay/pair={pair}/**/*.parquet')"""))
        made = sorted(e["trade_id"] for e in truth(run.tdir, "events")
                      if e["venue"] == "bitbay" and e["pair"] == pair and e["action"] == "F")
        first_poll = min(ids)
        assert len(made) > 120 and first_poll > made[0] + 50  # not the oldest page
        assert ids == sorted(set(ids)) and ids == [t for t in made if first_poll <= t <= ids[-1]]
        assert ids[-1] == made[-1]  # caught up with the venue
    urls = [u for (u,) in sql(run.root, """SELECT request FROM read_parquet('$R/raw/**/*.parquet')
        WHERE request LIKE '%trades.json%' ORDER BY seq""")]
    assert "sort=desc" in urls[0] and "since" not in urls[0]
    assert all("since=" in u and "sort=asc" in u for u in urls[2:])


def _bitopro(doc):
    _only("bitopro", ["book", "trades", "rest_book"])(doc)
    doc["venues"]["bitopro"].update(book_interval=1.0, heartbeat=2.5, book_limit=10)


@pytest.fixture(scope="module")
def bitopro(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("bitopro"), seconds=8.0, rate=4.0, settle=4.0, doc_edit=_bitopro).go()


def test_bitopro_socket_books_after_the_first_frame_are_marked_rounded(bitopro):
    rows = sql(bitopro.root, """SELECT pair, session, snapshot_id, source, amount FROM read_parquet(
        '$R/book_levels/exchange=bitopro/**/*.parquet', hive_partitioning=true) WHERE source LIKE 'ws%'
        ORDER BY seq""")
    for pair in ("BTC_USD", "ETH_BTC"):
        snaps = {}
        for p, sess, sid, src, amount in rows:
            if p == pair:
                snaps.setdefault(sess, {}).setdefault(sid, set()).add((src, amount))
        assert len(snaps) == 1  # one connection: the 1 s pings keep it alive through a silent market (heartbeat 2.5 s)
        kinds = [{s for s, _ in v} for v in next(iter(snaps.values())).values()]
        assert kinds[0] == {"ws"} and len(kinds) > 3 and all(k == {"ws_rounded"} for k in kinds[1:])


def test_bitopro_replay_verify_accepts_rounding_and_catches_a_wrong_level(bitopro, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from replay.book import replay_hour
    from replay.source import HOUR_NS

    hour = bitopro.t_stop - bitopro.t_stop % HOUR_NS
    for pair in ("BTC_USD", "ETH_BTC"):
        res = replay_hour(bitopro.root, "bitopro", pair, hour, verify=True, book_kind="l2")
        assert res.mismatches == [] and res.checked > len(res.mismatches)
    # a wrong amount on every rounded socket book: each REST book taken while the book was stable disagrees
    bad = tmp_path / "bad"
    shutil.copytree(bitopro.root, bad)
    files = sorted((bad / "book_levels" / "exchange=bitopro" / "pair=BTC_USD").rglob("*.parquet"))
    tabs = [pq.read_table(f) for f in files]
    for f, t in zip(files, tabs):
        hit = [s == "ws_rounded" and lv == 0 and sd == "bid" for s, lv, sd in
               zip(t.column("source").to_pylist(), t.column("level").to_pylist(), t.column("side").to_pylist())]
        amounts = [a + 1 if h else a for a, h in zip(t.column("amount").to_pylist(), hit)]
        i = t.schema.get_field_index("amount")
        pq.write_table(t.set_column(i, t.schema.field(i), pa.array(amounts, t.schema.field(i).type)), f)
    res = replay_hour(bad, "bitopro", "BTC_USD", hour, verify=True, book_kind="l2")
    assert res.mismatches and all("disagrees with the socket book" in m for m in res.mismatches), res.mismatches


def test_bitopro_full_list_trade_pushes_recorded_once_oldest_first(bitopro):
    """TRADE pushes repeat the recent list, newest first: the socket trades are the true fills from the oldest
    one first received on, each once, oldest first, with its second, price, amount and taker side."""
    rows = sql(bitopro.root, """SELECT pair, trade_id, epoch_ns(ts_event), price, amount, taker_side, source
        FROM read_parquet('$R/trades/exchange=bitopro/**/*.parquet', hive_partitioning=true) ORDER BY seq""")
    assert len({r[1] for r in rows}) == len(rows)
    for pair in ("BTC_USD", "ETH_BTC"):
        got = [(t, p.normalize(), a.normalize(), side) for pr, _, t, p, a, side, src in rows
               if pr == pair and src == "socket"]
        assert len(got) > 5 and got == sorted(got, key=lambda g: g[0])
        made = [(e["ts"] // 10**9 * 10**9, *_as_trade(e)) for e in _fills(bitopro, "bitopro", pair)]
        k = made.index(got[0])
        assert got == made[k:k + len(got)]  # none missing or repeated since the first recorded
        assert len(got) >= len(made) - k - 20  # up to the venue's last list (its length: 20) at the stop


def _bitopro_unknown_pair(doc):
    _only("bitopro", ["book", "rest_book"])(doc)
    doc["venues"]["bitopro"].update(pairs=["DOGE_XYZ"], book_interval=1.0)


def test_bitopro_refusals_are_clear_errors(tmp_path):
    """A pair the venue does not list: REST answers 422 {"error": ...}, the websocket path HTTP 200 with an empty
    body. Both must say what the venue said, not just a status."""
    run = Run(tmp_path, seconds=3.0, rate=2.0, settle=0.5, doc_edit=_bitopro_unknown_pair, allow_unlisted=True).go()
    reasons = [r for (r,) in sql(run.root, """SELECT reason FROM read_parquet('$R/raw/**/*.parquet')
        WHERE status = 'rejected'""")]
    assert reasons and all(r.startswith("HTTP 422: pair not found") for r in reasons), reasons
    errors = [d for k, d in sql(run.root, "SELECT kind, detail FROM read_parquet('$R/sessions/**/*.parquet')")
              if k == "error" and "ws_book" in d]
    assert errors and "HTTP 200 without switching protocols" in errors[0], errors


# ------------------------------------------------------------------------- current era: Zonda websocket book
def _zonda(doc):
    url = doc["venues"]["bitbay"]["rest_url"].rsplit("/API/", 1)[0]
    doc["venues"] = {"bitbay": {"api": "current", "pairs": doc["venues"]["bitbay"]["pairs"], "channels": ["book"],
                                "ws_url": url.replace("http://", "ws://") + "/websocket/",
                                "rest_url": url + "/rest", "rate_limit": 1.0, "heartbeat": 10.0, "book_limit": 300}}


def _alp(doc, channels=("book",)):
    url = doc["venues"]["btcalpha"]["ws_url"]
    doc["venues"] = {"btcalpha": {"api": "current", "pairs": doc["venues"]["btcalpha"]["pairs"],
                                  "channels": list(channels), "ws_url": url.replace("http://", "ws://") + "/alp-ws",
                                  "rest_url": url + "/api/web/", "rate_limit": 20.0, "heartbeat": 10.0,
                                  "book_limit": 300}}


def _alp_with_trades(doc):
    _alp(doc, ("book", "trades"))


#: venue -> (config edit, where a push's number is in its raw frame)
CURRENT = {"bitbay": (_zonda, lambda m: m["seqNo"]), "btcalpha": (_alp, lambda m: m[1])}


@pytest.fixture(scope="module", params=sorted(CURRENT))
def current(request, tmp_path_factory):
    """Each current-era book recorded; alp-ws with its trades on the same connection."""
    venue = request.param
    edit = _alp_with_trades if venue == "btcalpha" else CURRENT[venue][0]
    run = Run(tmp_path_factory.mktemp(f"current-{venue}"), seconds=8.0, rate=6.0, doc_edit=edit,
              sim_kw={"checkpoint_every": 10}).go()
    return venue, run


def _fills(run, venue: str, pair: str) -> list[dict]:
    """The simulator's true fills of a pair, in trade id order."""
    return sorted((e for e in truth(run.tdir, "events") if e["venue"] == venue and e["pair"] == pair
                   and e["action"] == "F"), key=lambda e: e["trade_id"])


def _as_trade(e: dict) -> tuple:
    """A true fill as (price, amount, taker side): the event's side is the resting (maker) order's."""
    return e["price"].normalize(), e["amount"].normalize(), "sell" if e["side"] == "buy" else "buy"


def _levels(book_rows) -> dict:
    """{side: [(price, amount)]} best first from truth book rows (orders) aggregated per price."""
    from collections import defaultdict
    from decimal import Decimal

    agg = {"bid": defaultdict(Decimal), "ask": defaultdict(Decimal)}
    for r in book_rows:
        agg["bid" if r["side"] == "buy" else "ask"][r["price"].normalize()] += r["amount"]
    return {s: sorted(((p, a.normalize()) for p, a in agg[s].items()), reverse=s == "bid") for s in agg}


def test_current_era_book_equals_the_true_book_at_every_checkpoint_after_its_snapshot(current):
    """Zonda (seqNo pushes, absolute amounts) and BTC-Alpha alp-ws (update ids, signed deltas), each on a REST
    snapshot, replayed through the L2 path."""
    import json
    from collections import defaultdict

    from replay.book import book_at

    venue, zonda = current
    number = CURRENT[venue][1]
    for pair in ("BTC_USD", "ETH_BTC"):
        raw = dict(sql(zonda.root, f"""SELECT seq, payload FROM read_parquet(
            '$R/raw/exchange={venue}/pair={pair}/**/*.parquet') WHERE stream = 'ws:orderbook'"""))
        rows = sql(zonda.root, f"""SELECT snapshot_id, side, price, amount FROM read_parquet(
            '$R/book_levels/exchange={venue}/pair={pair}/**/*.parquet') WHERE source = 'ws' ORDER BY seq""")
        by_push: dict[int, dict] = {}
        snaps = defaultdict(lambda: {"bid": [], "ask": []})
        for sid, side, price, amount in rows:
            snaps[sid][side].append((price.normalize(), amount.normalize()))
        for sid, lv in snaps.items():
            if sid in raw:  # a push (the joined REST snapshot's own row is under the REST body's seq)
                by_push[number(json.loads(bytes(raw[sid])))] = lv
        book = [r for r in truth(zonda.tdir, "book") if r["venue"] == venue and r["pair"] == pair]
        checkpoints = defaultdict(dict)
        for r in book:  # an order once per checkpoint (the truth may write a checkpoint twice)
            checkpoints[r["checkpoint_seq"]][r["order_id"]] = r
        checkpoints = {k: list(v.values()) for k, v in checkpoints.items()}
        first = min(by_push)
        checked = [s for s in checkpoints if s >= first and s in by_push]
        assert len(checked) >= 5, (pair, sorted(checkpoints), first)
        for s in checked:
            assert by_push[s] == _levels(checkpoints[s]), (pair, s)
        final = book_at(zonda.root, venue, pair, zonda.t_stop)
        true = _levels([{"side": "buy" if side == "bids" else "sell", "price": Decimal(o["price"]),
                         "amount": Decimal(o["amount"])} for side in ("bids", "asks")
                        for o in zonda.books[(venue, pair)][side]])
        got = {s: [(p.normalize(), a.normalize()) for p, a, _ in v] for s, v in final.levels().items()}
        assert got == true, pair
    kinds = [k for (k,) in sql(zonda.root, "SELECT kind FROM read_parquet('$R/sessions/**/*.parquet')")]
    assert kinds.count("snapshot") == 2 and "gap" not in kinds and "reject" not in kinds


@pytest.mark.parametrize("venue", sorted(CURRENT))
def test_current_era_lost_push_is_a_gap_then_a_fresh_snapshot_and_the_book_ends_true(tmp_path, venue):
    """Malformed pushes (kept raw, rejected) make the next seqNo jump: a gap row per pair hit, a new snapshot,
    and the book still ends at the venue's."""
    from recorder.sim.faults import Fault
    from replay.book import book_at

    run = Run(tmp_path, seconds=7.0, rate=6.0, doc_edit=CURRENT[venue][0],
              faults=[(3.0, Fault("malformed", venue, count=2))]).go()
    kinds = [(k, p) for k, p in sql(run.root, """SELECT kind, pair FROM read_parquet('$R/sessions/**/*.parquet',
        hive_partitioning=true) ORDER BY seq""")]
    gaps = [p for k, p in kinds if k == "gap"]
    assert gaps and sum(1 for k, _ in kinds if k == "snapshot") == 2 + len(gaps)
    # the two malformed pushes, and nothing else: the start-up pair check reads the venue's list (200)
    assert sql(run.root, "SELECT stream, count(*) FROM read_parquet('$R/raw/**/*.parquet') WHERE status = 'rejected' "
               "GROUP BY ALL") == [("ws:orderbook", 2)]
    assert sql(run.root, "SELECT status FROM read_parquet('$R/raw/**/*.parquet') WHERE stream = 'rest:pairs'") \
        == [("ok",)]
    for pair in ("BTC_USD", "ETH_BTC"):
        final = book_at(run.root, venue, pair, run.t_stop)
        true = _levels([{"side": "buy" if side == "bids" else "sell", "price": Decimal(o["price"]),
                         "amount": Decimal(o["amount"])} for side in ("bids", "asks")
                        for o in run.books[(venue, pair)][side]])
        assert {s: [(p.normalize(), a.normalize()) for p, a, _ in v] for s, v in final.levels().items()} == true


@pytest.mark.parametrize("current", ["btcalpha"], indirect=True)
def test_alp_ws_trade_frames_are_the_true_fills_once_each_from_the_first_one_received(current):
    """`["t", s, id, pair, price, amount, taker side]` frames on the book's connection (`trade.*`) are trades rows
    (source socket): every true fill from the first received on, once, in order, with its price, amount, side and
    second."""
    venue, run = current
    for pair in ("BTC_USD", "ETH_BTC"):
        rows = sql(run.root, f"""SELECT trade_id, price, amount, taker_side, epoch_ns(ts_event), source FROM
            read_parquet('$R/trades/exchange=btcalpha/pair={pair}/**/*.parquet') ORDER BY seq""")
        assert len(rows) > 10 and {r[5] for r in rows} == {"socket"}
        ids = [int(r[0]) for r in rows]
        assert ids == sorted(set(ids))  # once each, in the venue's order
        made = [e for e in _fills(run, venue, pair) if e["trade_id"] >= ids[0]]
        assert [e["trade_id"] for e in made] == ids  # none missing since the first
        for r, e in zip(rows, made):
            assert (r[1].normalize(), r[2].normalize(), r[3]) == _as_trade(e) and r[4] == e["ts"] // 10**9 * 10**9
    raw = sql(run.root, """SELECT count(*) FROM read_parquet('$R/raw/**/*.parquet') WHERE stream = 'ws:orderbook'
        AND starts_with(decode(payload), '["t",')""")[0][0]
    assert raw == sum(1 for (_,) in sql(run.root, "SELECT 1 FROM read_parquet('$R/trades/**/*.parquet')"))


def test_alp_ws_trades_alone_take_one_connection_without_books_or_snapshots(tmp_path):
    """channels = ["trades"]: the connection subscribes `trade.*` only (feed ws_trades, stream ws:trades); no diff
    subscription, no depth snapshot, no book rows."""
    run = Run(tmp_path, seconds=3.0, rate=6.0, settle=1.0, doc_edit=lambda d: _alp(d, ("trades",))).go()
    streams = sql(run.root, "SELECT DISTINCT stream FROM read_parquet('$R/raw/**/*.parquet') ORDER BY 1")
    assert streams == [("rest:pairs",), ("ws:trades",)]
    sent = [m["payload"] for m in truth(run.tdir, "messages") if m["venue"] == "btcalpha" and m["conn"] != "rest"]
    assert sent and all(p.startswith('["t",') for p in sent)  # only trade frames were asked for
    for pair in ("BTC_USD", "ETH_BTC"):
        ids = [int(t) for (t,) in sql(run.root, f"""SELECT trade_id FROM
            read_parquet('$R/trades/exchange=btcalpha/pair={pair}/**/*.parquet') ORDER BY seq""")]
        assert ids and ids == [e["trade_id"] for e in _fills(run, "btcalpha", pair) if e["trade_id"] >= ids[0]]
    assert not list(run.root.glob("book_levels/**/*.parquet"))
    feeds = [f for (f,) in sql(run.root, "SELECT DISTINCT detail FROM read_parquet('$R/sessions/**/*.parquet') "
                                         "WHERE kind = 'connect'")]
    assert len(feeds) == 1 and "/alp-ws" in feeds[0]


def _zonda_rest(doc):
    _zonda(doc)
    # one request a second for everything (2 pairs' trades, 2 candle requests): the pollers take turns, a cycle of
    # both takes ~4 s, so the 8 s settle holds a whole one after the market froze
    doc["venues"]["bitbay"].update(channels=["trades", "candles"], resolutions=["3m"], trades_interval=2.0,
                                   candles_interval=4.0)


class RestartRun(Run):
    """Two recordings on one root; between them the market moves `pause` logical seconds with no recorder."""

    pause = 30.0

    async def _record(self, ts) -> None:
        await super()._record(ts)
        self.first_stop = self.t_stop
        await asyncio.to_thread(ts.call, ts.sim.advance, self.pause)
        await super()._record(ts)


@pytest.fixture(scope="module")
def zonda_rest(tmp_path_factory):
    # rate 30: the 30 s of history hold more than one 300-trade page, and so does the pause between the recordings
    return RestartRun(tmp_path_factory.mktemp("zonda_rest"), seconds=5.0, rate=30.0, settle=8.0,
                      doc_edit=_zonda_rest).go()


def test_zonda_transactions_start_from_the_newest_then_every_true_fill_once_across_a_restart(zonda_rest):
    """Zonda `transactions` ids are UUIDs: the poller's cursor is the newest trade's ms. The first poll asks sort=desc
    (the newest 300, written oldest first), later ones page forward (fromTime = cursor - 1, sort=asc) and the trade
    memory drops the overlap; a restart resumes from the dataset's newest ms and pages through the 300+ trades made
    while it was down (full pages: `backfill`)."""
    import uuid

    from recorder.sim.bitbay import TRADE_NS

    run = zonda_rest
    for pair in ("BTC_USD", "ETH_BTC"):
        rows = sql(run.root, f"""SELECT trade_id, price, amount, taker_side, epoch_ns(ts_event), source FROM
            read_parquet('$R/trades/exchange=bitbay/pair={pair}/**/*.parquet') ORDER BY seq""")
        fills = _fills(run, "bitbay", pair)
        tid = {str(uuid.uuid5(TRADE_NS, f"{pair}:{e['trade_id']}")): e for e in fills}
        got = [tid[r[0]] for r in rows]
        ids = [e["trade_id"] for e in got]
        assert ids == sorted(set(ids))  # no duplicate, oldest first (the desc first page reversed)
        assert ids[0] > fills[0]["trade_id"] and len([e for e in fills if e["trade_id"] < ids[0]]) > 0
        assert ids == [e["trade_id"] for e in fills if e["trade_id"] >= ids[0]]  # none missing after the first poll
        assert ids[-1] == fills[-1]["trade_id"]
        for r, e in zip(rows, got):
            assert (r[1].normalize(), r[2].normalize(), r[3]) == _as_trade(e) and r[4] == e["ts"] // 10**6 * 10**6
        assert "backfill" in {r[5] for r in rows}  # the pause's backlog came in full pages
    urls = [u for (u,) in sql(run.root, """SELECT request FROM read_parquet('$R/raw/**/*.parquet')
        WHERE request LIKE '%/transactions/%' ORDER BY seq""")]
    first = [u for u in urls if "sort=desc" in u]
    assert len(first) == 2 and all("fromTime" not in u for u in first)  # one newest-first poll per pair, once
    assert all("fromTime=" in u and "sort=asc" in u and "limit=300" in u for u in urls if u not in first)
    kinds = [k for (k,) in sql(run.root, "SELECT kind FROM read_parquet('$R/sessions/**/*.parquet')")]
    assert "gap" not in kinds and "reject" not in kinds and kinds.count("start") == 2


def test_zonda_candle_history_final_versions_match_the_venue(zonda_rest):
    """`candle/history` per resolution (seconds; from/to in ms): a version written only when it changed, and the
    latest version of each candle since the first is the venue's."""
    rows = sql(zonda_rest.root, """SELECT pair, resolution, epoch_ns(ts_open), close, volume FROM
        read_parquet('$R/candles/exchange=bitbay/**/*.parquet', hive_partitioning=true) ORDER BY seq""")
    latest, seen = {}, {}
    for pair, res, ts, close, vol in rows:
        assert seen.get((pair, res, ts)) != (close, vol)
        seen[(pair, res, ts)] = latest[(pair, res, ts)] = (close, vol)
    assert {(p, r) for p, r, _ in latest} == {("BTC_USD", "3m"), ("ETH_BTC", "3m")}
    for (_, pair, res), venue in zonda_rest.charts.items():
        ours = {k[2]: v for k, v in latest.items() if k[:2] == (pair, res)}
        want = {ts: v for ts, v in venue.items() if ts >= min(ours)}
        assert ours == want, (pair, res)
