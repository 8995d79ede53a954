"""Replay outputs: `bbo` and `depth` files (one per partition-hour, atomic, deterministic) and the hour runner."""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from replay import book as B
from replay.source import date_of, partition_dir
from schemas import TABLES

#: Fixed writer options (same table, same bytes): LZ4, delta-encoded integer/time columns, statistics.
WRITE_OPTIONS = dict(compression="lz4", use_dictionary=False, write_statistics=True, row_group_size=1 << 20,
                     data_page_size=1 << 20, version="2.6")


def _encodings(schema: pa.Schema) -> dict[str, str]:
    """DELTA_BINARY_PACKED for the int64 and timestamp columns of a table (seq and clocks grow slowly)."""
    return {f.name: "DELTA_BINARY_PACKED" for f in schema
            if pa.types.is_int64(f.type) or pa.types.is_timestamp(f.type)}


def hour_path(root, table: str, exchange: str, pair: str, hour: int, prefix: str = "replay") -> Path:
    """The one output file of a table for a partition-hour."""
    name = f"{prefix}-{date_of(hour)}T{hour // 3_600_000_000_000 % 24:02d}.parquet"
    return partition_dir(root, table, exchange, pair, date_of(hour)) / name


def write_hour(root, table: str, exchange: str, pair: str, hour: int, tab: pa.Table, prefix: str = "replay") -> Path:
    """Write a partition-hour's file under a dot-prefixed temp name, fsync, and rename over the old one."""
    path = hour_path(root, table, exchange, pair, hour, prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        schema = TABLES[table].schema
        pq.write_table(tab.cast(schema), f, column_encoding=_encodings(schema), **WRITE_OPTIONS)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def hour_job(root: str, exchange: str, pair: str, hour: int, book_kind: str, bbo: bool, depth: B.Depth | None,
             verify: bool, write: bool) -> B.HourResult:
    """Replay one hour, write its outputs when asked, and return the result without the bulky parts."""
    res = B.replay_hour(root, exchange, pair, hour, bbo=bbo, depth=depth, verify=verify, book_kind=book_kind)
    if write:
        if res.bbo is not None:
            write_hour(root, "bbo", exchange, pair, hour, res.bbo)
        if res.depth is not None:
            write_hour(root, "depth", exchange, pair, hour, res.depth)
        return replace(res, bbo=None, depth=None, book=None)
    return res


def run_hours(root: str, exchange: str, pair: str, hours: Iterable[int], *, jobs: int = 1, bbo: bool = False,
              depth: B.Depth | None = None, verify: bool = False, write: bool = True,
              progress: Callable[[int, int], None] | None = None) -> list[B.HourResult]:
    """Replay hours independently (in `jobs` worker processes when > 1); results in hour order."""
    hours = list(hours)
    kind = B.kind(root, exchange, pair)
    args = [(str(root), exchange, pair, h, kind, bbo, depth, verify, write) for h in hours]
    done: list[B.HourResult] = []
    if jobs <= 1:
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
