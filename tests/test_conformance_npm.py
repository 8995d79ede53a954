"""`recorder run` against the REAL npm servers: socket.io 2.5.0 (engine.io protocol 3), socket.io 4 (protocol 4) and
raw engine.io 6, each broadcasting doc-shaped BTC-Alpha messages from a small deterministic book (tests/node/).

Each recording checks: every sent frame is in `raw`, byte-equal and in order; `book_events` are the sent messages'
events; the replayed book equals the server's book; `sessions` has no gap but the ones a server kill explains.
The client speaks websocket only (no long-polling), so "polling then upgrade" is covered as far as it can be: a server
offering both transports, which the client joins over websocket directly.
"""
from __future__ import annotations

import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from npmservers import install, node_venue, version  # noqa: E402
from replay_util import hour_openings  # noqa: E402
from test_e2e_process import free_port, sql, start, stop, toml  # noqa: E402

from replay.book import book_at  # noqa: E402

PAIRS = ["BTC_USD", "ETH_BTC"]
#: ~2.5 min: behind their own marker (make conformance, run by .ci/run after make test).
pytestmark = pytest.mark.conformance


@pytest.fixture(scope="session")
def npm():
    return install()


def write_config(tmp: Path, url: str, pairs=PAIRS, **venue) -> Path:
    doc = {"recorder": {"root": str(tmp / "data"), "fsync_interval": 0.2, "log_format": "json", "log_level": "info",
                        "metrics_port": free_port(), "backoff_base": 0.1, "backoff_cap": 0.5},
           "venues": {"btcalpha": {"pairs": list(pairs), "channels": ["book"], "ws_url": url,
                                   "rest_url": f"{url}/api/v1/", "heartbeat": 10.0, **venue}}}
    path = tmp / "recorder.toml"
    path.write_text(toml(doc))
    return path


def drive(node, seconds: float, per_step: int = 2) -> None:
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        node.step(per_step)
        time.sleep(0.05)


class Recording:
    """The recorder run as a process against `node`, driven for `seconds`; `between` runs mid-way (e.g. a kill)."""

    def __init__(self, tmp: Path, node, *, subscribed: int | None = None, connections: int = 1, seconds: float = 3.0,
                 between=None, **venue) -> None:
        self.tmp, self.node, self.root = tmp, node, tmp / "data"
        self.log = tmp / "recorder.log"
        proc = start(write_config(tmp, node.url, **venue), self.log)
        try:
            node.wait_clients(connections, subscribed=subscribed)
            drive(node, seconds)
            if between is not None:
                between(self)
                drive(node, seconds)
            time.sleep(2.5)  # the join look-ahead (2 s) and the last frames in flight
            assert proc.poll() is None, self.log.read_text()[-3000:]
        finally:
            self.code, _ = stop(proc)
        assert self.code == 0, self.log.read_text()[-3000:]

    def raw(self, pair: str) -> list[bytes]:
        return [bytes(p) for (p,) in sql(self.root, f"""SELECT payload FROM read_parquet(
            '$R/raw/exchange=btcalpha/pair={pair}/**/*.parquet') WHERE stream LIKE 'ws:%' ORDER BY seq""")]

    def sessions(self) -> list[tuple]:
        return sql(self.root, """SELECT kind, pair, detail FROM read_parquet('$R/sessions/**/*.parquet',
            hive_partitioning=true) ORDER BY seq""")


def message(wire: str) -> dict:
    """The order/cancel object of a sent frame (socket.io event or bare engine.io message)."""
    return json.loads(wire[2:])[1] if wire.startswith("42") else json.loads(wire)


def expected_events(msgs: list[dict]) -> list[tuple]:
    """(action, order_id, trade_id, amount) per the design: fills in message order, then A; a cancel is C."""
    out = []
    for m in msgs:
        if m.get("cancelled"):
            out.append(("C", m["oid"], None, None))
            continue
        for t in m["trades"]:
            out.append(("F", t["o_id"], t["tid"], Decimal(t["amount"])))
        if m["amount"] > 0:
            out.append(("A", m["oid"], None, Decimal(repr(m["amount"]))))
    return out


def check(rec: Recording, *, wire_prefix: str = "", restarts: int = 0) -> None:
    sent = rec.node.sent()
    assert len(sent) > 50
    for pair in PAIRS:
        mine = [s["wire"] for s in sent if s["pair"] == pair]
        got = [r for r in rec.raw(pair) if not r.startswith(b"4") or r[1:2] in (b"{", b"[") or r.startswith(b"42[")]
        assert got == [(wire_prefix + w).encode() for w in mine], pair  # byte-equal, in order, nothing else

        rows = sql(rec.root, f"""SELECT seq, action, epoch_ns(ts_recv), order_id, trade_id, amount FROM read_parquet(
            '$R/book_events/exchange=btcalpha/pair={pair}/**/*.parquet') ORDER BY seq""")
        marks = sql(rec.root, f"""SELECT epoch_ns(ts), kind FROM read_parquet('$R/sessions/**/*.parquet',
            hive_partitioning=true) WHERE pair IN ('{pair}', 'ALL')""")
        continued = hour_openings([r[:3] for r in rows], marks)  # a recording may cross a wall-clock hour
        segments, cur = [], None
        for seq, a, _, oid, tid, amt in rows:
            if a == "R" and seq not in continued:
                cur = []
                segments.append(cur)
            elif a in "AFC":
                cur.append((a, oid, None if tid is None else int(tid), None if a == "C" else Decimal(amt)))
        assert len(segments) == 1 + restarts, pair
        want = expected_events([message(w) for w in mine])
        pos = 0
        for seg in segments:  # each connection's events: a contiguous run of the sent ones, after its snapshot
            k = next(i for i in range(pos, len(want) + 1) if want[i:i + len(seg)] == seg)
            pos = k + len(seg)
        assert pos == len(want) and len(segments[-1]) > 20, pair  # up to the last message sent

        book = book_at(rec.root, "btcalpha", pair, time.time_ns())
        ours = {oid: (side, price, amount) for side, price, amount, oid in book.orders}
        truth = rec.node.book(pair)
        theirs = {o["id"]: (side, Decimal(o["price"]), Decimal(o["amount"]))
                  for side, key in (("ask", "sell"), ("bid", "buy")) for o in truth[key]}
        assert ours == theirs, pair

    kinds = [(k, p) for k, p, _ in rec.sessions()]
    # a server kill explains one gap per pair, and errors (the feed's failure, reconnects refused while it is down)
    bad = [s for s in rec.sessions() if s[0] in ("gap", "resync", "reject") or (s[0] == "error" and not restarts)]
    assert len(bad) == restarts * len(PAIRS) and all(k == "gap" for k, *_ in bad), bad
    assert kinds.count(("connect", None)) + sum(1 for k, p in kinds if k == "connect" and p) >= 1 + restarts
    rejected = sql(rec.root, "SELECT count(*) FROM read_parquet('$R/raw/**/*.parquet') WHERE status != 'ok'")
    assert rejected == [(0,)]


