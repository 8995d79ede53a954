"""`replay verify` after what a 24/7 recorder meets: restarts, kill -9, dropped connections and stalls.

Verify checks a grouped REST snapshot only where the replayed book is known exact; snapshots taken before
the first join, inside a gap (a late gap included) or before a connection's first event are skipped and
counted. A real mismatch still fails: one corrupted book_events amount makes verify exit non-zero.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402
from test_e2e_process import free_port, start, toml, wait_streaming  # noqa: E402

from recorder import config  # noqa: E402
from recorder.daemon import Daemon  # noqa: E402
from recorder.demo import demo_env, sim_doc  # noqa: E402
from recorder.sim.faults import Fault  # noqa: E402
from recorder.sim.server import SimConfig  # noqa: E402

pytestmark = pytest.mark.faults  # recordings under injected faults: make faults (run by .ci/run)

PAIRS = ["BTC_USD", "ETH_BTC"]
L3 = ("btcalpha", "bitexbit")
BOOKS = tuple(f"{v}:book" for v in L3)


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from replay.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def verify(root: Path, venue: str, pair: str) -> subprocess.CompletedProcess:
    return replay("verify", "--root", str(root), "--exchange", venue, "--pair", pair)


def assert_verify_ok(root: Path) -> dict[str, int]:
    """Every L3 venue and pair verifies with 0 mismatches; returns checked/skipped totals."""
    totals = {"checked": 0, "skipped": 0}
    for venue in L3:
        for pair in PAIRS:
            r = verify(root, venue, pair)
            assert r.returncode == 0, (venue, pair, r.stdout, r.stderr)
            assert "mismatches=0" in r.stdout and "verify ok" in r.stdout, r.stdout
            counts = {k: sum(int(n) for n in re.findall(rf"\b{k}=(\d+)", r.stdout)) for k in totals}
            assert counts["checked"] > 0, (venue, pair, r.stdout)
            for k in totals:
                totals[k] += counts[k]
    return totals


def fast(doc: dict) -> None:
    """Grouped snapshots every second, so every restart and gap has some taken inside it."""
    for v in L3:
        doc["venues"][v]["grouped_interval"] = 1.0
        doc["venues"][v]["heartbeat"] = 3.0
        doc["venues"][v]["channels"] = ["book", "grouped"]
    for v in ("bitopro", "bitbay"):
        doc["venues"].pop(v)


async def _session(ts, cfg, seconds: float, faults=()) -> None:
    d = Daemon(cfg)
    task = asyncio.create_task(d.run())
    t0 = time.monotonic()
    faults = sorted(faults, key=lambda f: f[0])
    while time.monotonic() - t0 < seconds:
        await asyncio.to_thread(ts.call, ts.sim.advance, 0.1)
        while faults and faults[0][0] <= time.monotonic() - t0:
            await asyncio.to_thread(ts.call, ts.sim.inject, faults.pop(0)[1])
        await asyncio.sleep(0.1)
        assert not task.done(), task
    d.stop()  # what SIGTERM does
    assert await asyncio.wait_for(task, 10) == 0


def record(tmp: Path, sessions: list[tuple[float, list]]) -> Path:
    """Record one simulator through consecutive daemon runs on one root (a graceful restart between each)."""
    root = tmp / "data"
    with threaded_sim(SimConfig(seed=3, pairs=PAIRS, rate=10.0, paced=False, warmup=30.0)) as ts:
        doc = sim_doc(ts.sim.urls, root, PAIRS)
        fast(doc)
        cfg = config.parse(doc, env=demo_env())
        for seconds, faults in sessions:
            asyncio.run(_session(ts, cfg, seconds, faults))
    return root


@pytest.fixture(scope="module")
def restarted(tmp_path_factory):
    return record(tmp_path_factory.mktemp("restart"), [(11.0, []), (11.0, [])])


def test_verify_passes_after_a_graceful_restart_and_counts_what_it_skipped(restarted):
    """Found: the grouped poll fires ~2 s before the L3 join after a restart and was compared with the
    previous run's stale book (mismatches=1 on btcalpha and bitexbit)."""
    totals = assert_verify_ok(restarted)
    assert totals["skipped"] > 0  # the snapshots polled before each run's first join


def test_verify_passes_across_dropped_connections_and_a_stall(tmp_path):
    """Drops and a stall longer than the heartbeat: grouped snapshots taken after the loss but before the
    gap row (a late gap) are skipped, every other one matches."""
    faults = [(5.0, Fault("drop", "all")), (12.0, Fault("stall", "all", seconds=4.0)), (22.0, Fault("drop", "all"))]
    root = record(tmp_path, [(28.0, faults)])
    assert assert_verify_ok(root)["skipped"] > 0


def test_verify_passes_after_kill_9_and_restart(tmp_path):
    """kill -9 leaves no disconnect row: the restart's `start` row opens the gap instead."""
    port = free_port()
    with threaded_sim(SimConfig(seed=5, pairs=PAIRS, rate=10.0)) as ts:
        doc = sim_doc(ts.sim.urls, tmp_path / "data", PAIRS)
        fast(doc)
        doc["recorder"].update(fsync_interval=0.5, metrics_port=port, log_format="json", log_level="info")
        cfg = tmp_path / "recorder.toml"
        cfg.write_text(toml(doc))
        log = tmp_path / "recorder.log"
        p1 = start(cfg, log)
        wait_streaming(port, p1, streams=BOOKS)
        time.sleep(9.0)
        p1.kill()
        p1.wait(5)
        p2 = start(cfg, log)
        wait_streaming(port, p2, streams=BOOKS)
        time.sleep(10.0)
        p2.send_signal(signal.SIGTERM)
        assert p2.wait(15) == 0, log.read_text()[-3000:]
    assert assert_verify_ok(tmp_path / "data")["skipped"] > 0


