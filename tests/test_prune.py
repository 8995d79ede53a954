"""`recorder prune --older-than AGE [--table T]`: whole old partitions go, the current day never, readers and a
running writer unharmed."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recorder.store import Store
from recorder.store import prune as P
from replay import sql as S
from replay_util import rows_table

PRUNE = [sys.executable, "-c", "from recorder.cli import main; main()", "prune"]
NOW = dt.datetime.now(dt.timezone.utc)


def day(days_ago: int) -> dt.datetime:
    return (NOW - dt.timedelta(days=days_ago)).replace(hour=12, minute=0, second=0, microsecond=0)


def put(root: Path, table: str, when: dt.datetime, name: str = "h12-old-c0.parquet") -> Path:
    ts = int(when.timestamp()) * 10**9
    row = dict(ts_recv=ts, stream="s", seq=ts // 1000, session=1, payload=b"x", status="ok") if table == "raw" else \
        dict(ts=ts, stream="s", seq=ts // 1000, session=1, kind="connect", detail="")
    d = root / table / "exchange=btcalpha" / "pair=BTC_USD" / f"date={when.date().isoformat()}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_table(table, [row]), d / name)
    return d / name


def dates(root: Path, table: str) -> list[int]:
    return sorted((NOW.date() - dt.date.fromisoformat(p.name[5:])).days
                  for p in root.glob(f"{table}/exchange=*/pair=*/date=*"))


def test_age_and_cutoff():
    assert P.parse_age("30d") == dt.timedelta(days=30) and P.parse_age("36h") == dt.timedelta(hours=36)
    with pytest.raises(P.PruneError):
        P.parse_age("30")
    now = dt.datetime(2026, 12, 2, 5, tzinfo=dt.timezone.utc)
    assert P.cutoff(dt.timedelta(days=30), now) == "2026-11-02"
    assert P.cutoff(dt.timedelta(0), now) == "2026-12-02"  # 0d: every day but today


def test_prune_keeps_the_current_day_and_other_tables(tmp_path):
    for table in ("raw", "sessions"):
        for ago in (0, 1, 29, 31, 45):
            put(tmp_path, table, day(ago))
    out = subprocess.run([*PRUNE, "--root", str(tmp_path), "--older-than", "30d", "--table", "raw", "--dry-run"],
                         capture_output=True, text=True, check=True)
    assert "2 partition(s) to drop" in out.stdout and dates(tmp_path, "raw") == [0, 1, 29, 31, 45]
    out = subprocess.run([*PRUNE, "--root", str(tmp_path), "--older-than", "30d", "--table", "raw"],
                         capture_output=True, text=True, check=True)
    assert "2 partition(s) dropped" in out.stdout
    assert dates(tmp_path, "raw") == [0, 1, 29] and dates(tmp_path, "sessions") == [0, 1, 29, 31, 45]
    subprocess.run([*PRUNE, "--root", str(tmp_path), "--older-than", "0d"], capture_output=True, check=True)
    assert dates(tmp_path, "raw") == [0] and dates(tmp_path, "sessions") == [0]
    bad = subprocess.run([*PRUNE, "--root", str(tmp_path), "--older-than", "30d", "--table", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "tables are" in bad.stderr


def test_prune_while_a_reader_and_a_writer_run(tmp_path):
    old = put(tmp_path, "raw", day(40))
    f = open(old, "rb")  # a reader that opened its file before the prune reads it to the end
    con = S.connect(tmp_path)
    assert con.execute("SELECT count(*) FROM raw").fetchone()[0] == 1
    stop = threading.Event()
    written = []

    errors = []

    def write():
        try:
            record()
        except BaseException as e:
            errors.append(e)

    def record():
        with Store(tmp_path, "live") as s:  # a recorder writing the current day meanwhile
            while not stop.is_set():
                first = s.next_seq(1)
                now = time.time_ns()
                s.append("raw", "btcalpha", "BTC_USD", dict(ts_recv=[now], stream=["s"], seq=[first], session=[1],
                                                             request=[None], payload=[b"y"], status=["ok"], reason=[None]))
                written.append(first)
                s.commit()
    t = threading.Thread(target=write)
    t.start()
    time.sleep(0.5)
    parts = P.prune(tmp_path, dt.timedelta(days=30))
    time.sleep(0.3)
    stop.set()
    t.join()
    assert not errors
    assert [p.date for p in parts] == [day(40).date().isoformat()]
    assert pq.read_table(f).num_rows == 1  # still readable through the open handle
    f.close()
    assert con.execute("SELECT count(*) FROM raw").fetchone()[0] == len(written) > 0  # a new query: none of it
    assert list((tmp_path / P.TRASH).iterdir())  # kept for the grace period
    P.empty_trash(tmp_path, grace=0)
    assert not list((tmp_path / P.TRASH).iterdir())