def test_socketio_2_protocol_3_two_pairs(npm, tmp_path):
    assert version(npm["sio2"], "socket.io") == "2.5.0"
    with node_venue(npm["sio2"], "sio", free_port(), PAIRS, tmp_path) as node:
        check(Recording(tmp_path, node, eio=3))


def test_socketio_4_protocol_4_two_pairs(npm, tmp_path):
    assert version(npm["sio4"], "socket.io").startswith("4.")
    with node_venue(npm["sio4"], "sio", free_port(), PAIRS, tmp_path) as node:
        check(Recording(tmp_path, node, eio=4))


def test_socketio_4_offering_polling_and_websocket(npm, tmp_path):
    """The server's default transports (polling first, upgrade to websocket): our websocket-only client joins
    over websocket directly, which every engine.io server allows."""
    with node_venue(npm["sio4"], "sio", free_port(), PAIRS, tmp_path, "--transports", "polling,websocket") as node:
        check(Recording(tmp_path, node, eio=4))


@pytest.mark.parametrize("pkg", ["sio2", "sio4"])
def test_server_kill_9_and_restart(npm, tmp_path, pkg):
    def kill_restart(rec: Recording) -> None:
        time.sleep(1.0)  # every frame delivered before the kill
        rec.node.kill()
        time.sleep(0.5)
        rec.node.start()
        rec.node.wait_clients(1)

    with node_venue(npm[pkg], "sio", free_port(), PAIRS, tmp_path) as node:
        check(Recording(tmp_path, node, eio=3 if pkg == "sio2" else 4, between=kill_restart), restarts=1)


# ---------------------------------------------------------------- raw engine.io (the seed's "engine.io protocol")
@pytest.mark.parametrize("subscribe", ["text", "json"])
def test_raw_engineio_6_one_connection_per_pair_named_by_its_subscription(npm, tmp_path, subscribe):
    """Bare JSON messages (no event name, new orders carry no pair): the pair is the one the connection subscribed."""
    assert version(npm["eio6"], "engine.io").startswith("6.")
    with node_venue(npm["eio6"], "eio", free_port(), PAIRS, tmp_path) as node:
        check(Recording(tmp_path, node, connections=2, subscribed=2, framing="engineio", subscribe=subscribe),
              wire_prefix="4")


def test_raw_engineio_protocol_3_on_a_configured_path(npm, tmp_path):
    with node_venue(npm["eio6"], "eio", free_port(), PAIRS, tmp_path, "--allow-eio3", "--path", "/feed/") as node:
        check(Recording(tmp_path, node, connections=2, subscribed=2, framing="engineio", ws_path="feed", eio=3),
              wire_prefix="4")


# ---------------------------------------------------------------- a wrong or unknown protocol setting
@pytest.mark.parametrize("pkg,eio", [("sio2", "auto"), ("sio4", "auto"), ("sio2", 4)])
def test_heartbeat_survives_an_unknown_or_wrong_protocol_setting(npm, tmp_path, pkg, eio):
    """Servers drop a client after pingInterval + pingTimeout (here 1 + 2 s) without a heartbeat; protocol 3
    wants the client to ping, 4 the server. `auto` (and a wrong 4) must keep the connection alive either way."""
    with node_venue(npm[pkg], "sio", free_port(), PAIRS, tmp_path) as node:
        check(Recording(tmp_path, node, eio=eio, seconds=4.0))


def test_auto_is_the_default(npm, tmp_path):
    with node_venue(npm["sio2"], "sio", free_port(), PAIRS, tmp_path) as node:
        check(Recording(tmp_path, node, seconds=4.0))


def test_a_refusing_server_s_reason_is_logged_in_one_line(npm, tmp_path):
    """socket.io 4 without allowEIO3 refuses protocol 3 with HTTP 400 {"code":5,"message":"Unsupported protocol
    version"}: that reason must reach the log, on one line, not just a close code."""
    with node_venue(npm["sio4"], "sio", free_port(), PAIRS, tmp_path) as node:
        log = tmp_path / "recorder.log"
        proc = start(write_config(tmp_path, node.url, eio=3), log)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "Unsupported protocol version" not in log.read_text():
                time.sleep(0.1)
        finally:
            stop(proc)
        lines = [ln for ln in log.read_text().splitlines() if "Unsupported protocol version" in ln]
        assert lines, log.read_text()[-3000:]
        rec = json.loads(lines[0])
        assert "HTTP 400" in rec["msg"] + json.dumps(rec)
