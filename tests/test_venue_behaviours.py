"""Real-venue behaviours the simulator now reproduces, recorded end to end (simulator -> recorder -> dataset)."""
from __future__ import annotations

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
    rows = sql(bitopro.root, """SELECT pair, trade_id, epoch_ns(ts_event), source FROM read_parquet(
        '$R/trades/exchange=bitopro/**/*.parquet', hive_partitioning=true) ORDER BY seq""")
    assert len({r[1] for r in rows}) == len(rows)
    for pair in ("BTC_USD", "ETH_BTC"):
        ts = [t for p, _, t, src in rows if p == pair and src == "socket"]
        assert len(ts) > 5 and ts == sorted(ts)


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


def _alp(doc):
    url = doc["venues"]["btcalpha"]["ws_url"]
    doc["venues"] = {"btcalpha": {"api": "current", "pairs": doc["venues"]["btcalpha"]["pairs"], "channels": ["book"],
                                  "ws_url": url.replace("http://", "ws://") + "/alp-ws", "rest_url": url + "/api/web/",
                                  "rate_limit": 20.0, "heartbeat": 10.0, "book_limit": 300}}


#: venue -> (config edit, where a push's number is in its raw frame)
CURRENT = {"bitbay": (_zonda, lambda m: m["seqNo"]), "btcalpha": (_alp, lambda m: m[1])}


@pytest.fixture(scope="module", params=sorted(CURRENT))
def current(request, tmp_path_factory):
    venue = request.param
    run = Run(tmp_path_factory.mktemp(f"current-{venue}"), seconds=8.0, rate=6.0, doc_edit=CURRENT[venue][0],
              sim_kw={"checkpoint_every": 10}).go()
    return venue, run


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
    assert sql(run.root, "SELECT count(*) FROM read_parquet('$R/raw/**/*.parquet', hive_partitioning=true) "
               "WHERE status = 'rejected' AND stream LIKE 'ws:%'")[0][0] == 2  # the two malformed pushes
    for pair in ("BTC_USD", "ETH_BTC"):
        final = book_at(run.root, venue, pair, run.t_stop)
        true = _levels([{"side": "buy" if side == "bids" else "sell", "price": Decimal(o["price"]),
                         "amount": Decimal(o["amount"])} for side in ("bids", "asks")
                        for o in run.books[(venue, pair)][side]])
        assert {s: [(p.normalize(), a.normalize()) for p, a, _ in v] for s, v in final.levels().items()} == true
