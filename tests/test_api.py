"""`from booktape import Dataset` on a demo dataset: each method's result equals what the CLI writes for the
same range, times in every accepted form, and nothing is written by the read methods."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from booktape import BookFrame, Dataset, DatasetError, Frame
from replay.times import iso

BIN = Path(sys.executable).parent


def cli(*args) -> str:
    out = subprocess.run([str(BIN / "replay"), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture(scope="module")
def root(demo_root, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("api") / "demo-data"
    shutil.copytree(demo_root, dst)
    return dst


@pytest.fixture(scope="module")
def span(root) -> tuple[int, int]:
    """[start, end) in the middle of btcalpha BTC_USD's data, 2 s in from each end."""
    r = Dataset(root).sql("SELECT min(epoch_ns(ts_recv)) AS lo, max(epoch_ns(ts_recv)) AS hi FROM book_events "
                          "WHERE exchange = 'btcalpha' AND pair = 'BTC_USD'").to_pylist()[0]
    lo, hi = r["lo"], r["hi"]
    return lo + 2 * 10**9, hi - 2 * 10**9


def written(root: Path, table: str, exchange: str, pair: str, column: str, lo: int, hi: int) -> pa.Table:
    """The rows the CLI wrote for the pair, cut to [lo, hi)."""
    files = sorted((root / table / f"exchange={exchange}" / f"pair={pair}").rglob("*.parquet"))
    tab = pa.concat_tables(pq.read_table(f) for f in files)
    t = tab.column(column).cast(pa.int64()).to_numpy()
    return tab.filter(pa.array((t >= lo) & (t < hi)))


def test_what_the_dataset_covers(root):
    ds = Dataset(root)
    assert ds.venues == ["bitbay", "bitexbit", "bitopro", "btcalpha"]
    assert ds.pairs("btcalpha") == ["BTC_USD", "ETH_BTC"] and ds.pairs()["bitopro"] == ["BTC_USD", "ETH_BTC"]
    assert ds.kind("btcalpha", "BTC_USD") == "l3" and ds.kind("bitopro", "BTC_USD") == "l2"
    hours = ds.hours("btcalpha", "BTC_USD")
    assert hours and all(h.tzinfo is not None and h.minute == 0 for h in hours)
    cov = ds.coverage().to_pylist()
    assert {(r["exchange"], r["pair"]) for r in cov} == {(v, p) for v in ds.venues for p in ("BTC_USD", "ETH_BTC")}
    assert all(r["hours"] >= 1 for r in cov)
    gaps = ds.gaps()
    assert gaps.column_names == ["ts", "exchange", "pair", "stream", "kind", "detail", "seq"]
    assert "btcalpha" in repr(ds)
    with pytest.raises(DatasetError, match="unknown pair 'XRP_USD'"):
        ds.bbo("btcalpha", "XRP_USD")
    with pytest.raises(FileNotFoundError):
        Dataset(root / "nope")


def test_bbo_equals_the_written_table(root, span):
    lo, hi = span
    ds = Dataset(root)
    before = tree(root)
    for exchange in ("btcalpha", "bitopro"):
        got = ds.bbo(exchange, "BTC_USD", start=iso(lo), end=iso(hi))
        assert tree(root) == before  # nothing written
        cli("bbo", "--root", root, "--exchange", exchange, "--pair", "BTC_USD", "--start", iso(lo), "--end", iso(hi))
        want = written(root, "bbo", exchange, "BTC_USD", "ts_recv", lo, hi)
        assert isinstance(got, Frame) and got.num_rows > (10 if exchange == "btcalpha" else 0) and got == want
        before = tree(root)


def test_depth_equals_the_written_table(root, span):
    lo, hi = span
    ds = Dataset(root)
    got = ds.depth("btcalpha", "BTC_USD", levels=5, every="500ms", start=lo, end=hi)
    cli("depth", "--root", root, "--exchange", "btcalpha", "--pair", "BTC_USD", "--levels", 5, "--every", "500ms",
        "--start", iso(lo), "--end", iso(hi))
    want = written(root, "depth", "btcalpha", "BTC_USD", "ts", lo, hi)
    assert got.num_rows > 20 and got == want
    assert got.schema == schemas.DEPTH.schema


