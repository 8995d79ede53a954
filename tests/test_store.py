"""Store: exact round trips, input validation, rotation, compaction, recovery, writers, backpressure."""
from __future__ import annotations

import decimal
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.procs import child_env
from recorder.store import Store, StoreError, partition_path
import recorder.store as store_mod
from recorder.store import compact as compact_mod
from schemas import TABLES

HOUR = 3600 * 10**9
T0 = 1_710_262_800 * 10**9  # 2024-03-12 17:00:00 UTC


def trades(seqs, ts=None, price=None, amount=None) -> dict:
    n = len(seqs)
    ts = ts if ts is not None else [T0 + s for s in seqs]
    return dict(ts_event=ts, ts_recv=ts, seq=list(seqs), session=[1] * n, trade_id=[f"t{s}" for s in seqs],
                price=price or ["1.5"] * n, amount=amount or ["2"] * n, taker_side=["buy"] * n,
                maker_order_id=[None] * n, taker_order_id=[None] * n, source=["rest"] * n)


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not any(x.startswith(("_", ".")) for x in p.relative_to(root).parts))


def read_all(root: Path, table: str = "trades") -> pa.Table:
    return pa.concat_tables([pq.ParquetFile(p).read() for p in parquet_files(root / table)])


def ddb(sql: str):
    return duckdb.sql(sql).fetchall()


def seconds_to_ns(text: str) -> int:
    """How a venue adapter normalises a seconds value, exactly."""
    return int(decimal.Decimal(text) * 10**9)


def test_exact_round_trip_pyarrow_and_duckdb(tmp_path):
    prices = ["936.00", "0.00000001", "100000000.00000000", repr(935.23)]
    ts = [seconds_to_ns("1710264.956584") * 1000, seconds_to_ns(repr(1485686507.0944622))]
    assert ts == [1710264956584000000, 1485686507094462200]
    ts = ts + ts
    with Store(tmp_path, "w") as s:
        seqs = [s.next_seq() for _ in range(4)]
        s.append("trades", "btcalpha", "BTC_USD", trades(seqs, ts=ts, price=prices, amount=prices))
    t = read_all(tmp_path).sort_by("seq")
    want = [decimal.Decimal(p) for p in prices]
    assert t.column("price").to_pylist() == want and t.column("amount").to_pylist() == want
    assert t.column("ts_recv").cast(pa.int64()).to_pylist() == ts
    assert t.schema.equals(TABLES["trades"].schema, check_metadata=True)
    rows = ddb(f"select price, amount, epoch_ns(ts_recv), epoch_ns(ts_event) "
               f"from read_parquet('{tmp_path}/trades/**/*.parquet', hive_partitioning=true) order by seq")
    assert [r[0] for r in rows] == want and [r[1] for r in rows] == want
    assert [r[2] for r in rows] == ts and [r[3] for r in rows] == ts
    cols = ddb(f"describe select * from read_parquet('{tmp_path}/trades/**/*.parquet', hive_partitioning=true)")
    types = {c[0]: c[1] for c in cols}
    assert types["price"] == "DECIMAL(38,18)" and types["ts_recv"] == "TIMESTAMPTZ_NS"
    assert types["exchange"] == "VARCHAR" and types["pair"] == "VARCHAR"


BAD = [
    ("missing column", lambda c: c.pop("source"), "missing columns ['source']"),
    ("unknown column", lambda c: c.update(extra=[1]), "unknown columns ['extra']"),
    ("null in non-nullable", lambda c: c.update(session=[None]), "session: null at row 0"),
    ("lossy decimal", lambda c: c.update(price=["0.1234567890123456789"]), "price"),
    ("overflowing decimal", lambda c: c.update(price=["12345678901234567890123"]), "price"),
    ("float decimal", lambda c: c.update(price=[935.23]), "never float"),
    ("garbage decimal", lambda c: c.update(amount=["1,5"]), "amount"),
    ("string in int", lambda c: c.update(seq=["7"]), "seq"),
    ("float timestamp", lambda c: c.update(ts_recv=[1.5]), "ts_recv"),
    ("string timestamp", lambda c: c.update(ts_recv=["1710264.956584"]), "ts_recv"),
    ("int in string", lambda c: c.update(source=[3]), "source"),
    ("arrow float price", lambda c: c.update(price=pa.array([1.5])), "price"),
    ("length mismatch", lambda c: c.update(trade_id=["a", "b"]), "trade_id"),
    ("scalar not sequence", lambda c: c.update(source="rest"), "source"),
]


