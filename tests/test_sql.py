"""DuckDB views over the dataset root, the catalog file and the `sql` command."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from replay.sql import DERIVED, LATEST_VIEWS, NOTIONAL_SCALE, PARTITION_TYPES, connect, duckdb_type, write_catalog

DAY = "2024-03-12"
NS = 1710264956584000000  # 2024-03-12T17:35:56.584Z


def row(table: str, **values):
    """One row of `table`: the given values, defaults for the remaining non-null columns, null elsewhere."""
    defaults = {pa.string(): "x", pa.int64(): 1, pa.int32(): 0, pa.bool_(): False, pa.binary(): b"{}",
                schemas.TS: NS}
    out = {}
    for field in schemas.TABLES[table].schema:
        out[field.name] = values.pop(field.name, None if field.nullable else defaults[field.type])
    assert not values, f"not columns of {table}: {values}"
    return out


def write(root: Path, table: str, rows: list[dict], *, exchange="btcalpha", pair="BTC_USD", date=DAY,
          name="part-0.parquet", subdir: str | None = None) -> Path:
    """Write rows as one Parquet file in the dataset layout (or under `subdir` of the table) and return it."""
    schema = schemas.TABLES[table].schema
    folder = root / table / (subdir or f"exchange={exchange}/pair={pair}/date={date}")
    folder.mkdir(parents=True, exist_ok=True)
    data = {f.name: [r[f.name] for r in rows] for f in schema}
    for f in schema:
        if f.type == schemas.TS:
            data[f.name] = pa.array(data[f.name], pa.int64()).cast(schemas.TS)
    path = folder / name
    pq.write_table(pa.Table.from_pydict(data, schema=schema), path)
    return path


def expected_columns(table: schemas.Table) -> list[tuple[str, str]]:
    derived = [(n, f"DECIMAL(38,{2 * NOTIONAL_SCALE})") for n, _, _ in DERIVED.get(table.name, [])]
    return [(f.name, duckdb_type(f.type)) for f in table.schema] + list(PARTITION_TYPES.items()) + derived


def one(con, query: str) -> tuple:
    """The single row a query returns."""
    (result,) = con.sql(query).fetchall()
    return result


def describe(con, name: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.sql(f"DESCRIBE {name}").fetchall()]


def test_empty_root_has_a_typed_view_per_table(tmp_path):
    con = connect(tmp_path)
    for table in schemas.TABLES.values():
        assert describe(con, table.name) == expected_columns(table)
        assert one(con, f"SELECT count(*) FROM {table.name}") == (0,)
    assert describe(con, "candles_all") == expected_columns(schemas.CANDLES)


def test_duckdb_reads_each_arrow_type_as_mapped(tmp_path):
    con = duckdb.connect()
    for table in schemas.TABLES.values():
        path = write(tmp_path, table.name, [row(table.name)])
        query = f"DESCRIBE SELECT * FROM read_parquet('{path}', hive_partitioning = false)"
        read = [(r[0], r[1]) for r in con.sql(query).fetchall()]
        assert read == expected_columns(table)[: len(table.schema)]


def test_every_table_seen_with_typed_partitions(tmp_path):
    for table in schemas.TABLES:
        write(tmp_path, table, [row(table, seq=1)], exchange="bitopro", pair="ETH_BTC", date="2024-03-11")
        write(tmp_path, table, [row(table, seq=2), row(table, seq=3)], pair="ALL")
    con = connect(tmp_path)
    for table in schemas.TABLES.values():
        assert describe(con, table.name) == expected_columns(table)
        got = con.sql(f"SELECT exchange, pair, date, count(*) FROM {table.name} GROUP BY ALL ORDER BY date").fetchall()
        assert [(e, p, str(d), n) for e, p, d, n in got] == [
            ("bitopro", "ETH_BTC", "2024-03-11", 1), ("btcalpha", "ALL", DAY, 2 if table.name != "candles" else 1)]
        assert one(con, f"SELECT count(*) FROM {table.name} WHERE date = DATE '{DAY}'")[0] >= 1


def test_decimals_and_ns_timestamps_are_exact(tmp_path):
    values = [Decimal("936.00"), Decimal("0.00000001"), Decimal("100000000.00000000")]
    stamps = [1485686507094462200, 1710264956584000000, 1710264956584000001]
    write(tmp_path, "trades", [row("trades", seq=i, price=v, amount=v, ts_event=t, ts_recv=t)
                               for i, (v, t) in enumerate(zip(values, stamps))])
    con = connect(tmp_path)
    got = con.sql("SELECT price, amount, epoch_ns(ts_event), epoch_ns(ts_recv) FROM trades ORDER BY seq").fetchall()
    assert [(p, a) for p, a, _, _ in got] == [(v, v) for v in values]
    assert all(isinstance(p, Decimal) for p, *_ in got)
    assert [(e, r) for _, _, e, r in got] == [(t, t) for t in stamps]
    assert one(con, "SELECT sum(price) FROM trades")[0] == sum(values)


def test_candles_view_keeps_the_newest_version(tmp_path):
    t0, t1 = NS, NS + 60_000_000_000
    def c(close, ts_recv, seq, ts_open=t0):
        return row("candles", resolution="1m", ts_open=ts_open, close=Decimal(close), ts_recv=ts_recv, seq=seq)

    write(tmp_path, "candles", [c("1", NS + 1, 1), c("2", NS + 5, 2), c("9", NS + 1, 1, ts_open=t1)], name="a.parquet")
    # same ts_recv, higher seq wins; a later file may hold an older version
    write(tmp_path, "candles", [c("3", NS + 5, 7), c("0", NS + 2, 8)], name="b.parquet")
    write(tmp_path, "candles", [c("5", NS, 1)], exchange="bitopro")
    write(tmp_path, "candles", [row("candles", resolution="5m", ts_open=t0, close=Decimal("6"), ts_recv=NS, seq=3)],
          name="c.parquet")
    con = connect(tmp_path)
    got = con.sql("SELECT exchange, resolution, epoch_ns(ts_open), close FROM candles ORDER BY ALL").fetchall()
    assert got == [("bitopro", "1m", t0, Decimal("5")), ("btcalpha", "1m", t0, Decimal("3")),
                   ("btcalpha", "1m", t1, Decimal("9")), ("btcalpha", "5m", t0, Decimal("6"))]
    assert one(con, "SELECT count(*) FROM candles_all") == (7,)
    assert "candles" in LATEST_VIEWS and "trades" not in LATEST_VIEWS


def test_temporary_and_internal_files_are_ignored(tmp_path):
    write(tmp_path, "trades", [row("trades", seq=1)])
    bad = [row("trades", seq=99)]
    write(tmp_path, "trades", bad, name=".part-1.parquet.tmp.parquet")
    write(tmp_path, "trades", bad, name=".x.parquet")
    write(tmp_path, "trades", bad, name="_tmp.parquet")
    write(tmp_path, "trades", bad, subdir="_log/2024/03")  # would break hive partitioning if globbed
    write(tmp_path, "trades", bad, subdir="exchange=btcalpha/pair=BTC_USD/_date=2024-03-12")
    write(tmp_path, "trades", bad, subdir="exchange=btcalpha/pair=BTC_USD/date=2024-03-12/_log")
    (tmp_path / "_log").mkdir()
    (tmp_path / "trades" / "exchange=btcalpha" / "pair=BTC_USD" / f"date={DAY}" / ".y.parquet").write_bytes(b"partial")
    con = connect(tmp_path)
    assert one(con, "SELECT list(seq) FROM trades") == ([1],)


def test_views_see_files_that_arrive_later(tmp_path):
    con = connect(tmp_path)
    assert one(con, "SELECT count(*) FROM trades") == (0,)
    write(tmp_path, "trades", [row("trades", seq=1)], name="a.parquet")
    assert one(con, "SELECT count(*) FROM trades") == (1,)
    write(tmp_path, "trades", [row("trades", seq=2)], name="b.parquet", date="2024-03-13")
    assert one(con, "SELECT count(*), count(DISTINCT date) FROM trades") == (2, 2)


def test_catalog_opens_from_another_directory(tmp_path):
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(root, "trades", [row("trades", seq=1, price=Decimal("936.00"))])
    path = write_catalog(root)
    assert path == root.resolve() / "catalog.duckdb"
    assert sorted(p.name for p in root.iterdir()) == [".catalog-root", "catalog.duckdb", "trades"]  # no temp/WAL
    write(root, "candles", [row("candles", resolution="1m", seq=5)])  # arrives after the catalog
    script = ("import duckdb, json; c = duckdb.connect('%s', read_only=True); "
              "print(json.dumps(sorted(r[0] for r in c.sql('SHOW TABLES').fetchall()))); "
              "print(json.dumps(c.sql('SELECT (SELECT sum(price)::VARCHAR FROM trades), (SELECT count(*) FROM candles)')"
              ".fetchall()[0]))"
              % path)
    out = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, capture_output=True, text=True, check=True)
    names, values = map(json.loads, out.stdout.splitlines())
    assert names == sorted([*schemas.TABLES, *(f"{t}_all" for t in LATEST_VIEWS)])
    assert values == ["936.000000000000000000", 1]
    assert write_catalog(root) == path  # rewriting replaces the file
    assert sorted(p.name for p in root.iterdir()) == [".catalog-root", "candles", "catalog.duckdb", "trades"]


def test_a_moved_dataset_fails_loudly_in_its_catalog_instead_of_returning_no_rows(tmp_path):
    """Found: catalog.duckdb holds absolute paths, and after the folder moved every view returned 0 rows."""
    root = tmp_path / "data"
    write(root, "trades", [row("trades", seq=1, price=Decimal("936.00"))])
    path = write_catalog(root)
    moved = tmp_path / "moved"
    root.rename(moved)
    con = duckdb.connect(str(moved / "catalog.duckdb"), read_only=True)
    with pytest.raises(duckdb.Error, match="no longer at .*write the catalog again"):
        con.sql("SELECT count(*) FROM trades").fetchall()
    con.close()
    assert path.name == "catalog.duckdb"
    con = duckdb.connect(str(write_catalog(moved)), read_only=True)  # written again: it works
    assert con.sql("SELECT count(*) FROM trades").fetchall() == [(1,)]
    con.close()


def test_missing_root_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        connect(tmp_path / "missing")


def test_catalog_refuses_a_table_directory(tmp_path):
    (tmp_path / "trades").mkdir()
    with pytest.raises(ValueError):
        write_catalog(tmp_path, tmp_path / "trades" / "catalog.duckdb")
    with pytest.raises(FileNotFoundError):
        write_catalog(tmp_path / "missing")


def run_sql(args: list[str], cwd: Path, console: bool = False) -> subprocess.CompletedProcess:
    """Run the `sql` command in a fresh interpreter from `cwd`: `replay sql` or the command itself."""
    if console:
        cmd = [str(Path(sys.executable).parent / "replay"), "sql", *args]
    else:
        cmd = [sys.executable, "-c", "from replay.sql import sql; sql()", *args]
    env = {k: v for k, v in os.environ.items() if k != "BOOKTAPE_ROOT"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    write(root, "trades", [row("trades", seq=i, trade_id=str(i), price=Decimal(p), amount=Decimal("0.00000001"),
                               ts_event=NS + i) for i, p in enumerate(["936.00", "937.5"])])
    (tmp_path / "cwd").mkdir()
    return root


def test_sql_command_prints_a_table_from_another_directory(dataset):
    out = run_sql(["--root", str(dataset), "SELECT trade_id, price, exchange FROM trades ORDER BY seq"],
                  dataset.parent / "cwd")
    assert out.returncode == 0, out.stderr
    assert re.search(r"│ +936\.0 │", out.stdout) and re.search(r"│ +937\.5 │", out.stdout)  # one scale, no padding
    assert "936.000000000000000000" not in out.stdout
    assert "btcalpha" in out.stdout and "┌" in out.stdout
    limited = run_sql(["--root", str(dataset), "--limit", "1", "SELECT * FROM trades ORDER BY seq"], dataset)
    assert re.search(r"│ +936 │", limited.stdout) and "937.5" not in limited.stdout


def test_sql_root_from_environment(dataset):
    env_cmd = [sys.executable, "-c", "from replay.sql import sql; sql()", "SELECT count(*) AS n FROM trades"]
    out = subprocess.run(env_cmd, cwd=dataset.parent / "cwd", capture_output=True, text=True,
                         env={**os.environ, "BOOKTAPE_ROOT": str(dataset)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"│ +2 │", out.stdout)


def test_sql_csv_json_parquet(dataset, tmp_path):
    query = "SELECT trade_id, price, amount, epoch_ns(ts_event) AS ns, ts_event, date FROM trades ORDER BY seq"
    cwd = dataset.parent / "cwd"
    out = run_sql(["--root", str(dataset), "--format", "csv", query], cwd)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [Decimal(r["price"]) for r in rows] == [Decimal("936.00"), Decimal("937.5")]
    assert [int(r["ns"]) for r in rows] == [NS, NS + 1] and rows[0]["date"] == DAY

    out = run_sql(["--root", str(dataset), "--format", "json", query], cwd)
    assert out.returncode == 0, out.stderr
    objs = [json.loads(line, parse_float=Decimal) for line in out.stdout.splitlines()]
    assert [o["amount"] for o in objs] == [Decimal("0.00000001")] * 2 and objs[1]["ns"] == NS + 1

    target = tmp_path / "out.parquet"
    out = run_sql(["--root", str(dataset), "--format", "parquet", "--output", str(target), query], cwd)
    assert out.returncode == 0, out.stderr
    table = pq.read_table(target)
    assert table.column("price").to_pylist() == [Decimal("936.00"), Decimal("937.5")]
    assert table.schema.field("ts_event").type == schemas.TS
    assert table.column("ns").to_pylist() == [NS, NS + 1]


@pytest.mark.parametrize("args, message", [
    (["SELEC 1"], "Parser Error"),
    (["SELECT nope FROM trades"], "nope"),
    (["SELECT * FROM nowhere"], "nowhere"),
    (["--format", "parquet", "SELECT 1"], "--output"),
    ([], "query"),
])
def test_sql_errors_are_one_line(dataset, args, message):
    out = run_sql(["--root", str(dataset), *args], dataset.parent / "cwd")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr


def test_sql_missing_root_and_bad_format(tmp_path):
    out = run_sql(["--root", str(tmp_path / "missing"), "SELECT 1"], tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr and "not found" in out.stderr
    out = run_sql(["--root", str(tmp_path), "--format", "xml", "SELECT 1"], tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr and "xml" in out.stderr


def test_sql_write_catalog(dataset):
    out = run_sql(["--root", str(dataset), "--write-catalog"], dataset.parent / "cwd")
    assert out.returncode == 0, out.stderr
    con = duckdb.connect(str(dataset / "catalog.duckdb"), read_only=True)
    assert one(con, "SELECT count(*) FROM trades") == (2,)


def test_replay_console_entry(dataset):
    console = Path(sys.executable).parent / "replay"
    help_ = subprocess.run([str(console), "--help"], capture_output=True, text=True)
    if help_.returncode != 0 or " sql " not in help_.stdout:
        pytest.skip("`replay sql` is not registered in replay/cli.py yet")
    out = run_sql(["--root", str(dataset), "--format", "csv", "SELECT count(*) AS n FROM trades"],
                  dataset.parent / "cwd", console=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["n", "2"]


def test_sql_show_tables_lists_only_the_views(dataset):
    out = run_sql(["--root", str(dataset), "--format", "json", "SHOW TABLES"], dataset.parent / "cwd")
    assert out.returncode == 0, out.stderr
    names = [json.loads(line)["name"] for line in out.stdout.splitlines()]
    assert names == sorted([*schemas.TABLES, *(f"{t}_all" for t in LATEST_VIEWS)])
