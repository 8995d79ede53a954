"""Replay outputs: `bbo` and `depth` files (one per partition-hour, atomic, deterministic) and the hour runner."""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from replay import book as B
from replay import stream
from replay.source import date_of, partition_dir
from schemas import DEPTH, TABLES

#: Fixed writer options (same table, same bytes): LZ4, delta-encoded integer/time columns, statistics on
#: every column but the decimals (20% of the write time for little pruning value).
WRITER_OPTIONS = dict(compression="lz4", use_dictionary=False, data_page_size=1 << 20, version="2.6")
ROW_GROUP = 1 << 20


def _encodings(schema: pa.Schema) -> dict[str, str]:
    """DELTA_BINARY_PACKED for the int64 and timestamp columns of a table (seq and clocks grow slowly)."""
    return {f.name: "DELTA_BINARY_PACKED" for f in schema
            if pa.types.is_int64(f.type) or pa.types.is_timestamp(f.type)}


def hour_path(root, table: str, exchange: str, pair: str, hour: int, prefix: str = "replay") -> Path:
    """The one output file of a table for a partition-hour."""
    name = f"{prefix}-{date_of(hour)}T{hour // 3_600_000_000_000 % 24:02d}.parquet"
    return partition_dir(root, table, exchange, pair, date_of(hour)) / name


@contextmanager
def hour_writer(root, table: str, exchange: str, pair: str, hour: int, prefix: str = "replay"):
    """A partition-hour's file written in parts under a dot-prefixed temp name, fsynced and renamed over the
    old one on success (removed on failure); yields the function that writes a part."""
    path = hour_path(root, table, exchange, pair, hour, prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    schema = TABLES[table].schema
    try:
        with open(tmp, "wb") as f:
            stats = [c.name for c in schema if not pa.types.is_decimal(c.type)]
            with pq.ParquetWriter(f, schema, column_encoding=_encodings(schema), write_statistics=stats,
                                  **WRITER_OPTIONS) as w:
                yield lambda part: w.write_table(part.cast(schema), row_group_size=ROW_GROUP)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_hour(root, table: str, exchange: str, pair: str, hour: int, tab: pa.Table, prefix: str = "replay") -> Path:
    """Write a partition-hour's file atomically (see hour_writer)."""
    with hour_writer(root, table, exchange, pair, hour, prefix) as write:
        write(tab)
    return hour_path(root, table, exchange, pair, hour, prefix)


def hour_job(root: str, exchange: str, pair: str, hour: int, book_kind: str, bbo: bool, depth: B.Depth | None,
             verify: bool, write: bool, window: int = 2 * 10**9) -> B.HourResult:
    """Replay one hour (L3 streamed whenever replay.stream can plan it, else whole) and write its outputs
    (returned without the bulky parts), or return them with the book when not asked to write."""
    groups = stream.plan(root, exchange, pair, hour) if book_kind == "l3" else None
    if not write:
        if groups is None:
            return B.replay_hour(root, exchange, pair, hour, bbo=bbo, depth=depth, verify=verify,
                                 book_kind=book_kind, window=window)
        return _kept(root, exchange, pair, hour, groups, bbo, depth, verify, window)
    with ExitStack() as stack:
        sink = None if depth is None else stack.enter_context(hour_writer(root, "depth", exchange, pair, hour))
        if groups is not None:  # bounded memory: row group after row group, bbo written as it comes
            write_bbo = _opened_on_use(stack, root, "bbo", exchange, pair, hour) if bbo else None
            res = stream.replay_hour(root, exchange, pair, hour, groups, bbo_sink=write_bbo, depth=depth,
                                     depth_sink=sink, bbo_rows=ROW_GROUP, verify=verify, window=window)
        else:
            res = B.replay_hour(root, exchange, pair, hour, bbo=bbo, depth=depth, verify=verify,
                                book_kind=book_kind, depth_sink=sink, window=window)
    if res.bbo is not None:
        write_hour(root, "bbo", exchange, pair, hour, res.bbo)
    return replace(res, bbo=None, depth=None, book=None)


def _kept(root: str, exchange: str, pair: str, hour: int, groups: list[stream.Group], bbo: bool,
          depth: B.Depth | None, verify: bool, window: int) -> B.HourResult:
    """A streamed hour whose bbo and depth rows are kept in memory, as replay.book.replay_hour returns them."""
    bbo_parts: list[pa.Table] = []
    depth_parts: list[pa.Table] = []
    res = stream.replay_hour(root, exchange, pair, hour, groups, bbo_sink=bbo_parts.append if bbo else None,
                             depth=depth, depth_sink=depth_parts.append, verify=verify, window=window)
    if bbo_parts:
        res.bbo = pa.concat_tables(bbo_parts)
    if depth is not None and depth.levels:
        res.depth = pa.concat_tables(depth_parts) if depth_parts else DEPTH.schema.empty_table()
    return res


def _opened_on_use(stack: ExitStack, root, table: str, exchange: str, pair: str, hour: int) -> Callable:
    """A part writer whose hour_writer opens (on the stack) at the first part: no part, no file."""
    opened: list[Callable] = []

    def write(part: pa.Table) -> None:
        if not opened:
            opened.append(stack.enter_context(hour_writer(root, table, exchange, pair, hour)))
        opened[0](part)
    return write


def run_hours(root: str, exchange: str, pair: str, hours: Iterable[int], *, jobs: int = 1, bbo: bool = False,
              depth: B.Depth | None = None, verify: bool = False, write: bool = True, window: int = 2 * 10**9,
              progress: Callable[[int, int], None] | None = None, scheduler: str | None = None) -> list[B.HourResult]:
    """Replay hours independently (in `jobs` worker processes when > 1, or one Dask task each on `scheduler`,
    see replay.cluster); results in hour order."""
    hours = list(hours)
    kind = B.kind(root, exchange, pair)
    args = [(str(root), exchange, pair, h, kind, bbo, depth if depth is None else replace(depth, final=h == hours[-1]),
             verify, write, window) for h in hours]
    done: list[B.HourResult] = []
    if scheduler:
        from replay import cluster

        done = cluster.run(hour_job, args, scheduler, label=f"{exchange}-{pair}", progress=progress)
    elif jobs <= 1:
        for a in args:
            done.append(hour_job(*a))
            if progress:
                progress(len(done), len(args))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as ex:
            for fut in as_completed([ex.submit(hour_job, *a) for a in args]):
                done.append(fut.result())
                if progress:
                    progress(len(done), len(args))
    return sorted(done, key=lambda r: r.hour)


class Progress:
    """A one-line progress bar on stderr, drawn only when enabled."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.t0 = label, enabled, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        fill = width * done // max(total, 1)
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} hours "
                         f"{time.monotonic() - self.t0:.1f}s")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
