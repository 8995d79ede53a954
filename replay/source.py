"""Ordered reads from the dataset root: one table, exchange, pair and hour at a time, in capture order."""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import ALL_PAIRS, TABLES
from schemas.files import data_files

HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
#: sessions kinds after which the book is not known exact until the next snapshot (a start: the previous
#: run may have ended with kill -9, leaving no disconnect row).
GAP_KINDS = ("disconnect", "gap", "resync", "reject", "start")
#: sessions streams that carry no book (trades and candles pollers, grouped validation snapshots).
NOT_BOOK_STREAM = re.compile(r":(trades|candles|grouped)$")


def date_of(ns: int) -> str:
    """UTC date (YYYY-MM-DD) of an epoch-ns instant."""
    return dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.timezone.utc).strftime("%Y-%m-%d")


def date_ns(date: str) -> int:
    """Epoch ns of midnight UTC of a YYYY-MM-DD date."""
    d = dt.datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp()) * 1_000_000_000


def partition_dir(root: str | os.PathLike, table: str, exchange: str, pair: str, date: str) -> Path:
    """Directory of one hive partition."""
    return Path(root) / table / f"exchange={exchange}" / f"pair={pair}" / f"date={date}"


def dates(root: str | os.PathLike, table: str, exchange: str, pair: str) -> list[str]:
    """Dates that hold a partition of the table for this exchange and pair."""
    base = Path(root) / table / f"exchange={exchange}" / f"pair={pair}"
    if not base.is_dir():
        return []
    return sorted(p.name[5:] for p in base.iterdir() if p.is_dir() and p.name.startswith("date="))


def pairs(root: str | os.PathLike, table: str, exchange: str) -> list[str]:
    """Pairs that have partitions of the table for this exchange."""
    base = Path(root) / table / f"exchange={exchange}"
    if not base.is_dir():
        return []
    return sorted(p.name[5:] for p in base.iterdir() if p.is_dir() and p.name.startswith("pair="))


def hours(root: str | os.PathLike, table: str, exchange: str, pair: str, start: int, end: int) -> list[int]:
    """Start (ns) of every hour in [start, end) with rows, from row-group statistics where present."""
    t = TABLES[table]
    lo_h, found = start - start % HOUR_NS, set()
    for date in dates(root, table, exchange, pair):
        d0 = date_ns(date)
        if d0 + DAY_NS <= lo_h or d0 >= end:
            continue
        for f in data_files(partition_dir(root, table, exchange, pair, date), t):
            meta = pq.ParquetFile(f).metadata
            idx = meta.schema.to_arrow_schema().get_field_index(t.time_column)
            for g in range(meta.num_row_groups):
                if meta.row_group(g).num_rows == 0:
                    continue
                st = meta.row_group(g).column(idx).statistics
                if st is not None and st.has_min_max:
                    lo, hi = st.min_raw, st.max_raw
                    found.update(range(lo - lo % HOUR_NS, hi + 1, HOUR_NS))
                else:
                    ts = pq.read_table(f, columns=[t.time_column]).column(0).cast("int64").to_numpy()
                    found.update(np.unique(ts - ts % HOUR_NS).tolist())
    return sorted(h for h in found if lo_h <= h < end)


@dataclass
class Read:
    """Rows of one table for one time window, in capture order, and how many duplicates were dropped."""

    table: pa.Table
    duplicates: int


def _span(meta: pq.FileMetaData, column: str) -> tuple[int, int] | None:
    """(min, max) of a column over a file from row-group statistics; None when any group lacks them."""
    idx = meta.schema.to_arrow_schema().get_field_index(column)
    lo = hi = None
    for g in range(meta.num_row_groups):
        if meta.row_group(g).num_rows == 0:
            continue
        st = meta.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max:
            return None
        lo = st.min_raw if lo is None else min(lo, st.min_raw)
        hi = st.max_raw if hi is None else max(hi, st.max_raw)
    return (lo, hi) if lo is not None else (0, -1)


