"""`replay import-mbo` never harms the dataset: validated names, nothing outside book_events, no silent mixing,
seqs from the root's lease, and no import while a recorder holds the root unless under a writer id of its own."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from recorder.store import Store
from recorder.store.seq import SeqLease
from replay import book as B
from replay import source
from replay.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_replay_cli import MBO_CSV  # noqa: E402
from replay_util import T0  # noqa: E402

H = source.HOUR_NS


def run(*args, ok: bool = True):
    res = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, (res.output, res.stderr, res.exception)
    return res


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def mbo_csv(tmp_path) -> Path:
    f = tmp_path / "in" / "mbo.csv"
    f.parent.mkdir()
    f.write_text(MBO_CSV)
    return f


@pytest.mark.parametrize("exchange, pair, message", [
    ("../../../escaped", "BTC_USD", "bad --exchange '../../../escaped'"),
    ("mbo", "BTC/USD", "bad --pair 'BTC/USD'"),
    ("mbo", "../BTC_USD", "bad --pair '../BTC_USD'"),
    ("MBO", "BTC_USD", "bad --exchange 'MBO'"),
    ("mbo", "BTCUSD", "bad --pair 'BTCUSD'"),  # the recorder's config wants BASE_QUOTE too
])
def test_unsafe_names_are_refused_in_one_line_and_nothing_is_written(tmp_path, mbo_csv, exchange, pair, message):
    root = tmp_path / "deep" / "a" / "b" / "root"
    root.mkdir(parents=True)
    before = tree(tmp_path)
    r = run("import-mbo", mbo_csv, "--root", root, "--exchange", exchange, "--pair", pair, ok=False)
    assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1 and message in r.stderr, r.stderr
    assert tree(tmp_path) == before


def test_a_pair_with_data_is_refused_unless_replace(tmp_path, mbo_csv):
    root = tmp_path / "root"
    run("import-mbo", mbo_csv, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD")
    files = {p: p.read_bytes() for p in root.rglob("*.parquet")}
    before = tree(root)
    other = mbo_csv.with_name("other.csv")
    other.write_text("ts,action,side,price,size,order_id\n2026-11-21T16:00:00Z,add,bid,99,1,7\n")
    r = run("import-mbo", other, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD", ok=False)
    assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1
    assert "already holds book data" in r.stderr and "--replace" in r.stderr
    assert tree(root) == before and all(p.read_bytes() == b for p, b in files.items())
    # a recorded venue's pair is refused the same way
    rec = tmp_path / "rec"
    with Store(rec, "recorder") as st:
        st.append("book_events", "btcalpha", "BTC_USD", dict(
            ts_event=[T0], ts_recv=[T0], seq=[st.next_seq()], session=[1], msg_seq=[None], action=["R"],
            side=[None], order_id=[None], price=[None], amount=[None], trade_id=[None], taker_order_id=[None]))
    r = run("import-mbo", other, "--root", rec, "--exchange", "btcalpha", "--pair", "BTC_USD", ok=False)
    assert "already holds book data" in r.stderr
    # --replace: the pair then holds exactly the new file's book
    run("import-mbo", other, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD", "--replace")
    assert source.hours(root, "book_events", "mbo", "BTC_USD", 0, 2**62) == [T0 + 2 * H]
    bk = B.book_at(root, "mbo", "BTC_USD", T0 + 2 * H)
    assert [o[3] for o in bk.orders] == [7]


def test_seqs_come_from_the_roots_lease_not_from_parquet_footers(tmp_path, mbo_csv):
    root = tmp_path / "root"
    # a recorder reserved a block and was killed before any of it reached Parquet: those seqs are taken
    taken = SeqLease(root, block=1000)
    first = taken.next()
    r = run("import-mbo", mbo_csv, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD")
    seqs = [s for h in (T0, T0 + H) for s in source.hour_events(root, "mbo", "BTC_USD", h).table.column("seq").to_pylist()]
    assert min(seqs) >= first + 1000, (first, seqs[:3])
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert SeqLease(root).next() > max(seqs)  # the lease moved past what the import used
    assert "imported 14 book_events rows" in r.output


def test_a_store_holding_the_root_blocks_the_import_unless_it_has_its_own_writer_id(tmp_path, mbo_csv):
    root = tmp_path / "root"
    with Store(root, "recorder"):
        before = tree(root)
        r = run("import-mbo", mbo_csv, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD", ok=False)
        assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "recorder" in r.stderr and "--writer-id" in r.stderr
        assert tree(root) == before
        r = run("import-mbo", mbo_csv, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD",
                "--writer-id", "recorder", ok=False)
        assert "already open" in r.stderr and len(r.stderr.splitlines()) == 1
        run("import-mbo", mbo_csv, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD", "--writer-id", "mbo1")


def test_import_beside_a_running_recorder(tmp_path, mbo_csv):
    """A real `recorder run` against the simulator: refused without a writer id; with one, no seq repeats."""
    from simfixtures import threaded_sim
    from test_e2e_process import KEY, PAIRS, SECRET, free_port, start, stop, wait_streaming, write_config

    from recorder.sim.server import SimConfig

    port = free_port()
    with threaded_sim(SimConfig(seed=3, pairs=PAIRS, rate=10.0, credentials={"bitbay": (KEY, SECRET)})) as ts:
        cfg = write_config(tmp_path, ts.sim.urls, metrics_port=port)
        log = tmp_path / "recorder.log"
        proc = start(cfg, log)
        try:
            wait_streaming(port, proc)
            root = tmp_path / "data"
            r = run("import-mbo", mbo_csv, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD", ok=False)
            assert r.exit_code == 1 and len(r.stderr.splitlines()) == 1 and "recorder" in r.stderr, r.stderr
            assert not (root / "book_events" / "exchange=mbo").exists()
            run("import-mbo", mbo_csv, "--root", root, "--exchange", "mbo", "--pair", "BTC_USD",
                "--writer-id", "mbo1")
            t_import = time.time_ns()
            time.sleep(2.0)  # the recorder goes on numbering after the import
        finally:
            code, _ = stop(proc)
    assert code == 0, log.read_text()[-3000:]
    con = duckdb.connect()
    seqs = con.execute(f"""SELECT seq, count(*) FROM (
        SELECT seq FROM read_parquet('{root}/book_events/**/*.parquet')
        UNION ALL SELECT seq FROM read_parquet('{root}/raw/**/*.parquet')
        UNION ALL SELECT seq FROM read_parquet('{root}/sessions/**/*.parquet')
        UNION ALL SELECT seq FROM read_parquet('{root}/trades/**/*.parquet')) GROUP BY seq HAVING count(*) > 1""").fetchall()
    assert seqs == []
    imported = con.execute(f"""SELECT min(seq), max(seq), count(*) FROM
        read_parquet('{root}/book_events/exchange=mbo/**/*.parquet', hive_partitioning=true)""").fetchone()
    assert imported[2] == 14
    later = con.execute(f"""SELECT count(*) FROM read_parquet('{root}/raw/**/*.parquet')
        WHERE epoch_ns(ts_recv) > {t_import}""").fetchone()[0]
    assert later > 0  # the recorder went on writing after the import, and no seq repeats (above)
