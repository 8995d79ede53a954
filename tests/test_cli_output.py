"""What the replay commands print: rows written and where, an honest verify, and ISO times in errors."""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replay_util import T0, events_table, synth_l3, write_part
from test_replay_cli import EX, H, PAIR, run


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("out")
    tab = events_table(synth_l3(6000, seed=3, hours=2))
    hour = tab.column("ts_recv").cast(pa.int64()).to_numpy() // H
    for h in set(hour.tolist()):
        write_part(r, "book_events", EX, PAIR, tab.filter(pa.array(hour == h)), name=f"h{h}")
    return r


@pytest.mark.parametrize("cmd", [["bbo"], ["depth", "--levels", "3", "--every", "10s"]])
def test_rows_written_and_the_files(root, cmd):
    out = run(*cmd, "--root", root, "--exchange", EX, "--pair", PAIR).output
    table = cmd[0]
    lines = out.splitlines()
    per_hour = [re.search(rf"events=(\d+) .* {table}_rows=(\d+) -> (\S+)$", line) for line in lines[:-1]]
    assert len(per_hour) == 2 and all(per_hour)
    for m in per_hour:
        assert pq.ParquetFile(m.group(3)).metadata.num_rows == int(m.group(2))
    total = sum(int(m.group(2)) for m in per_hour)
    assert lines[-1] == f"wrote {total} {table} rows in 2 file(s) under {root / table / f'exchange={EX}' / f'pair={PAIR}'}"
    if table == "bbo":
        assert total != sum(int(m.group(1)) for m in per_hour)  # rows written, not events read


def test_verify_with_nothing_to_check_is_not_ok(root):
    r = run("verify", "--root", root, "--exchange", EX, "--pair", PAIR, ok=False)
    assert r.exit_code == 3 and "verify ok" not in r.output
    assert "nothing checked" in r.stderr and "checked=0" in r.output
    r = run("verify", "--root", root, "--exchange", EX, "--pair", PAIR, "--allow-empty")
    assert r.exit_code == 0 and "nothing checked" in r.stderr


def test_errors_print_iso_times(root, tmp_path):
    late = tmp_path / "late"
    write_part(late, "book_events", EX, PAIR, events_table(synth_l3(500, seed=1, t0=T0 + 10**10)))
    at = T0 + 1  # inside the first hour, before its first event
    r = run("book", "--root", late, "--exchange", EX, "--pair", PAIR, "--at", str(at), ok=False)
    assert r.exit_code != 0 and "2026-11-21T14:00:00.000000001Z" in r.stderr and str(at) not in r.stderr
    r = run("bbo", "--root", root, "--exchange", EX, "--pair", PAIR, "--start", "2030-01-01", ok=False)
    assert "2030-01-01T00:00:00.000000000Z" in r.stderr and len(r.stderr.splitlines()) == 1
