"""Partitioned Parquet: partition paths, file naming, write options, and turning log frames into files.

A log segment becomes one file per table/exchange/pair/date/hour, named `h<HH>-<writer>-<segment>.parquet`,
so converting the same segment again rewrites identical files instead of adding duplicates.
"""
from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas import ALL_PAIRS, EXCHANGE_RE, PAIR_RE, TABLES, Table

from .fsutil import makedirs, publish, temp_name
from .log import Frame

HOUR_NS = 3_600_000_000_000
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Dictionary-encoded types; high-cardinality columns fall back to plain by themselves.
_DICT_TYPES = (pa.string(), pa.large_string())


class StoreError(ValueError):
    """Bad input to the store; the message names the table, column or value."""


class StoreBusy(StoreError):
    """The store cannot take a batch now (at its backlog cap); nothing was written: retry later."""


class DiskFull(StoreBusy):
    """The dataset's filesystem is full; nothing was written: retry when space returns."""


def check_key(table: str, exchange: str, pair: str) -> Table:
    """Validate a table/exchange/pair triple (the only parts of a path that come from callers)."""
    if not isinstance(table, str) or table not in TABLES:
        raise StoreError(f"unknown table {table!r}; tables are: {', '.join(TABLES)}")
    if not isinstance(exchange, str) or not EXCHANGE_RE.fullmatch(exchange):
        raise StoreError(f"{table}: bad exchange {exchange!r} (must match {EXCHANGE_RE.pattern})")
    if not isinstance(pair, str) or not (pair == ALL_PAIRS or PAIR_RE.fullmatch(pair)):
        raise StoreError(f"{table}: bad pair {pair!r} (must match {PAIR_RE.pattern}, or {ALL_PAIRS!r})")
    return TABLES[table]


def partition_path(root, table: str, exchange: str, pair: str, date) -> Path:
    """`<root>/<table>/exchange=<x>/pair=<P>/date=<YYYY-MM-DD>`, validated so nothing escapes root."""
    check_key(table, exchange, pair)
    day = date.isoformat() if isinstance(date, dt.date) else date
    if not isinstance(day, str) or not _DATE_RE.fullmatch(day):
        raise StoreError(f"{table}: bad date {date!r} (want YYYY-MM-DD)")
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise StoreError(f"{table}: bad date {date!r}") from None
    root = Path(root)
    path = root / table / f"exchange={exchange}" / f"pair={pair}" / f"date={day}"
    if not path.resolve().is_relative_to(root.resolve()):
        raise StoreError(f"{table}: partition {path} escapes the dataset root")
    return path


def segment_file_name(hour: int, writer: str, segment: int) -> str:
    """Deterministic name of the file a log segment contributes to one partition-hour."""
    return f"h{hour:02d}-{writer}-{segment:020d}.parquet"


def write_options(table: Table) -> dict:
    """zstd; dictionaries for strings and decimals (prices sit on a tick grid); delta for ints and timestamps.

    zstd level 3, but 1 for binary columns (raw payloads): on JSON text level 1 is as small and a quarter faster
    (bench/RESULTS.md). BYTE_STREAM_SPLIT would suit the 16-byte decimals but DuckDB cannot read it on
    FIXED_LEN_BYTE_ARRAY.
    """
    dictionary, encoding = [], {}
    for f in table.schema:
        if f.type in _DICT_TYPES or pa.types.is_decimal(f.type):
            dictionary.append(f.name)
        elif pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type):
            encoding[f.name] = "DELTA_BINARY_PACKED"
    return dict(
        compression="zstd",
        compression_level={f.name: 1 if pa.types.is_binary(f.type) else 3 for f in table.schema},
        use_dictionary=dictionary,
        column_encoding=encoding,
        write_statistics=True,
        sorting_columns=[pq.SortingColumn(table.schema.get_field_index(c)) for c in table.order_by],
        row_group_size=1 << 20,
    )


def write_file(final: Path, table: Table, data: pa.Table) -> None:
    """Write a Parquet file under a dot temp name in its directory, fsync, rename, fsync the directory."""
    makedirs(final.parent)
    tmp = temp_name(final)
    try:
        pq.write_table(data, tmp, **write_options(table))
        publish(tmp, final)
    except BaseException:  # a full disk, say: the partial temp file would only hold space
        tmp.unlink(missing_ok=True)
        raise


def sort_rows(table: Table, data: pa.Table) -> pa.Table:
    """Rows in the table's capture order (stable, so ties keep arrival order)."""
    first = data.column(table.order_by[0])
    if first.null_count == 0 and data.num_rows > 1:
        keys = first.to_numpy()
        if (keys[1:] > keys[:-1]).all():  # strictly increasing first key: already in order
            return data
    idx = pc.sort_indices(data, sort_keys=[(c, "ascending") for c in table.order_by])
    return data.take(idx)


def hours_of(table: Table, data: pa.Table) -> np.ndarray:
    """Hour number (ns // 1h, floor) of each row's time column."""
    ts = data.column(table.time_column).cast(pa.int64()).to_numpy()
    return ts // HOUR_NS


def split_hours(table: Table, data: pa.Table):
    """Yield (hour number, rows of that hour) in hour order."""
    hours = hours_of(table, data)
    if len(hours) and hours[0] == hours[-1] and (hours == hours[0]).all():
        yield int(hours[0]), data
        return
    for h in np.unique(hours):
        yield int(h), data.filter(pa.array(hours == h))


def hour_dir(root: Path, table: Table, exchange: str, pair: str, hour: int) -> tuple[Path, int]:
    """Partition directory and hour of day for an absolute hour number."""
    when = dt.datetime.fromtimestamp(hour * 3600, dt.timezone.utc)
    return partition_path(root, table.name, exchange, pair, when.date()), when.hour


def convert(frames: list[Frame], root: Path, writer: str, segment: int) -> tuple[set, int]:
    """Write a segment's frames as Parquet, one group (table/exchange/pair) at a time.

    Returns the (directory, hour-of-day, absolute hour) triples written and the number of files.
    """
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        groups[(f.table, f.exchange, f.pair)].append(f)
    touched, files = set(), 0
    for (name, exchange, pair), group in sorted(groups.items()):
        table = TABLES[name]
        data = pa.Table.from_batches([f.batch() for f in group], schema=table.schema)
        for hour, rows in split_hours(table, data):
            directory, hod = hour_dir(root, table, exchange, pair, hour)
            write_file(directory / segment_file_name(hod, writer, segment), table, sort_rows(table, rows))
            touched.add((directory, hod, hour))
            files += 1
        del data
    return touched, files
