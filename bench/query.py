"""Query benchmark: the `replay.sql` views over a synthetic hive dataset, against baselines in the same run.

    .venv/bin/python bench/query.py [--rows 10000000] [--hours 24] [--keep DIR]

Each query runs through the views (`connect(root)`), through a bare `read_parquet` glob (the views without
the typed-empty union), and on one pre-merged Parquet file; count-by-hour also with pyarrow.dataset.
Best of `--repeat` runs, in seconds, and rows scanned per second.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import schemas  # noqa: E402
from replay.sql import connect  # noqa: E402

START_NS = 1710244800 * 10**9  # 2024-03-12T12:00:00Z: 24 hours span two dates
HOUR_NS = 3600 * 10**9


def decimals(cents: np.ndarray, scale: int) -> pa.Array:
    """Exact DECIMAL(38,18) values `cents / 10**scale`, built from int64 without going through floats."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0], words[:, 1] = cents, cents >> 63
    raw = pa.Array.from_buffers(pa.decimal128(38, scale), len(cents), [None, pa.py_buffer(words)])
    return raw.cast(schemas.DEC)


def hour_table(name: str, n: int, hour: int, seq0: int, rng: np.random.Generator) -> pa.Table:
    """`n` rows of table `name` received within hour `hour` of the run."""
    ts = pa.array(np.sort(START_NS + hour * HOUR_NS + rng.integers(0, HOUR_NS, n)), pa.int64()).cast(schemas.TS)
    seq = pa.array(np.arange(seq0, seq0 + n, dtype=np.int64))
    price = decimals(6_000_000 + rng.integers(-50_000, 50_000, n), 2)
    amount = decimals(rng.integers(1, 10**8, n), 8)
    common = {"ts_event": ts, "ts_recv": ts, "seq": seq, "session": pa.array(np.full(n, 1, np.int64)),
              "price": price, "amount": amount}
    if name == "book_events":
        cols = common | {"msg_seq": seq, "action": pa.array(rng.choice(["A", "F", "C"], n)),
                         "side": pa.array(rng.choice(["bid", "ask"], n)),
                         "order_id": pa.array(rng.integers(1, 10**9, n))}
    elif name == "trades":
        cols = common | {"trade_id": pc.cast(seq, pa.string()), "taker_side": pa.array(rng.choice(["buy", "sell"], n)),
                         "source": pa.array(np.full(n, "socket"))}
    else:  # candles: versions of the minute candles of this hour
        opens = START_NS + hour * HOUR_NS + rng.integers(0, 60, n) * 60 * 10**9
        cols = {"resolution": pa.array(np.full(n, "1m")), "ts_open": pa.array(opens).cast(schemas.TS),
                "open": price, "high": price, "low": price, "close": price, "volume": amount,
                "ts_recv": ts, "seq": seq, "session": common["session"]}
    schema = schemas.TABLES[name].schema
    return pa.table([cols.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema)


def generate(root: Path, rows: int, hours: int) -> dict[str, int]:
    """Write book_events (`rows`), trades (rows/10) and candles (rows/1000) as one file per table and hour."""
    rng = np.random.default_rng(7)
    sizes = {"book_events": rows, "trades": rows // 10, "candles": max(rows // 1000, hours)}
    merged = root.parent / "merged"
    merged.mkdir()
    for name, total in sizes.items():
        seq, parts = 0, []
        for hour in range(hours):
            n = total // hours
            table = hour_table(name, n, hour, seq, rng)
            seq += n
            date = time.strftime("%Y-%m-%d", time.gmtime((START_NS + hour * HOUR_NS) // 10**9))
            folder = root / name / "exchange=btcalpha" / "pair=BTC_USD" / f"date={date}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / f"part-{hour:02d}.parquet")
            parts.append(table.append_column("exchange", pa.array(np.full(n, "btcalpha")))
                         .append_column("pair", pa.array(np.full(n, "BTC_USD")))
                         .append_column("date", pa.array(np.full(n, np.datetime64(date)))))
        pq.write_table(pa.concat_tables(parts), merged / f"{name}.parquet")
        sizes[name] = seq
    return sizes


HOUR = "to_timestamp(epoch_ns(ts_recv) // 3600000000000 * 3600)"  # the fast bucketing idiom of docs/schemas.md
QUERIES = {
    "count by hour, epoch_ns": ("book_events", f"SELECT {HOUR} AS hour, count(*) FROM {{src}} GROUP BY 1 ORDER BY 1"),
    "count by hour, date_trunc": ("book_events", "SELECT date_trunc('hour', ts_recv::TIMESTAMPTZ) AS hour, count(*) "
                                                 "FROM {src} GROUP BY 1 ORDER BY 1"),
    "count one date": ("book_events", "SELECT count(*) FROM {src} WHERE date = DATE '2024-03-13'"),
    "vwap": ("trades", "SELECT exchange, pair, sum(price::DECIMAL(38,9) * amount::DECIMAL(38,9)) / sum(amount) "
                       "FROM {src} GROUP BY ALL"),
    "latest candle": ("candles", "SELECT * FROM {src} WHERE resolution = '1m' ORDER BY ts_open DESC LIMIT 1"),
}


def best(fn, repeat: int) -> float:
    """Fastest of `repeat` timed calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(root: Path, sizes: dict[str, int], repeat: int) -> list[tuple[str, str, float, int]]:
    """(query, way, seconds, rows scanned) for every query and way."""
    views = connect(root)
    bare = duckdb.connect()
    bare.execute("SET TimeZone = 'UTC'")
    hive = "hive_partitioning = true, hive_types = {'exchange': 'VARCHAR', 'pair': 'VARCHAR', 'date': 'DATE'}"
    merged = root.parent / "merged"
    out = []
    for query, (table, sql) in QUERIES.items():
        glob = f"read_parquet('{root}/{table}/exchange=*/pair=*/date=*/[!_.]*.parquet', {hive})"
        if table == "candles":  # the view's latest-version rule, spelled out for the baselines
            latest = ("(SELECT * FROM {} QUALIFY row_number() OVER (PARTITION BY exchange, pair, resolution, ts_open "
                      "ORDER BY ts_recv DESC, seq DESC) = 1)")
            sources = {"views": "candles", "bare glob": latest.format(glob),
                       "merged file": latest.format(f"read_parquet('{merged}/{table}.parquet')")}
        else:
            sources = {"views": table, "bare glob": glob, "merged file": f"read_parquet('{merged}/{table}.parquet')"}
        expected = views.sql(sql.format(src=table)).to_arrow_table()
        for way, src in sources.items():
            con = views if way == "views" else bare
            text = sql.format(src=src)
            got = con.sql(text).to_arrow_table().select(expected.column_names)
            assert all(a.equals(b) for a, b in zip(got.columns, expected.columns)), (query, way)
            out.append((query, way, best(lambda: con.sql(text).to_arrow_table(), repeat), sizes[table]))
    dataset = ds.dataset(root / "book_events", partitioning="hive", format="parquet")

    def arrow_count_by_hour() -> pa.Table:
        hours = pc.floor_temporal(dataset.to_table(columns=["ts_recv"])["ts_recv"], unit="hour")
        return pa.table({"hour": hours}).group_by("hour").aggregate([("hour", "count")]).sort_by("hour")

    out.append(("count by hour", "pyarrow.dataset", best(arrow_count_by_hour, repeat), sizes["book_events"]))
    return out


def main() -> None:
    """Generate, run, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="book_events rows")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="generate under this empty directory and keep it")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="booktape-bench-query-"))
    try:
        t = time.perf_counter()
        sizes = generate(base / "data", args.rows, args.hours)
        print(f"generated {sizes} in {time.perf_counter() - t:.1f} s, {args.hours} hour files per table\n")
        print("| query | way | seconds | rows/s |\n|---|---|---:|---:|")
        for query, way, seconds, rows in run(base / "data", sizes, args.repeat):
            print(f"| {query} | {way} | {seconds:.3f} | {rows / seconds:,.0f} |")
    finally:
        if not args.keep:
            shutil.rmtree(base)


if __name__ == "__main__":
    main()