def test_trades_equal_the_sql_commands_output(root, span, tmp_path):
    lo, hi = span
    got = Dataset(root).trades("btcalpha", "BTC_USD", lo, hi)
    out = tmp_path / "t.parquet"
    cols = ", ".join(schemas.TRADES.schema.names)
    cli("sql", "--root", root, "-o", out, f"SELECT {cols}, notional FROM trades WHERE exchange = 'btcalpha' AND "
        f"pair = 'BTC_USD' AND ts_recv >= '{iso(lo)}' AND ts_recv < '{iso(hi)}' ORDER BY seq")
    want = pq.read_table(out)
    assert got.num_rows > 0 and got.arrow.equals(want)
    assert got.column("notional").to_pylist()[0] == got.column("price")[0].as_py() * got.column("amount")[0].as_py()


def test_book_equals_the_book_command(root, span):
    lo, hi = span
    at = (lo + hi) // 2
    bk = Dataset(root).book("btcalpha", "BTC_USD", at, levels=3)
    assert isinstance(bk, BookFrame) and bk.exact and bk.ts <= dt.datetime.fromtimestamp(at / 1e9, dt.timezone.utc)
    out = cli("book", "--root", root, "--exchange", "btcalpha", "--pair", "BTC_USD", "--at", iso(at), "--levels", 3)
    assert bk.digest in out and f"seq {bk.seq}" in out
    printed = [line.split() for line in out.splitlines()[2:]]
    rows = bk.to_pylist()
    want = [r for r in rows if r["side"] == "ask"][::-1] + [r for r in rows if r["side"] == "bid"]
    assert [(s, Decimal(p), Decimal(a), int(c)) for s, p, a, c in printed] == \
        [(r["side"], r["price"], r["amount"], r["count"]) for r in want]
    orders = Dataset(root).book("btcalpha", "BTC_USD", at, orders=True)
    assert orders.column_names == ["side", "price", "amount", "order_id"] and orders.digest == bk.digest


def test_times_in_every_form(root, span):
    lo, hi = span
    ds = Dataset(root)
    want = ds.bbo("btcalpha", "BTC_USD", lo, hi)
    d_lo = dt.datetime.fromtimestamp(lo // 10**9, dt.timezone.utc).replace(microsecond=lo % 10**9 // 1000)
    lo_us = lo - lo % 1000  # what a datetime can hold
    assert ds.bbo("btcalpha", "BTC_USD", d_lo, iso(hi)) == ds.bbo("btcalpha", "BTC_USD", lo_us, hi)
    assert ds.bbo("btcalpha", "BTC_USD", d_lo.replace(tzinfo=None), hi) == ds.bbo("btcalpha", "BTC_USD", lo_us, hi)
    assert ds.bbo("btcalpha", "BTC_USD", iso(lo), str(hi)) == want
    assert ds.bbo("btcalpha", "BTC_USD", lo // 10**6 * 10**6 // 10**6, hi).num_rows >= want.num_rows  # epoch ms
    with pytest.raises(DatasetError, match="start"):
        ds.bbo("btcalpha", "BTC_USD", start="next tuesday")


def test_sql_frames_to_pandas_and_polars(root):
    ds = Dataset(root)
    f = ds.sql("SELECT exchange, count(*) AS n, sum(notional) AS quote FROM trades GROUP BY ALL ORDER BY 1")
    assert isinstance(f.arrow, pa.Table) and f.num_rows == 4 and len(f) == 4
    assert pa.table(f).equals(f.arrow)  # the Arrow stream protocol
    pd = pytest.importorskip("pandas")
    df = f.df()
    assert isinstance(df, pd.DataFrame) and list(df["exchange"]) == ds.venues
    assert isinstance(df["quote"][0], Decimal)  # exact, not float
    pl = pytest.importorskip("polars")
    p = ds.sql("SELECT price FROM trades WHERE exchange = ? LIMIT 3", ["btcalpha"]).pl()
    assert isinstance(p, pl.DataFrame) and p.height == 3
