"""Several `recorder run` processes writing one dataset root: writer ids, no file collisions, seq unique across
the dataset, per-stream order, per-writer compaction and views over everything."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402
from test_e2e_process import KEY, SECRET, free_port, start, stop, toml  # noqa: E402

from recorder.demo import sim_doc  # noqa: E402
from recorder.sim.server import SimConfig  # noqa: E402
from recorder.store.compact import writer_of  # noqa: E402
from replay import sql as S  # noqa: E402

pytestmark = pytest.mark.faults  # recordings under injected faults: make faults (run by .ci/run)

PAIRS = ["BTC_USD", "ETH_BTC"]


def config(tmp: Path, urls: dict, root: Path, writer: str, venues: dict[str, list[str]]) -> Path:
    """A config recording only `venues` (name -> pairs) into root as `writer`."""
    doc = sim_doc(urls, root, PAIRS)
    doc["venues"] = {v: dict(doc["venues"][v], pairs=p) for v, p in venues.items()}
    if "bitbay" in doc["venues"]:
        doc["venues"]["bitbay"].update(api_key_env="T_BITBAY_KEY", api_secret_env="T_BITBAY_SECRET")
    doc["recorder"].update(writer=writer, metrics_port=free_port(), log_level="warning")
    path = tmp / f"{writer}.toml"
    path.write_text(toml(doc))
    return path, doc["recorder"]["metrics_port"]


def wait_fed(port: int, proc: subprocess.Popen, feeds: list[str], timeout: float = 60.0) -> None:
    """Until each socket feed of the recorder has taken in messages (start-up time varies with the load)."""
    from test_e2e_process import wait_streaming

    wait_streaming(port, proc, timeout, streams=tuple(feeds))


def record_together(tmp: Path, urls: dict, root: Path, plans: dict[str, dict[str, list[str]]], seconds: float):
    cfgs = {w: config(tmp, urls, root, w, v) for w, v in plans.items()}
    procs = {w: start(c, tmp / f"{w}.log") for w, (c, _) in cfgs.items()}
    for w, (_, port) in cfgs.items():
        wait_fed(port, procs[w], [f"{v}:{'ws_book' if v == 'bitopro' else 'book'}" for v in plans[w] if v != "bitbay"])
    time.sleep(seconds)
    codes = {w: stop(p)[0] for w, p in procs.items()}
    assert codes == {w: 0 for w in plans}, {w: (tmp / f"{w}.log").read_text()[-2000:] for w in plans}


def check_dataset(root: Path, writers: set[str], exchanges: set[str]) -> None:
    files = [p for p in root.rglob("*.parquet") if not any(part.startswith("_") for part in p.relative_to(root).parts)]
    assert files
    # every file is one writer's, named for it; compaction left at most one file per writer and partition-hour
    by_hour = Counter((p.parent, p.name[:3], writer_of(p)) for p in files)
    assert {writer_of(p) for p in files} == writers
    assert max(by_hour.values()) == 1, [k for k, v in by_hour.items() if v > 1]
    con = S.connect(root)
    try:
        for table in ("raw", "book_events", "sessions"):
            n, distinct = con.execute(f"SELECT count(*), count(DISTINCT seq) FROM {table}").fetchone()
            on_disk = sum(pq.read_metadata(p).num_rows for p in files if p.relative_to(root).parts[0] == table)
            assert n == distinct == on_disk > 0, (table, n, distinct, on_disk)
        got = {r[0] for r in con.execute("SELECT DISTINCT exchange FROM raw").fetchall()}
        assert got == exchanges
        # per-stream order: each pair's events follow the capture order of the messages they came from
        back = con.execute("""SELECT exchange, pair, count(*) FROM (
            SELECT exchange, pair, msg_seq < lag(msg_seq) OVER (PARTITION BY exchange, pair ORDER BY seq) AS back
            FROM book_events) WHERE back GROUP BY ALL""").fetchall()
        assert back == []
    finally:
        con.close()


@pytest.mark.timeout(240)
def test_two_recorders_on_one_root(tmp_path):
    with threaded_sim(SimConfig(seed=11, pairs=PAIRS, rate=10.0, credentials={"bitbay": (KEY, SECRET)})) as ts:
        root = tmp_path / "data"
        record_together(tmp_path, ts.sim.urls, root, {"alpha": {"btcalpha": PAIRS},
                                                      "tw_pl": {"bitopro": PAIRS, "bitbay": PAIRS}}, 5.0)
        check_dataset(root, {"alpha", "tw_pl"}, {"btcalpha", "bitopro", "bitbay"})
        # the same venue, a pair each: venue-wide partitions get one file per writer, never a merged one
        root2 = tmp_path / "data2"
        record_together(tmp_path, ts.sim.urls, root2, {"btc": {"btcalpha": ["BTC_USD"]},
                                                       "eth": {"btcalpha": ["ETH_BTC"]}}, 5.0)
        check_dataset(root2, {"btc", "eth"}, {"btcalpha"})
        pairs = {w: {p.parent.parent.name for p in root2.glob("book_events/*/*/*/*.parquet") if writer_of(p) == w}
                 for w in ("btc", "eth")}
        assert pairs == {"btc": {"pair=BTC_USD"}, "eth": {"pair=ETH_BTC"}}
        shared = Counter(p.parent for p in root2.rglob("h??-*.parquet"))
        both = [d for d in shared if {writer_of(p) for p in d.glob("*.parquet")} == {"btc", "eth"}]
        assert both, "no partition written by both recorders"  # e.g. the venue-wide sessions rows
        # a second recorder with a writer id already running is refused with a one-line reason
        cfg, _ = config(tmp_path, ts.sim.urls, root2, "btc", {"btcalpha": ["BTC_USD"]})
        first = start(cfg, tmp_path / "dup1.log")
        time.sleep(3)
        dup = subprocess.run([sys.executable, "-c", "from recorder.cli import main; main()", "run", "--config",
                              str(cfg)], capture_output=True, text=True, timeout=60)
        assert stop(first)[0] == 0
        assert dup.returncode != 0 and "already running" in (dup.stdout + dup.stderr)