def test_verify_fails_on_one_corrupted_amount_and_names_the_snapshot(restarted, tmp_path):
    """Corrupt one resting order's amount in a good dataset: verify exits non-zero and names a snapshot."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(restarted, root)
    venue, pair = "btcalpha", "BTC_USD"
    files = sorted((root / "book_events" / f"exchange={venue}" / f"pair={pair}").rglob("*.parquet"))
    tab = pq.read_table(files[0])
    acts = tab.column("action").to_pylist()
    i = next(i for i, a in enumerate(acts) if a == "S")  # a resting order of the first snapshot
    amounts = tab.column("amount").to_pylist()
    amounts[i] = amounts[i] * 2
    tab = tab.set_column(tab.schema.get_field_index("amount"), tab.schema.field("amount"),
                         pa.array(amounts, tab.schema.field("amount").type))
    pq.write_table(tab, files[0])
    r = verify(root, venue, pair)
    assert r.returncode != 0, r.stdout
    assert re.search(r"mismatch: snapshot \d+ ", r.stdout), r.stdout


# ------------------------------------------------------------------------------------------ bad files
def _broken_copy(restarted: Path, tmp: Path) -> tuple[Path, Path, Path]:
    """The restarted dataset with its first book_events file truncated and a junk .parquet beside it."""
    import shutil

    root = tmp / "data"
    shutil.copytree(restarted, root)
    part = next((root / "book_events" / "exchange=btcalpha" / "pair=BTC_USD").glob("date=*"))
    first = sorted(part.glob("*.parquet"))[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    junk = part / "zz-copied-by-hand.parquet"
    junk.write_text("not parquet at all\n")
    return root, first, junk


def _one_line_each(stderr: str, *paths: Path) -> None:
    for p in paths:
        lines = [ln for ln in stderr.splitlines() if str(p) in ln]
        assert len(lines) == 1 and "skipping" in lines[0] and "replay check" in lines[0], stderr


def test_a_truncated_and_a_junk_file_are_skipped_by_every_reader_naming_each(restarted, tmp_path):
    """Found: one unreadable file made every `replay sql` query fail (even SELECT 1), and `replay bbo`,
    `replay book` and `recorder status` end in a traceback that does not name the file."""
    root, torn, junk = _broken_copy(restarted, tmp_path)
    common = ["--root", str(root), "--exchange", "btcalpha", "--pair", "BTC_USD"]
    r = replay("sql", "--root", str(root), "SELECT 1 AS one")
    assert r.returncode == 0 and "one" in r.stdout, r.stderr
    _one_line_each(r.stderr, torn, junk)
    r = replay("sql", "--root", str(root), "--format", "csv",
               "SELECT count(*) AS n FROM book_events WHERE exchange = 'btcalpha' AND pair = 'BTC_USD'")
    assert r.returncode == 0 and int(r.stdout.split()[-1]) > 0, r.stderr
    r = replay("sql", "--root", str(root), "--write-catalog")
    assert r.returncode == 0, r.stderr
    last = int(replay("sql", "--root", str(root), "--format", "csv", "SELECT epoch_ns(max(ts_recv)) FROM book_events "
                      "WHERE exchange = 'btcalpha' AND pair = 'BTC_USD'").stdout.split()[-1])
    for args in (["bbo"], ["depth", "--every", "1s"], ["verify"], ["book", "--at", str(last)],
                 ["plot", "--out", str(tmp_path / "p.png")]):
        r = replay(*args, *common)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        _one_line_each(r.stderr, torn, junk)
    status = subprocess.run([sys.executable, "-c", "from recorder.cli import main; main()", "status", "--root",
                             str(root)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "book_events" in status.stdout, status.stderr
    _one_line_each(status.stdout, torn, junk)


def test_replay_check_lists_bad_files_and_quarantine_moves_them_keeping_their_path(restarted, tmp_path):
    root, torn, junk = _broken_copy(restarted, tmp_path)
    foreign = torn.parent / "zz-foreign.parquet"
    pq.write_table(pa.table({"seq": ["a"], "ts_recv": [1]}), foreign)  # seq as text: another schema
    stray = root / "trades" / "notes.parquet"
    stray.write_bytes(b"PAR1")
    r = replay("check", "--root", str(root))
    assert r.returncode == 1, r.stdout
    for p, kind in ((torn, "unreadable"), (junk, "unreadable"), (foreign, "foreign"), (stray, "outside the layout")):
        assert f"{kind}: {p.relative_to(root)}" in r.stdout, r.stdout
    r = replay("check", "--root", str(root), "--quarantine")
    assert r.returncode == 0, r.stdout + r.stderr
    for p in (torn, junk, foreign, stray):
        assert not p.exists() and (root / "_quarantine" / p.relative_to(root)).exists()
    assert replay("check", "--root", str(root)).returncode == 0
    r = replay("sql", "--root", str(root), "SELECT count(*) FROM book_events")
    assert r.returncode == 0 and "skipping" not in r.stderr, r.stderr