def read(root: str | os.PathLike, table: str, exchange: str, pair: str, lo: int, hi: int,
         columns: list[str] | None = None, dictionary: tuple[str, ...] = ()) -> Read:
    """Rows whose time column is in [lo, hi), sorted by order_by, duplicate keys dropped; files wholly
    inside the window (by statistics) skip the row filter; `dictionary` columns stay dictionary-encoded."""
    t = TABLES[table]
    cols = [c for c in t.columns if columns is None or c in columns]
    schema = pa.schema([t.schema.field(c) if c not in dictionary else
                        t.schema.field(c).with_type(pa.dictionary(pa.int32(), t.schema.field(c).type))
                        for c in cols])
    parts = []
    for ns in range(lo - lo % DAY_NS, hi, DAY_NS):
        for f in data_files(partition_dir(root, table, exchange, pair, date_of(ns)), t):
            pf = pq.ParquetFile(f, read_dictionary=[c for c in dictionary if c in cols])
            span = _span(pf.metadata, t.time_column)
            if span is not None and (span[1] < lo or span[0] >= hi):
                continue
            tab = pf.read(columns=cols)
            if span is None or span[0] < lo or span[1] >= hi:
                ts = tab.column(t.time_column).cast(pa.int64()).to_numpy()
                tab = tab.filter(pa.array((ts >= lo) & (ts < hi)))
            parts.append(tab.cast(schema))
    if not parts:
        return Read(schema.empty_table(), 0)
    return order(pa.concat_tables(parts), t.order_by)


def order(tab: pa.Table, keys: tuple[str, ...]) -> Read:
    """Sort by keys (stable, skipped when already sorted) and drop rows whose keys repeat."""
    if tab.num_rows == 0:
        return Read(tab, 0)
    cols = [tab.column(k).to_numpy() for k in keys]
    if len(cols) == 1:
        k = cols[0]
        if not np.all(k[1:] > k[:-1]):
            idx = np.argsort(k, kind="stable")
            tab, cols = tab.take(idx), [k[idx]]
    else:
        idx = np.lexsort(cols[::-1])
        if not np.all(idx == np.arange(len(idx))):
            tab, cols = tab.take(idx), [c[idx] for c in cols]
    same = np.ones(tab.num_rows - 1, bool)
    for c in cols:
        same &= c[1:] == c[:-1]
    if not same.any():
        return Read(tab, 0)
    keep = np.concatenate(([True], ~same))
    return Read(tab.filter(pa.array(keep)), int(same.sum()))


#: book_events columns replay uses.
EVENT_COLUMNS = ["ts_event", "ts_recv", "seq", "msg_seq", "action", "side", "order_id", "price", "amount"]


def hour_events(root, exchange: str, pair: str, hour: int, columns: list[str] | None = EVENT_COLUMNS) -> Read:
    """book_events of one hour in seq order (action and side dictionary-encoded)."""
    return read(root, "book_events", exchange, pair, hour, hour + HOUR_NS, columns, ("action", "side"))


def hour_levels(root, exchange: str, pair: str, hour: int) -> Read:
    """book_levels of one hour in (seq, side, level) order."""
    return read(root, "book_levels", exchange, pair, hour, hour + HOUR_NS)


def gap_sessions(root, exchange: str, pair: str, lo: int, hi: int) -> pa.Table:
    """sessions rows of a gap kind on a book stream for the pair (and venue-wide rows), ts in [lo, hi), seq order."""
    parts = [read(root, "sessions", exchange, p, lo, hi).table for p in (pair, ALL_PAIRS)]
    tab = pa.concat_tables(parts)
    kinds = np.isin(tab.column("kind").to_numpy(zero_copy_only=False), GAP_KINDS)
    book = [not NOT_BOOK_STREAM.search(s) for s in tab.column("stream").to_pylist()]
    return order(tab.filter(pa.array(kinds & np.array(book, bool))), ("seq",)).table
