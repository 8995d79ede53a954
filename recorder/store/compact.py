"""Compaction: merge the finished files of one table/partition/hour into one, crash-safely.

Protocol, under the root-wide lock `<root>/_state/compact.lock`:
  1. intent record `<root>/_state/compact/<id>.json` (inputs, output) written atomically;
  2. output written to a dot temp name, fsynced, renamed, directory fsynced;
  3. inputs deleted, directory fsynced; 4. intent deleted.
Recovery (same lock) rolls forward when the output exists (deletes leftover inputs) and back otherwise
(deletes the temp). Between 2 and 3 a reader listing the directory can see inputs and output together,
i.e. that hour's rows twice, for the few milliseconds the unlinks take; it never sees missing rows.
Only final files are merged: a segment file whose log segment still exists may be rewritten by recovery.

Memory is bounded whatever the hour's size: inputs are read in batches of about READ_BYTES of Arrow data
(iter_batches over a buffered stream, never a whole file or row group), overlapping inputs are merged by a
streaming k-way merge, and the output is written one row group at a time (<= ROW_GROUP rows / about
ROW_GROUP_BYTES of Arrow data). Same inputs give the same bytes. Measured peak: ~67 MB of Arrow pool for
hours of 0.36-2.9 GB (bench/store.py, "compaction peak memory"); the pool's freed pages are then released.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import TABLES, Table, files

from .fsutil import fsync_dir, makedirs, publish, temp_name, write_atomic
from .log import segment_path
from .memory import release_memory
from .writer import sort_rows, write_options

#: Output row groups hold at most ROW_GROUP rows and are cut once their Arrow data reaches ROW_GROUP_BYTES
#: (raw's payloads): the Parquet writer holds one row group (dictionary pages are buffered until its column
#: chunk closes), so this bounds what writing costs, whatever the hour's size.
ROW_GROUP = 1 << 20
ROW_GROUP_BYTES = 48 << 20
#: Arrow bytes read ahead per step, shared by the inputs being merged (batch size = this / bytes per row).
READ_BYTES = 8 << 20
#: Read buffer per column stream: column chunks are read in pieces, not whole.
STREAM_BUFFER = 1 << 16


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


def _readable(root: Path, table: Table, inputs: list[Path]) -> list[Path]:
    """The inputs a merge can read: an unreadable one (torn, junk) is moved to <root>/_quarantine/ and a
    foreign one (another schema) is left in place, each with one line on stderr; never merged, never lost."""
    good = []
    for p in inputs:
        bad = files.check(p, table)
        if bad is None:
            good.append(p)
        elif bad.kind == "unreadable":
            (src, dst), = files.quarantine(root, [bad])
            print(f"booktape compaction: quarantined {bad.kind} file {src} -> {dst}: {bad.reason}", file=sys.stderr)
        else:
            files.report(bad, root)
    return good


def compact_hour(root: Path, table: Table, directory: Path, hod: int) -> bool:
    """Merge the final files of one partition-hour into one file; True when something was merged."""
    inputs = _readable(root, table, final_files(root, directory, hod)[0])
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
    try:
        _merge(table, inputs, output)
    finally:
        release_memory()  # hand the merge's freed pages back to the OS
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


def _batches(table: Table, path: Path, budget: int):
    """A file's rows as small tables (about `budget` bytes of Arrow data each), with the table's schema.

    iter_batches decodes page by page and the buffered stream reads column chunks in STREAM_BUFFER pieces, so
    memory is bounded by the batch, not by the file's row groups."""
    with pq.ParquetFile(path, buffer_size=STREAM_BUFFER, pre_buffer=False) as pf:
        batch = max(16, min(ROW_GROUP, budget // _arrow_row_bytes(table, pf.metadata)))
        for b in pf.iter_batches(batch_size=batch, use_threads=False):
            if b.num_rows:
                yield pa.Table.from_batches([b], schema=table.schema)


def _arrow_row_bytes(table: Table, md) -> int:
    """Arrow bytes per row once decoded: fixed widths from the schema, variable-width columns from their
    Parquet size (the Parquet sizes of encoded ints/dictionaries are far smaller than their Arrow arrays)."""
    rows = max(1, md.num_rows)
    total = 0
    for j, f in enumerate(table.schema):
        try:
            total += max(1, f.type.bit_width // 8)
        except ValueError:  # variable width: offsets + the column's bytes
            data = sum(md.row_group(i).column(j).total_uncompressed_size for i in range(md.num_row_groups))
            total += 4 + data // rows
    return max(1, total)


def _key(t: pa.Table, keys: tuple, i: int) -> tuple:
    """Sort key of row i, nulls last (as pc.sort_indices orders them)."""
    out = []
    for c in keys:
        v = t.column(c)[i].as_py()
        out.append((v is None, v))
    return tuple(out)


def _count_le(t: pa.Table, keys: tuple, bound: tuple) -> int:
    """How many leading rows of a sorted table have key <= bound."""
    first = t.column(keys[0])
    lo, hi = 0, t.num_rows
    if first.null_count == 0 and not bound[0][0]:
        k = first.to_numpy()
        lo, hi = int(np.searchsorted(k, bound[0][1], "left")), int(np.searchsorted(k, bound[0][1], "right"))
        if len(keys) == 1:
            return hi
    n = lo
    while n < hi and _key(t, keys, n) <= bound:
        n += 1
    return n


def _merged(table: Table, inputs: list[Path]):
    """Streaming k-way merge of sorted inputs, in pieces: each step emits every buffered row with key <= the
    smallest last-buffered key (all rows <= it are then buffered), stably sorted with inputs in list order, so
    the rows come out exactly as a stable sort of all inputs concatenated would order them. Memory: READ_BYTES
    shared by the inputs, plus runs of equal keys that span an input's batches."""
    keys = table.order_by
    its = [_batches(table, p, max(1 << 16, READ_BYTES // len(inputs))) for p in inputs]
    bufs: list[pa.Table | None] = [next(it, None) for it in its]
    done = [b is None for b in bufs]
    while True:
        live = [i for i, b in enumerate(bufs) if b is not None and b.num_rows]
        if not live:
            return
        if len(live) == 1 and all(done[j] for j in range(len(bufs)) if j != live[0]):
            i = live[0]
            yield bufs[i]
            for b in its[i]:
                yield b
            return
        last = {i: _key(bufs[i], keys, bufs[i].num_rows - 1) for i in live}
        bound = min(last.values())
        grown = False
        for i in live:  # an input whose buffer ends on the bound may hold more such rows: read them first
            if last[i] == bound and not done[i]:
                more = next(its[i], None)
                if more is None:
                    done[i] = True
                else:
                    bufs[i] = pa.concat_tables([bufs[i], more])
                grown = True
        if grown:
            continue
        parts = []
        for i in live:
            n = _count_le(bufs[i], keys, bound)
            if n:
                parts.append(bufs[i].slice(0, n))
                bufs[i] = bufs[i].slice(n)
            if not bufs[i].num_rows:
                bufs[i] = next(its[i], None)
                done[i] = bufs[i] is None
        yield sort_rows(table, pa.concat_tables(parts))


class _RowGroups:
    """Cuts a stream of small tables into row groups of <= ROW_GROUP rows / about ROW_GROUP_BYTES."""

    def __init__(self, writer: pq.ParquetWriter):
        self.writer, self.buf, self.rows, self.bytes = writer, [], 0, 0

    def add(self, t: pa.Table) -> None:
        while t.num_rows:
            part, t = t.slice(0, ROW_GROUP - self.rows), t.slice(ROW_GROUP - self.rows)
            self.buf.append(part)
            self.rows += part.num_rows
            self.bytes += part.nbytes
            if self.rows >= ROW_GROUP or self.bytes >= ROW_GROUP_BYTES:
                self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.concat_tables(self.buf), row_group_size=self.rows)
        self.buf, self.rows, self.bytes = [], 0, 0


def _merge(table: Table, inputs: list[Path], output: Path) -> None:
    """Sorted merge of sorted inputs, streamed in bounded pieces: one file after another when the files' key
    ranges do not overlap (the normal case: seq increases), otherwise a streaming k-way merge (_merged)."""
    ranges = [_key_range(table, p) for p in inputs]
    if any(r is None for r in ranges):
        ordered = None
    else:
        order = sorted(range(len(inputs)), key=lambda i: ranges[i])
        disjoint = all(ranges[a][1] < ranges[b][0] for a, b in zip(order, order[1:]))
        ordered = [inputs[i] for i in order] if disjoint else None
    if ordered is None:
        pieces = _merged(table, inputs)
    else:
        pieces = (t for p in ordered for t in _batches(table, p, READ_BYTES))
    opts = write_options(table)
    opts.pop("row_group_size")
    makedirs(output.parent)
    tmp = temp_name(output)
    with pq.ParquetWriter(tmp, table.schema, **opts) as w:
        groups = _RowGroups(w)
        for t in pieces:
            groups.add(t)
        groups.flush()
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


def compact_hours(root: Path, hours: list[tuple[Path, int]] | None = None) -> tuple[int, list[tuple[Path, int]]]:
    """Recover, then merge each closed (directory, hour of day), or every closed hour under the root when
    `hours` is None; the lock is taken per hour. Returns (hours merged, hours still holding non-final files)."""
    root = Path(root)
    with compaction_lock(root):
        recover(root)
    if hours is None:
        hours = [(directory, hod) for _, directory, hod, hour in scan(root) if closed(hour)]
    merged, waiting = 0, []
    for directory, hod in hours:
        with compaction_lock(root):
            merged += compact_hour(root, TABLES[directory.relative_to(root).parts[0]], directory, hod)
            if final_files(root, directory, hod)[1]:
                waiting.append((directory, hod))
    return merged, waiting


def main() -> int:
    """`python -m recorder.store.compact ROOT`: the store's compaction child (exits if its writer dies).

    stdin: JSON `{"hours": [[dir relative to ROOT, hour of day], ...]}` or `{"scan": true}`;
    stdout: JSON `{"merged": n, "waiting": [[dir, hod], ...]}`.
    """
    import threading

    parent = os.getppid()

    def orphaned() -> None:  # the writer died (kill -9): stop now; recovery rolls this merge back or forward
        while os.getppid() == parent:
            time.sleep(0.05)
        os._exit(3)

    threading.Thread(target=orphaned, daemon=True).start()
    root = Path(sys.argv[1])
    req = json.loads(sys.stdin.read())
    hours = None if req.get("scan") else [(root / d, int(h)) for d, h in req["hours"]]
    merged, waiting = compact_hours(root, hours)
    print(json.dumps({"merged": merged, "waiting": [[str(d.relative_to(root)), h] for d, h in waiting]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
