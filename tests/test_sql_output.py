"""`replay sql` without surprises: one box per result, -o format from the extension, decimals exact and
unpadded, price x amount that works, comments from schemas/, and the timestamp functions the docs name."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from decimal import Decimal

import duckdb
import pyarrow.parquet as pq
import pytest

import schemas
from replay.sql import connect, write_catalog
from schemas.render import render
from test_sql import NS, row, run_sql, write


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    trades = [("60123.12345678", "1.5"), ("0.05005", "2000"), ("99999.99", "12.25")]
    write(root, "trades", [row("trades", seq=i, trade_id=str(i), price=Decimal(p), amount=Decimal(a),
                               ts_event=NS + i, ts_recv=NS + i * 10**9) for i, (p, a) in enumerate(trades)])
    (tmp_path / "cwd").mkdir()
    return root


def test_one_box_per_result_however_many_rows(dataset):
    out = run_sql(["--root", str(dataset), "SELECT range AS n FROM range(25000)"], dataset.parent / "cwd")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("┌") == 1 and out.stdout.count("└") == 1
    assert re.search(r"│ +24999 │", out.stdout)


@pytest.mark.parametrize("name, check", [
    ("t.csv", lambda p: list(csv.DictReader(p.open()))[0]["price"] == "60123.12345678"),
    ("t.json", lambda p: json.loads(p.read_text().splitlines()[0])["trade_id"] == "0"),
    ("t.JSONL", lambda p: json.loads(p.read_text().splitlines()[0])["trade_id"] == "0"),
    ("t.parquet", lambda p: pq.read_table(p).column("price").type == schemas.DEC),
])
def test_output_format_is_taken_from_the_extension(dataset, tmp_path, name, check):
    target = tmp_path / name
    out = run_sql(["--root", str(dataset), "-o", str(target), "SELECT trade_id, price FROM trades ORDER BY seq"],
                  dataset.parent / "cwd")
    assert out.returncode == 0, out.stderr
    assert check(target)


def test_unknown_extension_is_one_line(dataset, tmp_path):
    out = run_sql(["--root", str(dataset), "-o", str(tmp_path / "t.txt"), "SELECT 1"], dataset.parent / "cwd")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1 and "--format" in out.stderr
    assert not (tmp_path / "t.txt").exists()


def test_csv_and_json_decimals_are_exact_and_unpadded(dataset):
    q = "SELECT price, amount, notional FROM trades ORDER BY seq"
    out = run_sql(["--root", str(dataset), "--format", "csv", q], dataset.parent / "cwd")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["price,amount,notional", "60123.12345678,1.5,90184.68518517",
                                       "0.05005,2000,100.1", "99999.99,12.25,1224999.8775"]
    out = run_sql(["--root", str(dataset), "--format", "json", q], dataset.parent / "cwd")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1] == '{"price":0.05005,"amount":2000,"notional":100.1}'  # numbers, as exact text
    objs = [json.loads(line, parse_float=Decimal) for line in lines]
    assert objs[0]["notional"] == Decimal("60123.12345678") * Decimal("1.5")


def test_price_times_amount(dataset):
    con = connect(dataset)
    with pytest.raises(duckdb.Error, match="Overflow"):
        con.sql("SELECT sum(price * amount) FROM trades").fetchall()  # DECIMAL(38,18)^2: why notional exists
    (total,) = con.execute("SELECT sum(notional) FROM trades").fetchall()[0]
    assert total == sum(Decimal(p) * Decimal(a) for p, a in
                        [("60123.12345678", "1.5"), ("0.05005", "2000"), ("99999.99", "12.25")])
    # the documented cast does the same where the digits allow
    (cast,) = con.execute("SELECT sum(price::DECIMAL(38,10) * amount::DECIMAL(38,10)) FROM trades").fetchall()[0]
    assert cast == total
    write(dataset, "trades", [row("trades", seq=9, trade_id="9", price=Decimal("1.00000000001"),
                                  amount=Decimal("1"))], name="fine.parquet")
    with pytest.raises(duckdb.Error, match="more than 10 decimals"):
        con.sql("SELECT sum(notional) FROM trades").fetchall()  # never silently rounded


def test_views_and_columns_carry_the_schema_docs(dataset, tmp_path):
    for con in (connect(dataset), duckdb.connect(str(write_catalog(dataset)), read_only=True)):
        views = dict(con.sql("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall())
        for t in schemas.TABLES.values():
            assert views[t.name].startswith(t.doc)
            cols = dict(con.sql(f"SELECT column_name, comment FROM duckdb_columns() WHERE table_name = "
                                f"'{t.name}'").fetchall())
            for f in t.schema:
                assert cols[f.name].startswith(f.metadata[b"doc"].decode()), (t.name, f.name)
            assert cols["exchange"].startswith("partition:")
        assert "exact" in dict(con.sql("SELECT column_name, comment FROM duckdb_columns() WHERE table_name = "
                                       "'trades'").fetchall())["notional"]


def test_timestamp_functions_the_docs_promise(dataset):
    con = connect(dataset)
    got = con.execute("""SELECT date_trunc('hour', ts_recv), time_bucket(INTERVAL '5 seconds', ts_recv),
        ts_recv + INTERVAL 1 HOUR, ts_recv - INTERVAL '90 minutes', hour(ts_recv), strftime(ts_recv, '%n'),
        epoch_ns(ts_recv) FROM trades ORDER BY seq LIMIT 1""").fetchall()[0]
    assert got[0].isoformat() == "2024-03-12T17:00:00+00:00" and got[1].isoformat() == "2024-03-12T17:35:55+00:00"
    assert got[2].isoformat().startswith("2024-03-12T18:35:56.584") and got[4] == 17
    assert got[5] == "584000000" and got[6] == NS
    text = render()
    assert "refuse" not in text and "date_trunc" in text and "time_bucket" in text and "notional" in text


def test_no_progress_bar_in_the_output(dataset):
    """DuckDB draws a progress bar on stdout for queries over 2 s (seen inside `--format json` output on a
    loaded machine): every connection replay sql uses has it off (checked in a fresh interpreter, as the
    command runs: pytest's own process reports the setting differently)."""
    code = ("from replay.sql import connect, _utc_connection; import sys; "
            "print([c.execute(\"SELECT current_setting('enable_progress_bar')\").fetchall()[0][0] "
            "for c in (connect(sys.argv[1]), _utc_connection())])")
    out = subprocess.run([sys.executable, "-c", code, str(dataset)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[False, False]", out.stdout + out.stderr
