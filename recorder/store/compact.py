"""Compaction: merge the finished files of one table/partition/hour into one, crash-safely.

Protocol, under the root-wide lock `<root>/_state/compact.lock`:
  1. intent record `<root>/_state/compact/<id>.json` (inputs, output) written atomically;
  2. output written to a dot temp name, fsynced, renamed, directory fsynced;
  3. inputs deleted, directory fsynced; 4. intent deleted.
Recovery (same lock) rolls forward when the output exists (deletes leftover inputs) and back otherwise
(deletes the temp). Between 2 and 3 a reader listing the directory can see inputs and output together,
i.e. that hour's rows twice, for the few milliseconds the unlinks take; it never sees missing rows.
Only final files are merged: a segment file whose log segment still exists may be rewritten by recovery.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import TABLES, Table

from .fsutil import fsync_dir, makedirs, publish, temp_name, write_atomic
from .log import segment_path
from .writer import sort_rows, write_file, write_options

ROW_GROUP = 1 << 20


@contextmanager
def compaction_lock(root: Path):
    """Exclusive root-wide lock: one compaction (or intent recovery) at a time across processes."""
    makedirs(root / "_state")
    fd = os.open(root / "_state" / "compact.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _intent_dir(root: Path) -> Path:
    return root / "_state" / "compact"


def recover(root: Path) -> None:
    """Finish or roll back compactions a crash interrupted (call with the compaction lock held)."""
    idir = _intent_dir(root)
    if not idir.is_dir():
        return
    for stale in idir.glob(".*.tmp"):  # an intent record that was never published
        stale.unlink()
    for intent in sorted(idir.glob("*.json")):
        rec = json.loads(intent.read_text())
        directory = root / rec["dir"]
        output = directory / rec["output"]
        if output.exists():
            for name in rec["inputs"]:
                (directory / name).unlink(missing_ok=True)
        else:
            temp_name(output).unlink(missing_ok=True)
        fsync_dir(directory)
        intent.unlink()
        fsync_dir(idir)


def final_files(root: Path, directory: Path, hod: int) -> tuple[list[Path], int]:
    """Files of an hour that no recovery will rewrite, and how many are not final yet."""
    final, waiting = [], 0
    for p in sorted(directory.glob(f"h{hod:02d}-*.parquet")):
        parts = p.stem.split("-")
        if len(parts) == 3 and segment_path(root / "_log" / parts[1], int(parts[2])).exists():
            waiting += 1
        else:
            final.append(p)
    return final, waiting


def compact_hour(root: Path, table: Table, directory: Path, hod: int) -> bool:
    """Merge the final files of one partition-hour into one file; True when something was merged."""
    inputs, _ = final_files(root, directory, hod)
    if len(inputs) < 2:
        return False
    names = [p.name for p in inputs]
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
    output = directory / f"h{hod:02d}-{digest}.parquet"
    makedirs(_intent_dir(root))
    rel = str(directory.relative_to(root))
    intent = _intent_dir(root) / (hashlib.sha1(f"{rel}/{output.name}".encode()).hexdigest()[:20] + ".json")
    write_atomic(intent, json.dumps({"dir": rel, "inputs": names,
                                     "output": output.name}).encode())
    _merge(table, inputs, output)
    for p in inputs:
        p.unlink()
    fsync_dir(directory)
    intent.unlink()
    fsync_dir(_intent_dir(root))
    return True


def _key_range(table: Table, path: Path) -> tuple:
    """(min, max) of the first sort column, from the footer statistics."""
    md = pq.ParquetFile(path).metadata
    idx = table.schema.get_field_index(table.order_by[0])
    stats = [md.row_group(i).column(idx).statistics for i in range(md.num_row_groups)]
    if not stats or any(s is None or not s.has_min_max for s in stats):
        return None
    return min(s.min for s in stats), max(s.max for s in stats)


def _row_groups(table: Table, path: Path):
    """A file's rows, one row group at a time, with the table's exact schema."""
    pf = pq.ParquetFile(path)
    for i in range(pf.num_row_groups):
        yield pa.Table.from_batches(pf.read_row_group(i).to_batches(), schema=table.schema)


def _read(table: Table, path: Path) -> pa.Table:
    return pa.concat_tables(list(_row_groups(table, path)))


def _merge(table: Table, inputs: list[Path], output: Path) -> None:
    """Sorted merge of sorted inputs: streamed row group by row group when the files' key ranges do not
    overlap (the normal case: seq increases), otherwise all read and sorted in memory."""
    ranges = [_key_range(table, p) for p in inputs]
    if any(r is None for r in ranges):
        ordered = None
    else:
        order = sorted(range(len(inputs)), key=lambda i: ranges[i])
        disjoint = all(ranges[a][1] < ranges[b][0] for a, b in zip(order, order[1:]))
        ordered = [inputs[i] for i in order] if disjoint else None
    if ordered is None:
        write_file(output, table, sort_rows(table, pa.concat_tables([_read(table, p) for p in inputs])))
        return
    opts = write_options(table)
    opts.pop("row_group_size")
    tmp = temp_name(output)
    buf: list[pa.Table] = []
    with pq.ParquetWriter(tmp, table.schema, **opts) as w:
        for group in (g for p in ordered for g in _row_groups(table, p)):
            buf.append(group)
            while sum(t.num_rows for t in buf) >= ROW_GROUP:
                data = pa.concat_tables(buf)
                w.write_table(data.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
                buf = [data.slice(ROW_GROUP)]
        if buf and sum(t.num_rows for t in buf):
            w.write_table(pa.concat_tables(buf), row_group_size=ROW_GROUP)
    publish(tmp, output)


def closed(hour: int, now: float | None = None) -> bool:
    """An absolute hour number is closed once the wall clock has passed its end."""
    return (hour + 1) * 3600 <= (time.time() if now is None else now)


def scan(root: Path):
    """Every (table, directory, hour of day, absolute hour) that has files, for a full compaction."""
    for name, table in TABLES.items():
        for directory in sorted((root / name).glob("exchange=*/pair=*/date=*")):
            day = dt.date.fromisoformat(directory.name[len("date="):])
            base = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()) // 3600
            hods = {int(p.name[1:3]) for p in directory.glob("h??-*.parquet")}
            for hod in sorted(hods):
                yield table, directory, hod, base + hod
