"""Retention: drop whole date partitions older than an age, on a local root or an s3:// bucket.

Never the current UTC day (nor any later one), so a running recorder never loses a partition it writes.
Local roots: under the compaction lock (no merge runs meanwhile) each old partition directory is renamed
out of the table tree into `<root>/_trash/` in one atomic step, so a new query sees the whole partition or
none of it, and removed only after a grace period, so a query that already opened its files reads them to
the end. Buckets have no rename: the partition's objects are deleted, and a listing made meanwhile may see
part of it (docs/scale.md).
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from schemas import TABLES, storage

from . import compact
from .fsutil import fsync_dir, makedirs

_AGE = re.compile(r"^(\d+)([dh])$")
TRASH = "_trash"
#: Seconds a pruned partition stays in the trash for readers that had already opened its files.
GRACE = 600.0


class PruneError(ValueError):
    """Bad arguments (age, table)."""


def parse_age(text: str) -> dt.timedelta:
    """`30d` or `12h`."""
    m = _AGE.match(text.strip())
    if not m:
        raise PruneError(f"--older-than {text!r}: use days or hours, like 30d or 36h")
    n = int(m.group(1))
    return dt.timedelta(days=n) if m.group(2) == "d" else dt.timedelta(hours=n)


def cutoff(age: dt.timedelta, now: dt.datetime | None = None) -> str:
    """Dates before this one (YYYY-MM-DD) ended more than `age` ago; never later than today (UTC)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return min(now.date(), (now - age).date()).isoformat()


@dataclass(frozen=True)
class Partition:
    table: str
    rel: str  # <table>/exchange=<x>/pair=<P>/date=<D>
    date: str


def _tables(tables: list[str] | None) -> list[str]:
    for t in tables or ():
        if t not in TABLES:
            raise PruneError(f"--table {t!r}: tables are {', '.join(TABLES)}")
    return list(tables or TABLES)


def old_partitions(root, tables: list[str] | None, before: str, fs=None) -> list[Partition]:
    """Partitions of the tables whose date is before `before`."""
    out = []
    for t in _tables(tables):
        if fs is None:
            dirs = [p.relative_to(root).as_posix() for p in Path(root).glob(f"{t}/exchange=*/pair=*/date=*")
                    if p.is_dir()]
        else:
            base = storage.key(str(root))
            dirs = [p[len(base) + 1:] for p in fs.glob(storage.key(str(root), t, "exchange=*/pair=*/date=*"))]
        for rel in sorted(dirs):
            date = rel.rsplit("date=", 1)[1]
            if date < before:
                out.append(Partition(t, rel, date))
    return out


def prune(root, age: dt.timedelta, tables: list[str] | None = None, *, dry_run: bool = False,
          now: dt.datetime | None = None, grace: float = GRACE) -> list[Partition]:
    """Drop the partitions older than age (see the module docstring); returns them."""
    before = cutoff(age, now)
    if storage.is_remote(root):
        fs = storage.filesystem()
        parts = old_partitions(root, tables, before, fs)
        for p in parts if not dry_run else ():
            fs.rm(storage.key(str(root), p.rel), recursive=True)
        return parts
    root = Path(root)
    parts = old_partitions(root, tables, before)
    if dry_run:
        return parts
    stamp = f"{time.time():.6f}-{os.getpid()}"
    for p in parts:
        src = root / p.rel
        dst = root / TRASH / stamp / p.rel
        makedirs(dst.parent)
        with compact.compaction_lock(root):
            if src.is_dir():
                os.rename(src, dst)
                fsync_dir(src.parent)
    empty_trash(root, grace)
    return parts


def empty_trash(root: Path, grace: float = GRACE) -> None:
    """Remove what earlier prunes moved to the trash more than `grace` seconds ago."""
    trash = Path(root) / TRASH
    if not trash.is_dir():
        return
    for d in trash.iterdir():
        try:
            when = float(d.name.split("-", 1)[0])
        except ValueError:
            continue
        if time.time() - when >= grace:
            shutil.rmtree(d, ignore_errors=True)