@pytest.mark.parametrize("name,mutate,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_values_refused_others_land(tmp_path, name, mutate, msg):
    with Store(tmp_path, "w") as s:
        s.append("trades", "btcalpha", "BTC_USD", trades([1]))
        cols = trades([2])
        mutate(cols)
        with pytest.raises(StoreError, match="trades") as e:
            s.append("trades", "btcalpha", "BTC_USD", cols)
        assert msg in str(e.value)
        s.append("trades", "btcalpha", "BTC_USD", trades([3]))
    assert sorted(read_all(tmp_path).column("seq").to_pylist()) == [1, 3]


@pytest.mark.parametrize("table,exchange,pair", [
    ("trades", "btcalpha", "../../etc"), ("trades", "btcalpha", "BTC/USD"), ("trades", "btcalpha", ".."),
    ("trades", "btcalpha", ""), ("trades", "a/b", "BTC_USD"), ("trades", "..", "BTC_USD"),
    ("trades", "btcalpha", "BTC_USD\n"), ("trades", "btcalpha", "btc_usd"), ("../x", "btcalpha", "BTC_USD"),
    ("nope", "btcalpha", "BTC_USD"),
])
def test_bad_keys_refused_nothing_outside_root(tmp_path, table, exchange, pair):
    root = tmp_path / "root"
    with Store(root, "w") as s:
        s.append("trades", "btcalpha", "BTC_USD", trades([1]))
        with pytest.raises(StoreError, match="table|exchange|pair") as e:
            s.append(table, exchange, pair, trades([2]))
        assert repr(pair if "pair" in str(e.value) else exchange if "exchange" in str(e.value) else table) in str(e.value)
        s.append("trades", "btcalpha", "BTC_USD", trades([3]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert sorted(p.name for p in root.iterdir()) == ["_log", "_state", "trades"]
    assert sorted(read_all(root).column("seq").to_pylist()) == [1, 3]
    with pytest.raises(StoreError):
        partition_path(root, table, exchange, pair, "2024-03-12")


def test_partition_path(tmp_path):
    p = partition_path(tmp_path, "trades", "btcalpha", "BTC_USD", "2024-03-12")
    assert p == tmp_path / "trades" / "exchange=btcalpha" / "pair=BTC_USD" / "date=2024-03-12"
    for bad in ("2024-3-12", "../x", "2024-02-30"):
        with pytest.raises(StoreError, match="date"):
            partition_path(tmp_path, "trades", "btcalpha", "BTC_USD", bad)


def test_rotation_by_hour_day_and_size_then_compaction(tmp_path):
    t_day_end = 1_710_287_999 * 10**9  # 2024-03-12 23:59:59
    with Store(tmp_path, "w", segment_bytes=4096, max_pending_bytes=1 << 20, seal_interval=1e9) as s:
        # one batch spanning an hour and a day boundary is split by its ts_recv
        s.append("trades", "btcalpha", "BTC_USD", trades([1, 2, 3], ts=[t_day_end - HOUR, t_day_end, t_day_end + 2 * 10**9]))
        for i in range(40):  # size rotation: the background thread seals every ~4 KiB
            s.append("trades", "btcalpha", "BTC_USD", trades(range(100 + 10 * i, 110 + 10 * i)))
            deadline = time.monotonic() + 5
            while s.stats["pending_bytes"] >= 4096 and time.monotonic() < deadline:
                time.sleep(0.002)
        assert s.stats["rows_appended"] == 403
    assert s.stats["segments_converted"] >= 8
    base = tmp_path / "trades/exchange=btcalpha/pair=BTC_USD"
    assert sorted(p.name for p in base.iterdir()) == ["date=2024-03-12", "date=2024-03-13"]
    hours = {(p.parent.name, p.name[:3]) for p in parquet_files(tmp_path)}
    assert hours == {("date=2024-03-12", "h17"), ("date=2024-03-12", "h22"), ("date=2024-03-12", "h23"),
                     ("date=2024-03-13", "h00")}
    assert len(parquet_files(tmp_path)) == len(hours)  # compacted on close: one file per partition-hour
    assert s.stats["compactions"] >= 1
    t = read_all(tmp_path)
    assert sorted(t.column("seq").to_pylist()) == [1, 2, 3] + list(range(100, 500))
    for f in parquet_files(tmp_path):
        seq = pq.read_table(f, columns=["seq"]).column("seq").to_pylist()
        assert seq == sorted(seq)  # rows in order_by within each file
        assert "exchange" not in pq.ParquetFile(f).schema_arrow.names  # partition columns only in the path


def test_background_compaction_runs_in_a_child_process(tmp_path, monkeypatch):
    """The writer never merges in its own process (its RSS would keep the merge); a child does, while it runs."""
    def no_merge_here(*a, **k):
        raise AssertionError("merged in the writer's process")
    monkeypatch.setattr(compact_mod, "_merge", no_merge_here)
    monkeypatch.setattr(store_mod, "COMPACT_EVERY", 0.1)
    with Store(tmp_path, "w", seal_interval=0.05) as s:
        for i in range(3):  # three segments of one closed hour: three files to merge
            s.append("trades", "btcalpha", "BTC_USD", trades(range(10 * i, 10 * i + 10)))
            s.commit()
        assert len(parquet_files(tmp_path)) == 3
        deadline = time.monotonic() + 30
        while s.stats["compactions"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.stats["compactions"] == 1 and s.stats["last_error"] is None
        assert len(parquet_files(tmp_path)) == 1
    assert sorted(read_all(tmp_path).column("seq").to_pylist()) == list(range(30))


def test_close_does_not_wait_for_a_long_compaction(tmp_path, monkeypatch):
    """close(compact_wait) returns in time: a merge still running is stopped, and the next open redoes it."""
    monkeypatch.setattr(Store, "_start_compactor", lambda self: None)  # no compaction while setting up
    for i in range(3):
        with Store(tmp_path, f"w{i}") as s:  # three writers: three files of one closed hour
            s.append("trades", "btcalpha", "BTC_USD", trades(range(10 * i, 10 * i + 10)))
    monkeypatch.undo()
    assert len(parquet_files(tmp_path)) == 3
    slow = tmp_path / "slow.py"
    slow.write_text("import time, runpy, sys; time.sleep(30); sys.argv = ['x'] + sys.argv[1:]; "
                    "runpy.run_module('recorder.store.compact', run_name='__main__')")
    real_popen = store_mod.subprocess.Popen
    with monkeypatch.context() as m:
        m.setattr(store_mod.subprocess, "Popen", lambda args, **kw: real_popen([args[0], str(slow)] + args[3:], **kw))
        s = Store(tmp_path, "w9").open()
        t0 = time.monotonic()
        s.close(compact_wait=0.5)
        assert time.monotonic() - t0 < 2.5
    assert len(parquet_files(tmp_path)) == 3 and not list((tmp_path / "trades").rglob(".*"))
    with Store(tmp_path, "w9"):
        pass
    assert len(parquet_files(tmp_path)) == 1
    assert sorted(read_all(tmp_path).column("seq").to_pylist()) == list(range(30))


def test_compaction_child_stops_when_its_writer_dies(tmp_path):
    """kill -9 of the writer: its compaction child does not go on changing files behind the restart's back."""
    r, w = os.pipe()  # the child's request pipe stays open (held here): only the watchdog can end it
    script = ("import os, subprocess, sys, time; p = subprocess.Popen([sys.executable, '-m', 'recorder.store.compact', "
              "sys.argv[1]], stdin=int(sys.argv[2]), start_new_session=True); print(p.pid, flush=True); time.sleep(60)")
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(r)], stdout=subprocess.PIPE,
                              text=True, pass_fds=(r,), env=child_env())
    os.close(r)
    try:
        child = int(writer.stdout.readline())
        time.sleep(1.0)
        assert Path(f"/proc/{child}").exists()  # waiting for its request
        writer.kill()
        writer.wait()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not Path(f"/proc/{child}").exists()
    finally:
        os.close(w)


def test_compact_merges_out_of_order_files_sorted(tmp_path):
    with Store(tmp_path, "w") as s:
        for seqs in ([5, 9], [1, 7], [3]):  # overlapping key ranges: merged in memory and sorted
            s.append("book_levels", "bitopro", "ETH_BTC", dict(
                ts_event=[None] * len(seqs), ts_recv=[T0] * len(seqs), seq=seqs, session=[1] * len(seqs),
                snapshot_id=seqs, side=["bid"] * len(seqs), level=[0] * len(seqs), price=["1"] * len(seqs),
                amount=["1"] * len(seqs), count=[None] * len(seqs), source=["ws"] * len(seqs)))
            s.commit()
        assert len(parquet_files(tmp_path)) == 3
        s.compact()
        files = parquet_files(tmp_path)
        assert len(files) == 1
        assert pq.read_table(files[0]).column("seq").to_pylist() == [1, 3, 5, 7, 9]
        assert pq.ParquetFile(files[0]).schema_arrow == TABLES["book_levels"].schema


def test_compaction_quarantines_a_torn_file_instead_of_failing(tmp_path, capfd):
    """A torn input (a truncated file, say after a full disk or a bad copy) is moved to _quarantine/ with its
    relative path and one line on stderr; the hour's other files are merged and nothing is lost."""
    with Store(tmp_path, "w") as s:
        for seqs in ([5, 9], [1, 7], [3]):
            s.append("trades", "btcalpha", "BTC_USD", trades(seqs))
            s.commit()
        files = parquet_files(tmp_path)
        kept = sorted(x for f in files[1:] for x in pq.read_table(f).column("seq").to_pylist())
        torn = files[0]
        torn.write_bytes(torn.read_bytes()[:40])
        s.compact()
        left = parquet_files(tmp_path)
        assert len(left) == 1 and pq.read_table(left[0]).column("seq").to_pylist() == kept
        moved = tmp_path / "_quarantine" / torn.relative_to(tmp_path)
        assert moved.exists() and moved.stat().st_size == 40
    assert "quarantined unreadable file" in capfd.readouterr().err


def crash(store: Store) -> None:
    """Stop a store as kill -9 would: no close(), background thread gone, lock released."""
    store._stop.set()
    store._wake.set()
    store._thread.join()
    store._release()


def test_recovery_after_crash_between_rename_and_segment_delete(tmp_path):
    s = Store(tmp_path, "w").open()
    s.append("trades", "btcalpha", "BTC_USD", trades([1, 2], ts=[T0, T0 + HOUR]))
    s.append("trades", "bitopro", "BTC_USD", trades([3]))
    s.flush()
    seg = next((tmp_path / "_log/w").iterdir())
    saved = seg.read_bytes()
    s.commit()  # Parquet files renamed into place, segment deleted...
    before = {p: p.read_bytes() for p in parquet_files(tmp_path)}
    seg.write_bytes(saved)  # ...but pretend the delete never reached the disk
    crash(s)
    with Store(tmp_path, "w") as s2:
        assert s2.stats["segments_converted"] == 2  # the leftover + the empty active segment
    after = {p: p.read_bytes() for p in parquet_files(tmp_path)}
    assert after == before  # re-conversion rewrote identical files, added nothing
    assert sorted(read_all(tmp_path).column("seq").to_pylist()) == [1, 2, 3]


def test_recovery_truncates_torn_tail(tmp_path):
    s = Store(tmp_path, "w").open()
    s.append("trades", "btcalpha", "BTC_USD", trades([1, 2]))
    s.flush()
    seg = next((tmp_path / "_log/w").iterdir())
    crash(s)
    with open(seg, "ab") as f:
        f.write(b"\x40\x00\x00\x00\xde\xad\xbe\xef" + b"\x00" * 20)  # a frame torn mid-write
    with Store(tmp_path, "w"):
        pass
    assert read_all(tmp_path).column("seq").to_pylist() == [1, 2]


def _files_in_one_hour(tmp_path, n=3) -> Store:
    s = Store(tmp_path, "w").open()
    for i in range(n):
        s.append("trades", "btcalpha", "BTC_USD", trades([10 * i + 1, 10 * i + 2]))
        s.commit()
    assert len(parquet_files(tmp_path)) == n
    return s


def test_compaction_crash_after_output_rolls_forward(tmp_path, monkeypatch):
    s = _files_in_one_hour(tmp_path)
    real_unlink = Path.unlink

    def dying_unlink(self, *a, **k):
        if self.suffix == ".parquet":
            raise RuntimeError("crash")
        return real_unlink(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", dying_unlink)
    with pytest.raises(RuntimeError):
        s.compact()
    monkeypatch.undo()
    assert len(parquet_files(tmp_path)) == 4  # the documented window: inputs and output both visible
    crash(s)
    with Store(tmp_path, "w"):
        pass
    assert len(parquet_files(tmp_path)) == 1
    assert sorted(read_all(tmp_path).column("seq").to_pylist()) == [1, 2, 11, 12, 21, 22]
    assert not list((tmp_path / "_state/compact").iterdir())


def test_compaction_crash_before_output_rolls_back(tmp_path, monkeypatch):
    s = _files_in_one_hour(tmp_path)

    def dying_publish(tmp, final):
        raise RuntimeError("crash")

    monkeypatch.setattr(compact_mod, "publish", dying_publish)
    with pytest.raises(RuntimeError):
        s.compact()
    monkeypatch.undo()
    assert list(tmp_path.rglob(".*.tmp"))  # a temp left behind, invisible to readers
    crash(s)
    with Store(tmp_path, "w"):
        pass
    assert not list(tmp_path.rglob(".*.tmp"))
    assert sorted(read_all(tmp_path).column("seq").to_pylist()) == [1, 2, 11, 12, 21, 22]
    assert len(parquet_files(tmp_path)) == 1  # close() compacted it properly afterwards


def test_two_writers_one_root(tmp_path):
    a, b = Store(tmp_path, "a").open(), Store(tmp_path, "b").open()
    with pytest.raises(StoreError, match="writer id 'a' is already open"):
        Store(tmp_path, "a").open()

    def work(s: Store):
        for _ in range(30):
            first = s.next_seq(5)
            s.append("trades", "btcalpha", "BTC_USD", trades(range(first, first + 5)))
            s.commit()

    threads = [threading.Thread(target=work, args=(x,)) for x in (a, b)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    a.close()
    b.close()
    seqs = read_all(tmp_path).column("seq").to_pylist()
    assert len(seqs) == 300 and len(set(seqs)) == 300
    assert len(parquet_files(tmp_path)) == 1


def test_seq_lease_unique_across_processes_and_restarts(tmp_path):
    code = ("import sys; from recorder.store.seq import SeqLease; s = SeqLease(sys.argv[1], block=7); "
            "print(' '.join(str(s.next(1 + i % 3)) for i in range(300)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1]) for _ in range(3)]
    outs = [list(map(int, p.communicate()[0].split())) for p in procs]
    for out in outs:
        assert out == sorted(out) and len(out) == 300
    firsts = [x for out in outs for x in out]
    assert len(set(firsts)) == len(firsts)
    with Store(tmp_path, "w") as s:
        assert s.next_seq(10) > max(firsts)


def test_backpressure_blocks_then_refuses(tmp_path):
    s = Store(tmp_path, "w", max_pending_bytes=8 << 10, overload_timeout=0.3).open()
    with s._convert_lock:  # conversion stalled
        with pytest.raises(StoreError, match="store overloaded"):
            for i in range(100):
                s.append("trades", "btcalpha", "BTC_USD", trades(range(10 * i, 10 * i + 10)))
        assert s.stats["pending_bytes"] <= 8 << 10
    s.append("trades", "btcalpha", "BTC_USD", trades([5000]))  # conversion resumed: room again
    s.close()
    assert 5000 in read_all(tmp_path).column("seq").to_pylist()
    with pytest.raises(StoreError, match="exceeds max_pending_bytes"):
        with Store(tmp_path, "w", max_pending_bytes=256) as s:
            s.append("trades", "btcalpha", "BTC_USD", trades(range(100)))


def test_deterministic_bytes(tmp_path):
    outs = []
    for run in ("x", "y"):
        root = tmp_path / run
        with Store(root, "w") as s:
            for i in range(3):
                s.append("trades", "btcalpha", "BTC_USD", trades(range(10 * i, 10 * i + 10)))
                s.commit()
        outs.append({str(p.relative_to(root)): p.read_bytes() for p in parquet_files(root)})
    assert outs[0] == outs[1] and len(outs[0]) == 1


def test_readers_skip_internal_and_temp_files(tmp_path):
    with Store(tmp_path, "w") as s:
        s.append("trades", "btcalpha", "BTC_USD", trades([1]))
    d = partition_path(tmp_path, "trades", "btcalpha", "BTC_USD", "2024-03-12")
    # the store's temp names: dot prefix (pyarrow skips) and .tmp suffix (DuckDB's *.parquet glob skips)
    shutil.copy(next(d.iterdir()), d / ".h17-w-1.parquet.tmp")
    (d / ".h18-w-2.parquet.tmp").write_bytes(b"PAR1 torn")
    assert pq.read_table(tmp_path / "trades").num_rows == 1
    glob = f"read_parquet('{tmp_path}/trades/**/*.parquet', hive_partitioning=true)"
    assert ddb(f"select count(*) from {glob}")[0][0] == 1
    # internal data lives in <root>/_log and <root>/_state, outside every table directory
    assert pq.read_table(tmp_path / "trades").num_rows == 1
    assert {p.name for p in tmp_path.iterdir()} == {"trades", "_log", "_state"}


def test_append_does_not_fsync_flush_does_and_stats(tmp_path):
    with Store(tmp_path, "w", fsync_interval=1e9, seal_interval=1e9) as s:
        base = s.stats["fsyncs"]
        assert s.append("trades", "btcalpha", "BTC_USD", trades([1, 2])) == 2
        assert s.append("trades", "btcalpha", "BTC_USD", trades([])) == 0
        st = s.stats
        assert st["fsyncs"] == base and st["rows_appended"] == 2 and st["pending_bytes"] > 0
        s.flush()
        st = s.stats
        assert st["fsyncs"] == base + 1 and st["last_fsync_ts"] is not None
        assert {"rows_appended", "bytes_logged", "pending_bytes", "fsyncs", "files_written", "last_fsync_ts"} <= set(st)
    assert s.stats["files_written"] == 1 and s.stats["pending_bytes"] == 0
    with pytest.raises(StoreError, match="not open"):
        s.append("trades", "btcalpha", "BTC_USD", trades([3]))
    s.close()  # idempotent


_COMPACT_PEAK = r"""
import json, sys
from pathlib import Path
import pyarrow as pa
from recorder.store import compact
from schemas import TABLES
for name, d in json.loads(sys.argv[1]):
    assert compact.compact_hour(Path(sys.argv[2]), TABLES[name], Path(d), 17)
print(pa.default_memory_pool().max_memory())
"""


def test_compaction_memory_bounded_whatever_the_hour_size(tmp_path):
    """A ~300 MB hour in 30 segment files per table compacts with a pool peak of a few tens of MB."""
    import numpy as np

    from recorder.store.writer import segment_file_name, write_file
    n, n_raw, segments = 1_500_000, 120_000, 30
    ev_t, raw_t = TABLES["book_events"], TABLES["raw"]
    rng = np.random.default_rng(0)
    ts = pa.array(T0 + np.arange(n) * 2_000_000, pa.int64())
    dec = pa.array(rng.integers(1, 10**6, n), pa.int64()).cast(ev_t.schema.field("price").type)
    events = pa.table({
        "ts_event": ts.cast(ev_t.schema.field("ts_event").type), "ts_recv": ts.cast(ev_t.schema.field("ts_recv").type),
        "seq": pa.array(np.arange(n) * 2, pa.int64()), "session": pa.array(np.ones(n, np.int64)),
        "msg_seq": pa.array(np.arange(n) * 2 - 1, pa.int64()),
        "action": pa.array(np.array(["A", "C", "F"])[rng.integers(0, 3, n)]),
        "side": pa.array(np.array(["bid", "ask"])[rng.integers(0, 2, n)]),
        "order_id": pa.array(rng.integers(0, 10**9, n), pa.int64()), "price": dec, "amount": dec,
        "trade_id": pa.nulls(n, pa.int64()), "taker_order_id": pa.nulls(n, pa.int64())}, schema=ev_t.schema)
    body = rng.integers(0, 256, n_raw * 1024, dtype=np.uint8).tobytes()
    payload = pa.Array.from_buffers(pa.binary(), n_raw, [None, pa.py_buffer(
        (np.arange(n_raw + 1, dtype=np.int32) * 1024).tobytes()), pa.py_buffer(body)])
    rts = pa.array(T0 + np.arange(n_raw) * 25_000_000, pa.int64()).cast(raw_t.schema.field("ts_recv").type)
    raw = pa.table({"ts_recv": rts, "seq": pa.array(np.arange(n_raw) * 2 + 1, pa.int64()),
                    "session": pa.array(np.ones(n_raw, np.int64)), "stream": pa.array(["ws:x"] * n_raw),
                    "request": pa.nulls(n_raw, pa.string()), "status": pa.array(["ok"] * n_raw),
                    "reason": pa.nulls(n_raw, pa.string()), "payload": payload}, schema=raw_t.schema)
    hour_bytes = events.nbytes + raw.nbytes
    assert hour_bytes >= 200 << 20
    dirs = []
    for table, data in ((ev_t, events), (raw_t, raw)):
        d = partition_path(tmp_path, table.name, "btcalpha", "BTC_USD", "2024-03-12")
        step = -(-data.num_rows // segments)
        for i in range(segments):
            write_file(d / segment_file_name(17, "w", i + 1), table, data.slice(i * step, step))
        dirs.append((table.name, str(d)))
    del body, payload, raw, events, dec, ts, rts
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _COMPACT_PEAK, __import__("json").dumps(dirs), str(tmp_path)],
                         capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1])
    assert peak < 80 << 20, f"compaction pool peak {peak >> 20} MB for a {hour_bytes >> 20} MB hour"
    for name, d in dirs:
        files = parquet_files(Path(d))
        assert len(files) == 1
        pf = pq.ParquetFile(files[0])
        assert pf.metadata.num_rows == (n if name == "book_events" else n_raw)
        seq = pf.read(columns=["seq"]).column("seq").to_numpy()
        assert (seq[1:] > seq[:-1]).all()
        assert pf.schema_arrow == TABLES[name].schema


def test_conversion_uses_the_frames_kept_in_memory_within_their_cap(tmp_path, monkeypatch):
    """Sealed segments convert from the frames they kept (no read-back) to the same bytes a read-back gives;
    frames beyond half of max_pending_bytes are not kept, and that segment is read back."""
    reads = []
    recover = store_mod._log.recover
    monkeypatch.setattr(store_mod._log, "recover", lambda path: reads.append(path) or recover(path))
    batches = [trades(range(10 * i, 10 * i + 10)) for i in range(6)]
    outs = {}
    for run, keep in (("kept", True), ("read", False)):
        root = tmp_path / run
        with Store(root, "w", fsync_interval=1e9, seal_interval=1e9) as s:
            if not keep:
                s._seg.frames = None  # as if the cap had been reached: this segment is read back
            for b in batches:
                s.append("trades", "btcalpha", "BTC_USD", b)
            assert (s._held > 0) == keep
            s.commit()
            assert s._held == 0 and s.stats["pending_bytes"] == 0
        outs[run] = {str(p.relative_to(root)): p.read_bytes() for p in parquet_files(root)}
        assert len(reads) == (0 if keep else 1)
    assert outs["kept"] == outs["read"] and len(outs["kept"]) == 1

    reads.clear()
    root = tmp_path / "cap"
    with Store(root, "w", fsync_interval=1e9, seal_interval=1e9, max_pending_bytes=64 << 10) as s:
        with s._convert_lock:  # conversion stalled: sealed segments keep their frames meanwhile
            for i in range(30):  # ~1.8 kB each: 53 kB pending, within max_pending_bytes
                s.append("trades", "btcalpha", "BTC_USD", trades(range(10 * i, 10 * i + 10)))
                assert s._held <= 32 << 10
        s.commit()
        assert s._held == 0
    assert reads  # a segment past the cap was read back
    assert read_all(root).column("seq").to_pylist() == list(range(300))
